"""One small family of errors: the library raises these, the CLI turns them into one clear line."""

from __future__ import annotations


class ImgsearchError(Exception):
    """Base of every error imgsearch raises on purpose; its message is meant for a person."""


class UsageError(ImgsearchError):
    """The caller asked for something that cannot make sense (the CLI exits 2)."""


class ModelUnavailable(ImgsearchError):
    """The model's weights cannot be found or fetched."""


class ModelIncompatible(ImgsearchError):
    """open_clip (or a library below it) failed in its own code: most likely a version imgsearch is not
    tested with."""


class MissingPackage(ImgsearchError):
    """A model family needs an optional Python package that is not installed; the message names it."""


class ModelMismatch(ImgsearchError):
    """An index built with one model was asked to work with another."""


class IndexNotFound(ImgsearchError):
    """There is no index yet where one was expected."""


class IndexBusy(ImgsearchError):
    """Another process holds the index's write lock."""


class SchemaTooNew(ImgsearchError):
    """The index was written by a newer imgsearch than this one."""


class IndexReadOnly(ImgsearchError):
    """The index folder cannot be written."""


class IndexWriteError(ImgsearchError):
    """The index could not be written (a full disk, an I/O error); what was committed before is kept."""


class DecodeError(ImgsearchError):
    """One file could not be read as an image; the reason is the message."""


class ClusterUnavailable(ImgsearchError):
    """The Ray cluster cannot be reached, lost mid-run, or cannot see the files."""


class DatasetError(ImgsearchError):
    """An embeddings dataset (Parquet) cannot be read, written, or used with this index."""


class DatabaseUnavailable(ImgsearchError):
    """The database server cannot be reached, or the connection to it was lost; what was committed is kept."""


class DatabaseRefused(ImgsearchError):
    """The database server refused: a wrong password, a database that does not exist, no permission."""


class CopyMismatch(ImgsearchError):
    """A catalog copied to another database does not hold what the source holds; it is not kept."""
