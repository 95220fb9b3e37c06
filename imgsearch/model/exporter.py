"""The background exporter: a detached, low-priority process that makes a model's ONNX exports (text;
image in fp32, and int8 where it is faithful) and measures the image engines on this machine, so that no
command waits for it.

`request(spec)` starts it after a run that had to load torch, unless the exports and this machine's
speeds are there already or an exporter for the model is running. It waits for a one-off command to exit
before it loads anything, so the command's memory and its own are never held at once.
`python -m imgsearch.model.exporter MODEL` is the process: one per model content at a time (a lock in the
cache), at nice 10, its log in `<cache>/exporter.log`. A marker file names its pid while it runs, so that
`wait` (tests, benchmarks) knows when it is done.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..home import cache_home
from . import onnx_image, onnx_text
from .cache import export_folder, model_key
from .engine import ONNX, TORCH, read_rates, write_rates
from .specs import ModelSpec, parse_model_spec

if TYPE_CHECKING:
    from .encoder import Encoder
    from .onnx_image import OnnxImage

_log = logging.getLogger("imgsearch")

LOG_FILE = "exporter.log"
#: How long the exporter waits for the command that started it to exit before it loads the model: a
#: one-off command's memory is freed first, so the two peaks never add up; a long-lived process (watch,
#: serve) does not exit, and the export starts after this. $IMGSEARCH_EXPORTER_WAIT_S overrides it (the
#: tests, whose in-process commands never exit).
LAUNCHER_WAIT_S = 10.0
#: Images per batch, and batches timed for each engine's img/s (after one of warm-up): the fastest counts,
#: since the exporter runs at low priority beside whatever else the machine does.
CALIBRATION_BATCH = 16
CALIBRATION_BATCHES = 3


def request(spec: ModelSpec, after_exit: bool = False) -> bool:
    """Start the exporter for `spec` unless nothing is missing or one runs; whether one was started.
    `after_exit`: this process is a one-off command, which the exporter lets exit first."""
    if not (onnx_text.enabled() or onnx_text.enabled(onnx_image.SWITCH)) or not missing(spec):
        return False
    marker = _marker(spec)
    if _running(marker):
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_home() / LOG_FILE, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "imgsearch.model.exporter", spec.id]
                + ([str(os.getpid())] if after_exit else []),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # not ended by the terminal's Ctrl-C meant for the command
                close_fds=True,
            )
        marker.write_text(str(child.pid))
    except OSError as e:
        _log.warning("cannot start the background exporter (%s); queries keep loading torch", e)
        return False
    _log.info("making the ONNX exports of %s in the background (pid %d)", spec.id, child.pid)
    return True


def missing(spec: ModelSpec) -> bool:
    """Whether an export, or this machine's engine speeds, are still to be made (cheap: reads meta files)."""
    text = export_folder(spec, onnx_text.FOLDER)
    image = export_folder(spec, onnx_image.FOLDER)
    if onnx_text.enabled() and not _intact(text, spec, onnx_text.FORMAT, onnx_text.FILES):
        return True
    if not onnx_text.enabled(onnx_image.SWITCH):
        return False
    if not _intact(image, spec, onnx_image.FORMAT, onnx_image.FILES):
        return True
    meta = onnx_text.current_meta(image, spec, onnx_image.FORMAT)
    return bool(meta and meta.get("supported")) and read_rates(image) is None


def _intact(folder: Path, spec: ModelSpec, format: int, files: tuple[str, ...]) -> bool:
    """A current export whose files have their recorded sizes, or a current record that it is unsupported
    (an export that would not open was removed by the runtime: imgsearch.model.onnx_text.warn_unusable)."""
    meta = onnx_text.current_meta(folder, spec, format)
    if meta is None:
        return False
    if not meta.get("supported"):
        return True
    try:
        onnx_text.check_sizes(folder, meta, [*files, *meta["files"]])  # the tokenizer's file too
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def wait(spec: ModelSpec, timeout: float = 300.0) -> None:
    """Until no exporter for `spec` runs (at once when none was started)."""
    deadline = time.monotonic() + timeout
    marker = _marker(spec)
    while _running(marker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the exporter of {spec.id} still runs after {timeout:.0f} s")
        time.sleep(0.1)


def wait_all(timeout: float = 300.0) -> None:
    """Until no exporter of any model runs in this cache."""
    deadline = time.monotonic() + timeout
    for marker in (cache_home() / "running").glob("*.pid"):
        while _running(marker):
            if time.monotonic() > deadline:
                raise TimeoutError(f"an exporter still runs after {timeout:.0f} s ({marker})")
            time.sleep(0.1)


def _marker(spec: ModelSpec) -> Path:
    return cache_home() / "running" / f"{model_key(spec)}.pid"


def _running(marker: Path) -> bool:
    try:
        pid = int(marker.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A finished child of this very process stays in the table until reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# -- the process ------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """MODEL [LAUNCHER-PID]"""
    with contextlib.suppress(OSError):
        os.nice(10)
    if len(argv) > 1:
        _await_exit(int(argv[1]), float(os.environ.get("IMGSEARCH_EXPORTER_WAIT_S", LAUNCHER_WAIT_S)))
    started = time.perf_counter()
    # ours at INFO; the quantizer's notes, which it logs on the root logger, stay out of the log
    logging.basicConfig(level=logging.ERROR, format=f"%(asctime)s exporter[{os.getpid()}] %(message)s")
    _log.setLevel(logging.INFO)
    spec = parse_model_spec(argv[0])
    marker = _marker(spec)
    from filelock import FileLock, Timeout

    lock = FileLock(cache_home() / "running" / f"{model_key(spec)}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return 0  # another exporter has it
    try:
        export_and_measure(spec, started)
    finally:
        with contextlib.suppress(OSError):
            if marker.read_text() == str(os.getpid()):
                marker.unlink()
        lock.release()
    return 0


def _await_exit(launcher: int, timeout: float) -> None:
    """Until the process that started this one has ended (this one is then adopted), or `timeout`."""
    deadline = time.monotonic() + timeout
    while os.getppid() == launcher and time.monotonic() < deadline:
        time.sleep(0.05)


def export_and_measure(spec: ModelSpec, started: float | None = None) -> None:
    """Make what is missing, then time the engines (torch's start-up counted from `started`)."""
    from .encoder import Encoder, choose_runtime
    from .export import ensure_image_export, ensure_text_export
    from .numerics import index_precision

    started = time.perf_counter() if started is None else started
    encoder = Encoder.load(spec, "cpu", "fp32")
    torch_startup = time.perf_counter() - started
    ensure_text_export(encoder)
    ensure_image_export(encoder)
    folder = export_folder(spec, onnx_image.FOLDER)
    meta = onnx_text.current_meta(folder, spec, onnx_image.FORMAT)
    if meta is None or not meta.get("supported") or read_rates(folder) is not None:
        return
    rates, onnx_startup = _measure_cpu_fp32(encoder, folder, meta)
    del encoder  # before loading the numerics auto takes: one model in memory at a time
    gc.collect()
    device = choose_runtime().device
    precision = index_precision(device)
    if (device, precision) != ("cpu", "fp32"):
        rates[f"{TORCH} {device} {precision}"] = _rate(Encoder.load(spec, device, precision))
    startup = {TORCH: round(torch_startup, 2), ONNX: round(onnx_startup, 2)}
    figures = {name: round(value, 1) for name, value in rates.items()}
    write_rates(folder, {"torch_device": device, "startup_s": startup, "img_per_s": figures})
    _log.info("engine speeds on this machine: %s; start-up %s", figures, startup)


def _measure_cpu_fp32(encoder: Encoder, folder: Path, meta: dict[str, Any]) -> tuple[dict[str, float], float]:
    """img/s of torch fp32 and of the image export in fp32 and int8 on this CPU, and the seconds an
    export's session takes to open."""
    from .onnx_image import OnnxImage
    from .onnx_text import cpu_threads

    rates = {f"{TORCH} cpu fp32": _rate(encoder)}
    onnx_startup = 0.0
    for precision in ("fp32", "int8"):
        if precision == "int8" and not meta.get("int8", {}).get("supported"):
            continue
        opened = time.perf_counter()
        onnx = OnnxImage.load(folder, meta, precision, threads=cpu_threads())
        if onnx is not None:
            onnx_startup = max(onnx_startup, time.perf_counter() - opened)
            rates[f"{ONNX} cpu {precision}"] = _rate(onnx)
    return rates, onnx_startup


def _rate(engine: Encoder | OnnxImage) -> float:
    """img/s over the same random pixels: the fastest of CALIBRATION_BATCHES batches, after a warm-up."""
    import numpy as np

    prep = engine.preprocess
    shape = (CALIBRATION_BATCH, prep.height, prep.width, 3)
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    engine.embed_pixels(pixels)
    fastest = float("inf")
    for _ in range(CALIBRATION_BATCHES):
        begun = time.perf_counter()
        engine.embed_pixels(pixels)
        fastest = min(fastest, time.perf_counter() - begun)
    return CALIBRATION_BATCH / fastest


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
