"""imgsearch beside rclip 3.3.0, the anchor, in one run: first index, re-index, three new photos into a 10k
index, cold queries and `--help`, each as a new process, as a user runs them.

    python bench/rclip_anchor.py [--runs 3] [--quick] [--work /tmp/imgsearch-rclip-anchor] [--json]

Two tools measured on one machine, with runs alternated, are a comparison that a figure from another machine
is not. rclip is installed from the package registry into its own venv in the work folder; its model files
are made here by our own exporter (open_clip's ViT-B-32-256 with seeded random weights, exported as rclip's
loader reads them: speed does not depend on the weights) and written where rclip looks first, so it never
downloads. Corpora, rclip's venv and its model files are kept in the work folder for the next run; the
imgsearch indexes and the per-user export cache are made anew each run. Delete the work folder to start over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import _rss_kb, _tree, imgsearch_command, make_model, make_photos, synthetic_library

RCLIP = "rclip==3.3.0"
RCLIP_ARCH = "ViT-B-32-256"  # what rclip 3.3.0 ships (its MODEL_SUBDIR names the datacomp weights)
TEXT = "a red apple on a table"
LIBRARY = 10_000
SMALL, LARGE = (1024, 768), (4000, 3000)
SAMPLE_S = 0.02  # memory sampling interval
EXPORTER = "imgsearch.model.exporter"  # in the command line of imgsearch's background exporter
BACKGROUND_TIMEOUT_S = 600
MADE_BY = "made-by.json"  # beside the rclip model files we made: how, so that a later run reuses them

#: What rclip's loader reads, asked of the installed package (rclip/model_download.py, utils/preprocess.py).
RCLIP_LAYOUT = """
import json
from rclip import model_download as m
from rclip.utils import preprocess
print(json.dumps({"subdir": m.MODEL_SUBDIR, "visual": m.VISUAL_ONNX, "textual": m.TEXTUAL_ONNX,
                  "vocab": m.TOKENIZER_VOCAB, "image_size": preprocess.IMAGE_SIZE}))
"""

#: An rclip database of every .jpg under a folder, written through rclip's own db module (in its venv):
#: true size, mtime and rclip's own file hash, random unit vectors (search speed does not depend on them).
RCLIP_FILL = """
import os, sys
import numpy as np
from rclip import db
from rclip.utils.helpers import compute_file_hash
database, rng = db.DB(sys.argv[1]), np.random.default_rng(1)
for folder, _dirs, names in os.walk(sys.argv[2]):
    for name in sorted(n for n in names if n.endswith(".jpg")):
        path = os.path.join(folder, name)
        st = os.stat(path)
        vector = rng.normal(size=512).astype(np.float32)
        vector /= np.linalg.norm(vector)
        row = db.NewImage(filepath=path, modified_at=st.st_mtime, size=st.st_size, vector=vector.tobytes(),
                          hash=compute_file_hash(path))
        database.upsert_image(row, commit=False)
database.close()
"""


@dataclass
class Run:
    """One timed command: wall from spawn to exit, peak RSS summed over its process tree, and the share of
    the CPUs that other processes took meanwhile (a busy machine is visible in the figures)."""

    wall_s: float
    peak_rss_mb: int
    peak_rss_mb_foreground: int  # the same without imgsearch's exporter, a child until the command exits
    others_share: float
    out: str
    background_s: float | None = None  # imgsearch's background exporter, after the command returned


@dataclass
class Corpus:
    folder: Path
    files: int
    distinct: int
    size: tuple[int, int]

    def describe(self) -> str:
        return f"{self.files} JPEGs {self.size[0]}x{self.size[1]}, {self.distinct} distinct"


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_wait: float) -> None:
    """Up to `max_wait` s for a second in which other processes used < 10% of the CPUs: others' work on a
    shared 2-core machine would otherwise land in one tool's figures and not the other's."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait:
        before = _busy_s()
        time.sleep(1.0)
        if (_busy_s() - before) / (os.cpu_count() or 1) < 0.1:
            return


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """Run a command to completion. Its output goes to files, not pipes: a detached child that kept a pipe
    open would otherwise hold us until it exits. Memory: VmRSS summed over the root and all descendants,
    every SAMPLE_S, the largest sum; and the largest sum without the background exporter's process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy, ours = _busy_s(), _children_cpu_s()
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        peak_kb, done = [0, 0], threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_S):
                rss = {pid: _rss_kb(pid) for pid in _tree(process.pid)}
                foreground = sum(kb for pid, kb in rss.items() if not _is_exporter(pid))
                peak_kb[:] = max(peak_kb[0], sum(rss.values())), max(peak_kb[1], foreground)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            process.wait(timeout=3600)
        finally:
            wall = time.perf_counter() - started
            done.set()
            sampler.join()
            if process.returncode is None:
                process.kill()
                process.wait()
        others = (_busy_s() - busy) - (_children_cpu_s() - ours)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode != 0:
        failed = f"{' '.join(command)} failed ({process.returncode})"
        raise RuntimeError(f"{failed}:\n{stdout[-1000:]}{stderr[-2000:]}")
    share = max(0.0, others / (wall * (os.cpu_count() or 1)))
    return Run(wall, peak_kb[0] // 1024, peak_kb[1] // 1024, share, stdout + stderr)


def _is_exporter(pid: int) -> bool:
    """Read each time: a child's command line is its parent's until it calls exec."""
    with contextlib.suppress(OSError):
        return EXPORTER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def our_exporters(work: Path) -> list[int]:
    """imgsearch's background exporters started by this benchmark (their IMGSEARCH_CACHE is in `work`):
    another session's exporter on the same machine is not ours to time."""
    found = subprocess.run(["pgrep", "-f", EXPORTER], capture_output=True, text=True).stdout.split()
    mine = f"IMGSEARCH_CACHE={work}".encode()
    ours = []
    for pid in found:
        with contextlib.suppress(OSError):
            if any(v.startswith(mine) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                ours.append(int(pid))
    return ours


def wait_for_background_export(work: Path) -> float | None:
    """Seconds until imgsearch's background exporter is done, counted from now (the command's return), so
    that it never competes with the next timed run; None, at once, when none is running."""
    started = time.perf_counter()
    if not our_exporters(work):
        return None
    while our_exporters(work):
        if time.perf_counter() - started > BACKGROUND_TIMEOUT_S:
            print(f"background exporter still runs after {BACKGROUND_TIMEOUT_S} s", file=sys.stderr)
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def summary(runs: list[Run]) -> dict:
    walls = [r.wall_s for r in runs]
    result = {
        "walls_s": [round(w, 3) for w in walls],
        "min_s": min(walls),
        "median_s": statistics.median(walls),
        "peak_rss_mb": max(r.peak_rss_mb for r in runs),
        "peak_rss_mb_runs": [r.peak_rss_mb for r in runs],
        "peak_rss_mb_foreground": max(r.peak_rss_mb_foreground for r in runs),
        "others_share_max": round(max(r.others_share for r in runs), 3),
    }
    background = [r.background_s for r in runs]
    if any(b is not None for b in background):
        result["background_export_s"] = [None if b is None else round(b, 1) for b in background]
    return result


def alternate(variants: dict[str, Callable[[], Run]], runs: int) -> dict[str, dict]:
    """`runs` rounds, each running every variant once in turn (imgsearch, rclip, imgsearch, rclip, ...), so
    that whatever else the machine does falls on both tools alike."""
    measured: dict[str, list[Run]] = {name: [] for name in variants}
    for round_number in range(runs):
        for name, once in variants.items():
            print(f"  round {round_number + 1}/{runs}: {name}", file=sys.stderr, flush=True)
            measured[name].append(once())
    return {name: summary(found) for name, found in measured.items()}


def read_all(folder: Path) -> None:
    """Every file once, so that neither tool's first run pays for the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.read_bytes()


@dataclass
class Bench:
    work: Path
    model: str  # imgsearch's local-dir: spec
    rclip: Path  # rclip's console script in its venv
    rclip_models: Path  # a datadir with rclip's model files (and our MADE_BY), no database
    quiet_wait: float
    warm_cache: Path = field(init=False)
    _dirs: int = 0

    def __post_init__(self) -> None:
        self.warm_cache = self.work / "runs" / "cache-warm"

    def fresh(self, name: str) -> Path:
        """A new, empty folder for one run."""
        self._dirs += 1
        folder = self.work / "runs" / f"{self._dirs:03d}-{name}"
        folder.mkdir(parents=True)
        return folder

    def imgsearch(self, args: list[str], home: Path, cache: Path) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSEARCH_")}
        env |= {"IMGSEARCH_HOME": str(home), "IMGSEARCH_MODEL": self.model, "IMGSEARCH_CACHE": str(cache)}
        wait_for_quiet(self.quiet_wait)
        run = timed([*imgsearch_command(), *args], env)
        run.background_s = wait_for_background_export(self.work)
        return run

    def rclip_datadir(self, database: Path | None = None) -> Path:
        """A new RCLIP_DATADIR: links to the model files, and a copy of `database` (none: a new index)."""
        datadir = self.fresh("rclip")
        for entry in self.rclip_models.iterdir():
            if entry.name != MADE_BY:
                (datadir / entry.name).symlink_to(entry)
        if database:
            shutil.copy2(database, datadir / "db.sqlite3")
        return datadir

    def rclip_run(self, args: list[str], datadir: Path, cwd: Path) -> Run:
        """rclip as a user runs it, in the folder to search: its model files are there, so it downloads
        nothing (HF_HUB_OFFLINE=1 only makes sure a missing file fails at once instead)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLIP_")}
        env |= {"RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
        wait_for_quiet(self.quiet_wait)
        return timed([str(self.rclip), *args], env, cwd)


def rclip_rows(datadir: Path) -> int:
    """Images rclip's index holds (not deleted): checks that a run indexed what it was given."""
    with contextlib.closing(sqlite3.connect(datadir / "db.sqlite3")) as db:
        return db.execute("SELECT count(*) FROM images WHERE deleted IS NULL").fetchone()[0]


def check_summary(out: str, new: int | None = None) -> None:
    """imgsearch's summary must not report removals (a library out of step with its files) nor failures."""
    for word in ("removed", "failed"):
        found = re.search(rf"(\d+) {word}", out)
        if found and found.group(1) != "0":
            raise RuntimeError(f"imgsearch index reported {word} files: {out[-500:]}")
    found = re.search(r"(\d+) new", out)
    if new is not None and found and int(found.group(1)) != new:
        raise RuntimeError(f"expected {new} new files: {out[-500:]}")


# --- setup: rclip's venv and model files, the corpora ---------------------------------------------------


def rclip_venv(work: Path) -> tuple[Path, str, dict]:
    """rclip from the package registry in its own venv (kept in the work folder); its console script, its
    version, and the layout of the model files its loader reads."""
    venv = work / "rclip-venv"
    script = venv / "bin" / "rclip"
    if not script.exists():
        print(f"installing {RCLIP} into {venv}", file=sys.stderr, flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", RCLIP], check=True)
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    layout = subprocess.run(
        [str(venv / "bin" / "python"), "-c", RCLIP_LAYOUT], capture_output=True, text=True, check=True
    )
    return script, version.stdout.strip(), json.loads(layout.stdout)


def export_rclip_model(datadir: Path, layout: dict) -> dict:
    """rclip's model files, made by us: open_clip's ViT-B-32-256 with seeded random weights, the image tower
    and `encode_text` as ONNX graphs shaped as rclip's loader feeds them (input "input": float32
    [N,3,256,256] or int64 [N,77]; output "output": [N,512], not normalised; opset 18, batch axis dynamic),
    checked against torch, and open_clip's BPE vocabulary. Kept for the next run; `made-by.json` says so."""
    stamp = datadir / MADE_BY
    if stamp.exists():
        return json.loads(stamp.read_text())
    import logging
    import warnings

    import numpy as np
    import onnxruntime
    import open_clip
    import torch

    started = time.perf_counter()
    model_dir = datadir / layout["subdir"]
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    logging.disable(logging.WARNING)  # "initialized randomly" is the point here
    model = open_clip.create_model(RCLIP_ARCH).eval()
    logging.disable(logging.NOTSET)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    if size != layout["image_size"]:
        raise RuntimeError(f"{RCLIP_ARCH} takes {size} px, rclip feeds {layout['image_size']} px")

    class TextTower(torch.nn.Module):
        def __init__(self, clip: torch.nn.Module):
            super().__init__()
            self.clip = clip

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(tokens)

    image_probe = torch.randn(2, 3, size, size)
    text_probe = torch.zeros(2, 77, dtype=torch.long)
    text_probe[:, :3] = torch.tensor([[49406, 320, 49407], [49406, 539, 49407]])  # <start> word <end>
    towers = {
        layout["visual"]: (model.visual, image_probe),
        layout["textual"]: (TextTower(model), text_probe),
    }
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not trace to plain ONNX ops
    checks = {}
    try:
        for name, (tower, probe) in towers.items():
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation notes
                torch.onnx.export(
                    tower,
                    (probe[:1],),
                    str(model_dir / name),
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    opset_version=18,
                    dynamo=False,
                )
                expected = tower(probe).numpy()
            session = onnxruntime.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])
            (got,) = session.run(None, {"input": probe.numpy()})
            cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
            if cos.min() < 0.9999:
                raise RuntimeError(f"our {name} export differs from torch: cos {cos.min()}")
            checks[name] = round(float(cos.min()), 7)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    vocab = datadir / layout["vocab"]
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(open_clip.__file__).parent / vocab.name, vocab)
    made = {
        "model": f"open_clip {RCLIP_ARCH}, random weights (torch seed 0)",
        "files": [str(p.relative_to(datadir)) for p in sorted(datadir.rglob("*")) if p.is_file()],
        "mb": {p.name: round(p.stat().st_size / 1e6) for p in model_dir.iterdir()},
        "export": "torch.onnx.export, TorchScript exporter, opset 18, dynamic batch axis, MHA fast path off",
        "cos_vs_torch_min": checks,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    stamp.write_text(json.dumps(made))
    return made


def corpus(folder: Path, distinct: int, copies: int, size: tuple[int, int], extras: int = 0) -> Corpus:
    """`distinct` photo-like JPEGs plus `copies` byte-identical copies of them in two subfolders (a backup,
    a phone export); with `extras`, that many more distinct photos beside it in `<folder>-extra`, which
    neither tool has seen. Kept for the next run."""
    stamp = folder / ".made"
    wanted = json.dumps([distinct, copies, size, extras])
    if not (stamp.exists() and stamp.read_text() == wanted):
        print(f"making {folder.name}: {distinct} photos {size[0]}x{size[1]}", file=sys.stderr, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        extra = folder.with_name(folder.name + "-extra")
        shutil.rmtree(extra, ignore_errors=True)
        make_photos(folder / "photos", distinct + extras, *size)  # photo i is seeded by i: all distinct
        photos = sorted((folder / "photos").iterdir())
        if extras:
            extra.mkdir()
        for path in photos[distinct:]:
            path.rename(extra / path.name)
        for k in range(copies):
            target = folder / "copies" / f"set{k % 2}" / photos[k % distinct].name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photos[k % distinct], target)
        stamp.write_text(wanted)
    return Corpus(folder, distinct + copies, distinct, size)


def stub_library(root: Path, real: list[Path], count: int) -> list[Path]:
    """A folder of `count` .jpg files: the `real` photos copied into `root/real`, the rest 2-byte stubs in
    folders of 1,000 (common.synthetic_path). An index that records their size and mtime never opens the
    stubs, so they stand in for photos already indexed. Kept for the next run; returns the real files."""
    from common import synthetic_path

    stamp = root / ".made"
    wanted = json.dumps([[p.name for p in real], count])
    if not (stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(root, ignore_errors=True)
        (root / "real").mkdir(parents=True)
        for path in real:
            shutil.copyfile(path, root / "real" / path.name)
        for number in range(len(real), count):
            path = synthetic_path(root, number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\xff\xd8")
        stamp.write_text(wanted)
    return sorted((root / "real").iterdir())


# --- the rows -------------------------------------------------------------------------------------------


def first_index(bench: Bench, c: Corpus, query: Path, runs: int, keep: dict) -> dict:
    """A new index of the corpus. imgsearch: (a) nothing cached (a new IMGSEARCH_CACHE: a user's first run
    with this model, its exports then made in the background), (b) the per-user cache holding the exports
    (another folder's first index with the same model); rclip: a new database, its ONNX files ready."""
    read_all(c.folder)

    def imgsearch(cold: bool) -> Callable[[], Run]:
        def once() -> Run:
            home = bench.fresh("home")
            cache = bench.fresh("cache-cold") if cold else bench.warm_cache
            run = bench.imgsearch(["index", str(c.folder)], home, cache)
            check_summary(run.out, new=c.files)
            if cold:
                shutil.rmtree(cache)  # hundreds of MB each
            else:
                keep["imgsearch"] = home
            return run

        return once

    def rclip() -> Run:
        datadir = bench.rclip_datadir()
        run = bench.rclip_run(["-t", "1", str(query)], datadir, c.folder)
        if rclip_rows(datadir) != c.files:
            raise RuntimeError(f"rclip indexed {rclip_rows(datadir)} of {c.files} files in {c.folder}")
        keep["rclip"] = datadir
        return run

    return alternate({"imgsearch_cold": imgsearch(True), "rclip": rclip, "imgsearch": imgsearch(False)}, runs)


def reindex(bench: Bench, c: Corpus, query: Path, runs: int, kept: dict) -> dict:
    """The corpus again, unchanged, into the index the first-index row left (after one untimed run each)."""
    home, datadir = kept["imgsearch"], kept["rclip"]

    def imgsearch() -> Run:
        run = bench.imgsearch(["index", str(c.folder)], home, bench.warm_cache)
        check_summary(run.out, new=0)
        return run

    def rclip() -> Run:
        return bench.rclip_run(["-t", "1", str(query)], datadir, c.folder)

    imgsearch(), rclip()
    return alternate({"imgsearch": imgsearch, "rclip": rclip}, runs)


def three_new(bench: Bench, root: Path, homes: dict, new: list[Path], query: Path, runs: int) -> dict:
    """Three new distinct photos into a 10k library: each run starts from a copy of the pristine index
    (imgsearch's made by common.synthetic_library, rclip's by its own db module), copies the photos into
    `root/new` and indexes the folder. The last run's indexes and photos stay, for the query rows."""
    drop = root / "new"

    def add_photos() -> None:
        shutil.rmtree(drop, ignore_errors=True)
        drop.mkdir()
        for path in new:
            shutil.copyfile(path, drop / path.name)

    def imgsearch() -> Run:
        home = bench.fresh("home-10k")
        shutil.copytree(homes["imgsearch_pristine"], home, dirs_exist_ok=True)
        add_photos()
        run = bench.imgsearch(["index", str(root)], home, bench.warm_cache)
        check_summary(run.out, new=len(new))
        homes["imgsearch"] = home
        return run

    def rclip() -> Run:
        datadir = bench.rclip_datadir(homes["rclip_pristine"])
        add_photos()
        run = bench.rclip_run(["-t", "1", str(query)], datadir, root)
        if rclip_rows(datadir) != LIBRARY + len(new):
            raise RuntimeError(f"rclip holds {rclip_rows(datadir)} images, not {LIBRARY + len(new)}")
        homes["rclip"] = datadir
        return run

    imgsearch(), rclip()  # untimed: the stubs' folders into the page cache
    return alternate({"imgsearch": imgsearch, "rclip": rclip}, runs)


def queries(bench: Bench, root: Path, homes: dict, query: Path, runs: int) -> dict[str, dict]:
    """Cold queries on the 10k indexes, each a new process after one untimed run (the page cache)."""
    commands = {
        "text": (["query", TEXT], ["-n", "-t", "10", TEXT]),
        "image": (["similar", str(query)], ["-n", "-t", "10", str(query)]),
        "help": (["--help"], ["--help"]),
    }
    result = {}
    for kind, (ours, theirs) in commands.items():
        print(f"cold query: {kind}", file=sys.stderr, flush=True)
        variants = {
            "imgsearch": lambda ours=ours: bench.imgsearch(ours, homes["imgsearch"], bench.warm_cache),
            "rclip": lambda theirs=theirs: bench.rclip_run(theirs, homes["rclip"], root),
        }
        first = {name: once().wall_s for name, once in variants.items()}
        result[kind] = alternate(variants, runs)
        for name, seconds in first.items():
            result[kind][name]["first_s"] = seconds
    return result


def measure(args: argparse.Namespace) -> dict:
    from imgsearch.model.numerics import describe_cpu
    from imgsearch.model.specs import parse_model_spec

    work: Path = args.work
    started = time.perf_counter()
    shutil.rmtree(work / "runs", ignore_errors=True)  # indexes and caches are made anew each run
    setup_started = time.perf_counter()
    rclip, rclip_version, layout = rclip_venv(work)
    models = work / "rclip-models"
    made = export_rclip_model(models, layout)
    distinct, copies = (16, 8) if args.quick else (102, 58)
    small = corpus(work / f"corpus-small-{distinct}", distinct, copies, SMALL, extras=4)
    large = corpus(work / f"corpus-large-{distinct}", distinct, copies, LARGE)
    extra = sorted(small.folder.with_name(small.folder.name + "-extra").iterdir())
    new, query = extra[:3], extra[3]
    folder = work / "models" / args.model.replace("/", "_")
    spec = args.model if args.model.startswith("local-dir:") else f"local-dir:{folder}"
    if not (folder / "open_clip_config.json").exists() and not args.model.startswith("local-dir:"):
        make_model(args.model, folder)
    bench = Bench(work, spec, rclip, models, args.quiet_wait)

    print("warm-up: the per-user export cache, and each tool's files into the page cache", file=sys.stderr)
    warm = bench.imgsearch(["index", str(small.folder)], bench.fresh("home-warm"), bench.warm_cache)
    bench.rclip_run(["-t", "1", str(query)], bench.rclip_datadir(), small.folder)
    setup_s = time.perf_counter() - setup_started

    rows: dict[str, dict] = {}
    kept: dict[str, Path] = {}
    for name, c in (("first_index_small", small), ("first_index_large", large)):
        print(f"{name}: {c.describe()}", file=sys.stderr, flush=True)
        keep: dict[str, Path] = {}
        rows[name] = first_index(bench, c, query, args.runs, keep)
        if c is small:
            kept = keep
    print("reindex_small", file=sys.stderr, flush=True)
    rows["reindex_small"] = reindex(bench, small, query, args.runs, kept)

    print(f"three_new_into_10k: building the {LIBRARY:,}-image libraries", file=sys.stderr, flush=True)
    root = (work / f"library-{LIBRARY}-{distinct}").resolve()  # resolved: rclip stores os.getcwd()'s paths
    real = stub_library(root, sorted((small.folder / "photos").iterdir()), LIBRARY)
    homes = {"imgsearch_pristine": bench.fresh("home-10k-pristine")}
    config = json.loads((Path(spec.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
    synthetic_library(
        homes["imgsearch_pristine"],
        parse_model_spec(spec).id,
        config["model_cfg"]["embed_dim"],
        root,
        LIBRARY,
        real_files=real,
        on_disk=True,
    )
    homes["rclip_pristine"] = bench.fresh("rclip-10k-pristine") / "db.sqlite3"
    shutil.rmtree(root / "new", ignore_errors=True)
    rclip_python = rclip.with_name("python")
    subprocess.run([str(rclip_python), "-c", RCLIP_FILL, str(homes["rclip_pristine"]), str(root)], check=True)
    rows["three_new_into_10k"] = three_new(bench, root, homes, new, query, args.runs)
    for kind, row in queries(bench, root, homes, query, args.runs).items():
        rows[f"{kind}_query" if kind != "help" else "help"] = row
    shutil.rmtree(root / "new", ignore_errors=True)

    imgsearch_index = f"imgsearch index FOLDER (IMGSEARCH_MODEL={args.model}, random weights)"
    rclip_index = f"cd FOLDER && rclip -t 1 {query.name}"
    measured = {
        "first_index_small": {
            "imgsearch_cold": f"{imgsearch_index}, new IMGSEARCH_HOME and new IMGSEARCH_CACHE each run",
            "imgsearch": f"{imgsearch_index}, new IMGSEARCH_HOME, IMGSEARCH_CACHE holding the exports",
            "rclip": f"{rclip_index}, new RCLIP_DATADIR (new database; the model files linked in): rclip "
            "has no index-only command, so this indexes the folder, then runs one image query with the image "
            "model it already loaded (one 1024x768 decode and encode more)",
        },
        "reindex_small": {
            "imgsearch": "imgsearch index FOLDER, the small corpus unchanged, into the first row's index",
            "rclip": f"{rclip_index} in the unchanged folder: the re-scan, then the image query, which here "
            "loads the image model (nothing was indexed); that query alone is the image-query row",
        },
        "three_new_into_10k": {
            "imgsearch": f"imgsearch index LIBRARY after 3 new distinct photos were copied into LIBRARY/new; "
            f"the index: {LIBRARY:,} rows by common.synthetic_library, {len(real)} of them real photos, "
            "the rest 2-byte stubs whose size and mtime the index records (never opened)",
            "rclip": f"cd LIBRARY && rclip -t 1 {query.name} after the same 3 photos: its database of the "
            f"same {LIBRARY:,} files by its own db module (true size, mtime, file hash; random vectors); it "
            f"encodes the 3, then searches all {LIBRARY + 3:,} vectors for the query image",
        },
        "text_query": {"imgsearch": f'imgsearch query "{TEXT}"', "rclip": f'rclip -n -t 10 "{TEXT}"'},
        "image_query": {
            "imgsearch": f"imgsearch similar {query.name} (a photo not in the index)",
            "rclip": f"rclip -n -t 10 /ABS/{query.name}",
        },
        "help": {"imgsearch": "imgsearch --help", "rclip": "rclip --help"},
    }
    measured = {"first_index_large": measured["first_index_small"], **measured}
    measured = {name: measured[name] for name in rows}  # in the rows' order
    return {
        "cpu": describe_cpu(),
        "cores": os.cpu_count(),
        "rclip_version": rclip_version,
        "imgsearch_version": _version("imgsearch"),
        "runs": args.runs,
        "quick": args.quick,
        "models": {
            "imgsearch": f"{args.model}, random weights, as {spec}",
            "rclip": f"{made['model']}, our own export of what rclip 3.3.0 downloads "
            f"({layout['subdir']}): {made['export']}",
        },
        "corpora": {
            "small": small.describe(),
            "large": large.describe(),
            "library": f"{LIBRARY:,} files: {len(real)} real photos {SMALL[0]}x{SMALL[1]}, the rest stubs",
            "new_photos": f"{len(new)} distinct photos {SMALL[0]}x{SMALL[1]} that no corpus holds",
            "query_image": f"a distinct photo {SMALL[0]}x{SMALL[1]} that no index holds",
        },
        "rclip_setup": {
            "venv": str(rclip.parent.parent),
            "datadir_files": made["files"],
            "model_mb": made["mb"],
            "export_check_cos_min": made["cos_vs_torch_min"],
            "env": "RCLIP_DATADIR=a new folder per index, its model files linked in; HF_HUB_OFFLINE=1",
            "download_check": "rclip downloads only a file that os.path.isfile does not find at "
            "$RCLIP_DATADIR/<subdir>/{visual,textual}.onnx or $RCLIP_DATADIR/" + layout["vocab"] + "; it "
            "checks no hash and no version",
        },
        "warm_up_index_s": round(warm.wall_s, 2),
        "warm_up_background_export_s": warm.background_s and round(warm.background_s, 1),
        "measured": measured,
        "rows": rows,
        "setup_s": round(setup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32", help="imgsearch's model (random weights)")
    parser.add_argument("--runs", type=int, help="timed runs of each tool per row (default 3; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="24 photos (16 distinct), 2 runs: a smoke test")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgsearch-rclip-anchor")
    parser.add_argument(
        "--quiet-wait", type=float, help="s to wait for a quiet second before a run (default 20; --quick 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    args.runs = args.runs or (2 if args.quick else 3)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 20)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['cpu']}, {result['rclip_version']}, {args.runs} runs")
    for name, row in result["rows"].items():
        for tool, m in row.items():
            extra = f", background export {m['background_export_s']} s" if "background_export_s" in m else ""
            print(
                f"{name:<20} {tool:<15} min {m['min_s']:6.2f} s  median {m['median_s']:6.2f} s  "
                f"peak RSS {m['peak_rss_mb']:5d} MB{extra}"
            )


if __name__ == "__main__":
    main()
