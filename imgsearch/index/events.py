"""What a long-running library call tells its caller as it goes (a leaf: the CLI imports it cheaply)."""

from __future__ import annotations


class IndexEvents:
    """Callbacks of an index run; the defaults say nothing, because the library never prints."""

    def phase(self, name: str, total: int) -> None:
        """A phase ('hashing', 'encoding') starts with `total` files to go."""

    def loading_model(self, model_id: str) -> None:
        """The model is being loaded (seconds, the first time in a process)."""

    def preparing(self, what: str) -> None:
        """A one-time step that takes seconds has started (e.g. making the fast text-query encoder)."""

    def advance(self, n: int = 1) -> None:
        """`n` more files of the current phase are done."""

    def failed(self, path: bytes, reason: str) -> None:
        """A file was skipped; it is recorded and not retried until it changes."""
