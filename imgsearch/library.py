"""The public API: one `Library` object does everything the command line does.

from imgsearch import Library
lib = Library("~/.local/share/imgsearch")
lib.index(["~/Photos"])
for match in lib.search("a red apple on a table", top=5):
    print(match.score, match.path)

A Library is a facade over three parts with one job each: a Writer (imgsearch.index.writer: the write
lock, index and watch runs), a Reader (imgsearch.search.reader: queries, status, labels, duplicates) and
the ModelRuntime they share (imgsearch.model.runtime: how every vector is made). The catalog they read and
write is a SQLite file in the home, or a PostgreSQL database several machines share (`db`, see
imgsearch.store.database); the home then keeps this machine's FAISS file for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .home import default_home
from .model.runtime import ModelRuntime
from .model.specs import DEFAULT_MODEL, ModelSpec, model_for, parse_model_spec
from .search.duplicates import DEFAULT_THRESHOLD, DuplicateGroup
from .search.mounts import Mounts
from .search.query import Filters, Term
from .search.reader import Reader, RootStatus, Status
from .store.catalog import Catalog
from .store.database import Database

if TYPE_CHECKING:  # the indexer (multiprocessing, Pillow) and the write lock are for writers only
    from .index.events import IndexEvents
    from .index.imports import ImportReport
    from .index.indexer import IndexReport
    from .index.reindex import ReindexReport
    from .index.writer import Writer
    from .model.encoder import Encoder
    from .search.classify import Classification
    from .search.evaluate import EvalReport
    from .search.match import Match
    from .store.parquet import ExportReport
    from .store.transfer import CopyReport

__all__ = ["Library", "RootStatus", "Status"]


class Library:
    """An image index in one folder (`home`): index folders into it, search it by text or by image.

    `model` is a model spec (see imgsearch.model.specs); None means the model the index was built with, or
    the default for a new index. `device` and `precision` choose how indexing embeds images (see
    imgsearch.model.numerics; queries are always fp32). The encoder is loaded on first need and kept, so a
    long-lived Library answers later queries without loading it again; `encoder` hands it one already
    loaded.

    `db` (default $IMGSEARCH_DB) is a PostgreSQL URL (postgresql://USER@HOST/DBNAME) or sqlite:///FILE; None
    means `home`/index.db. `path_map` (default $IMGSEARCH_PATH_MAP) lists STORED=LOCAL folder pairs: where
    this machine mounts the folders the catalog names (see imgsearch.search.mounts); paths given to and
    returned by the reading calls are this machine's. `lang` is an NLLB language code (eng_Latn,
    jpn_Jpan, ...) for every text embedded; None reads it from each text's script (imgsearch.model.languages).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        model: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        workers: int | None = None,
        encoder: Encoder | None = None,
        db: str | None = None,
        path_map: Sequence[str] | None = None,
        lang: str | None = None,
    ):
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.database = Database.parse(db or os.environ.get("IMGSEARCH_DB"), self.home)
        mapped = os.environ.get("IMGSEARCH_PATH_MAP")
        self.mounts = Mounts.parse(path_map) if path_map is not None else Mounts.from_env(mapped)
        model = model or os.environ.get("IMGSEARCH_MODEL")
        self.requested_model = parse_model_spec(model) if model else None
        self.device = device
        self.precision = precision
        self.workers = workers
        self.runtime = ModelRuntime(self.home, device, precision, encoder, lang=lang)
        self.reader = Reader(self.home, self.database, self.runtime, self.requested_model, self.mounts)
        self._writer: Writer | None = None

    def has_index(self) -> bool:
        """Whether there is a catalog to read (it may still hold no images)."""
        if self.database.file is not None:
            return self.database.file.exists()
        from .errors import IndexNotFound

        try:
            self.shared_catalog()
        except IndexNotFound:
            return False
        return True

    def shared_catalog(self) -> Catalog:
        """One catalog kept open for this Library's life, for callers that read rows often (a server);
        safe across threads, each read a fresh snapshot. Never close it."""
        return self.reader.kept_catalog()

    def local_path(self, stored: bytes) -> bytes:
        """Where a path the catalog stores is on this machine (see `path_map`)."""
        return self.mounts.to_local(stored)

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            from .index.writer import Writer

            self._writer = Writer(self.home, self.database, self.runtime, self.requested_model, self.workers)
        return self._writer

    # -- writing --------------------------------------------------------------------------------------------
    def index(
        self,
        folders: Sequence[str | os.PathLike[str]] = (),
        events: IndexEvents | None = None,
        ray: str | None = None,
    ) -> IndexReport:
        """Add folders to the index and bring it up to date; no folders means every folder indexed before.
        `ray` ("local", "auto" or HOST:PORT) embeds new content on a Ray cluster (see
        imgsearch.index.writer.Writer.index)."""
        return self.writer.index(folders, events, ray)

    def watch(
        self,
        folders: Sequence[str | os.PathLike[str]] = (),
        events: IndexEvents | None = None,
        *,
        settle: float = 1.0,
        rescan_interval: float = 3600.0,
        poll: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Index folders, then keep the index in step with them until `stop` is set (or KeyboardInterrupt);
        see imgsearch.index.writer.Writer.watch."""
        self.writer.watch(
            folders, events, settle=settle, rescan_interval=rescan_interval, poll=poll, stop=stop
        )

    def import_embeddings(
        self,
        dataset: str | os.PathLike[str],
        folders: Sequence[str | os.PathLike[str]] = (),
        model: str | None = None,
        events: IndexEvents | None = None,
    ) -> ImportReport:
        """Take vectors made elsewhere (an export, clip-retrieval's output, a Spark job's Parquet) for the
        files under `folders` (none: every folder indexed before), matched by content hash or path, without
        re-encoding; `model` (default: the Library's) names the model that made them where the dataset does
        not say. See imgsearch.index.writer.Writer.import_embeddings."""
        spec = parse_model_spec(model) if model else None
        return self.writer.import_embeddings(dataset, folders, spec, events)

    def reindex(self, model: str, events: IndexEvents | None = None, ray: str | None = None) -> ReindexReport:
        """Change the index's model: re-encode every indexed image with `model` into the same catalog, then
        switch to it in one transaction; queries answer with the old model until then. Interrupted, it
        resumes when run again with the same model (another model starts over); to the model the index
        already has, it re-encodes nothing (and calls off an unfinished reindex to another). Images that
        cannot be re-encoded leave the index (see imgsearch.index.reindex). `ray` as for `index`."""
        spec = parse_model_spec(model)
        report = self.writer.reindex(spec, events, ray)
        if self.requested_model is not None:  # this Library asked for the old model: it goes on with the new
            self.requested_model = self.reader.requested_model = self.writer.requested_model = spec
        return report

    # -- reading --------------------------------------------------------------------------------------------
    def search(self, text: str, top: int = 10, under: str | os.PathLike[str] | None = None) -> list[Match]:
        """Images that match a description, best first."""
        return self.query([Term.text(text)], top, _in_folder(under))

    def similar(
        self, image: str | os.PathLike[str], top: int = 10, under: str | os.PathLike[str] | None = None
    ) -> list[Match]:
        """Images that look like `image` (an indexed file or any other image), never `image` itself.

        An indexed, unchanged file reuses its stored vector and a copy of an indexed file reuses the
        original's, so neither loads the model.
        """
        return self.query([Term.image(os.fspath(image))], top, _in_folder(under))

    def query(
        self,
        terms: Sequence[Term],
        top: int = 10,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> list[Match]:
        """The general query (see imgsearch.search.reader.Reader.query)."""
        return self.reader.query(terms, top, filters, min_score, sort)

    def status(self) -> Status:
        """What is indexed, with which model and numerics, and where; never loads the model."""
        return self.reader.status()

    def failures(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(path, reason) of files that could not be indexed."""
        return self.reader.failures(limit)

    def export_embeddings(self, out: str | os.PathLike[str]) -> ExportReport:
        """Write every vector with its path and metadata as a Parquet dataset in the folder `out`, for
        pyarrow, pandas, DuckDB or Spark, or for `import_embeddings` (see imgsearch.store.parquet)."""
        return self.reader.export(out)

    def classify(
        self,
        labels: Sequence[str],
        under: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        min_prob: float = 0.0,
    ) -> list[Classification]:
        """Each image's most probable label among `labels` (see imgsearch.search.reader.Reader.classify)."""
        return self.reader.classify(labels, under, temperature, min_prob)

    def evaluate(
        self,
        captions: str | os.PathLike[str],
        models: Sequence[str] = (),
        labels: Sequence[str] | None = None,
    ) -> EvalReport:
        """Measure models on a file pairing photos with captions (and labels): Recall@1/5/10 and median rank
        both ways, zero-shot accuracy. `models` are model specs, each encoding the photos in memory, or
        "index" (the default) for the index's own model and vectors; see imgsearch.search.evaluate."""
        from .search.evaluate import evaluate

        lang = self.runtime.lang
        return evaluate(captions, self.reader, models, labels, self.device, self.precision, lang)

    def ids_with_label(
        self,
        wanted: str | Sequence[str],
        labels: Sequence[str],
        under: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        min_prob: float = 0.0,
    ) -> np.ndarray:
        """Sorted ids of the images whose best zero-shot label is one of `wanted` (see
        imgsearch.search.reader.Reader.ids_with_label)."""
        return self.reader.ids_with_label(wanted, labels, under, temperature, min_prob)

    def duplicates(
        self,
        under: str | os.PathLike[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        exact_only: bool = False,
    ) -> list[DuplicateGroup]:
        """Groups of exact and near copies, largest first (see imgsearch.search.duplicates), or with
        `exact_only` the sets of byte-identical files alone (no vectors compared); stored vectors and
        content hashes only: the model is never loaded."""
        return self.reader.duplicates(under, threshold, exact_only)

    def copy_database(self, to: str) -> CopyReport:
        """Copy every row and vector of this library's catalog into another database (a PostgreSQL URL,
        sqlite:///FILE, or a folder to hold index.db), re-encoding nothing, and check the copy equal; see
        imgsearch.store.transfer."""
        from .store.transfer import copy_catalog

        if self.requested_model is not None:
            self.model_spec()  # a copy asked for another model than the index's is refused, naming reindex
        return copy_catalog(self.database, Database.parse(to, self.home), self.home)

    # -- model ----------------------------------------------------------------------------------------------
    def model_spec(self) -> ModelSpec:
        """The model this library uses: the index's own (another request is refused), else the requested one,
        else the default."""
        if not self.has_index():
            return self.requested_model or parse_model_spec(DEFAULT_MODEL)
        catalog = Catalog.open(self.database)
        try:
            return model_for(catalog.model(), self.requested_model, self.home)[0]
        finally:
            catalog.close()

    def language_hint(self, texts: Sequence[str]) -> str | None:
        """A one-line hint when a text is in a script the library's English-only model was not trained on
        (the query still runs, unchanged); None otherwise, or when IMGSEARCH_HINTS=0."""
        from .model.families import MULTILINGUAL_SUGGESTION, multilingual
        from .model.languages import script, shown_script

        if os.environ.get("IMGSEARCH_HINTS", "1").lower() in ("0", "no", "off", "false"):
            return None
        found = next((s for s in map(script, texts) if s is not None), None)
        if found is None:
            return None
        spec = self.model_spec()
        if multilingual(spec):
            return None
        return (
            f"hint: {spec.id} was trained on English text, so {shown_script(found)} text matches poorly; a "
            f"multilingual model reads it (--model {MULTILINGUAL_SUGGESTION} for a new index, or `imgsearch "
            "reindex --model ...`). IMGSEARCH_HINTS=0 hides this."
        )

    def encoder(self, spec: ModelSpec | None = None) -> Encoder:
        """The loaded index encoder (default: `model_spec()`), loaded once and kept."""
        return self.runtime.encoder(spec or self.model_spec())

    def warm_up(self) -> None:
        """Load now what queries need, set up for many of them (a server): see ModelRuntime.warm_up."""
        self.runtime.warm = True  # also when this fails (no index yet): later queries still find it set
        self.runtime.warm_up(self.model_spec())


def _in_folder(under: str | os.PathLike[str] | None) -> Filters | None:
    return Filters(under=os.fspath(under)) if under is not None else None
