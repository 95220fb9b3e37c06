"""Which engine embeds the images of an index run: torch (CPU or GPU, in the index numerics) or ONNX Runtime
on the CPU (the verified image export, fp32 or int8), decided without importing torch.

The background exporter (imgsearch.model.exporter) measures on this machine each engine's start-up (torch:
import and model load; ONNX Runtime: opening the session) and its img/s, and records them beside the image
export. `--precision auto` then takes the engine with the least estimated time for the run at hand:
start-up + images / rate. So three new photos never wait seconds for torch, and a first index of
thousands takes the fastest engine for this CPU (on a CPU with native bf16, torch bf16 or int8 weights;
elsewhere ONNX Runtime, usually). A given `--precision` keeps the engines of those numerics; a GPU device
always takes torch. Until the speeds are measured, torch it is, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .numerics import describe_cpu, index_precision

_log = logging.getLogger("imgsearch")

TORCH = "torch"
ONNX = "onnxruntime"


@dataclass(frozen=True)
class Engine:
    """How one index run embeds images: `runtime` torch or onnxruntime, `device` for torch, the numerics
    of the stored vectors, and why it was chosen (for `index -v`)."""

    runtime: str
    device: str
    precision: str
    why: str = ""

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.device} {self.precision}"


def machine_key() -> str:
    """Speeds hold for one kind of machine: its CPU and flags (and the GPU the exporter saw)."""
    return hashlib.blake2b(describe_cpu().encode(), digest_size=6).hexdigest()


def rates_file(export: Path) -> Path:
    return export / f"rates-{machine_key()}.json"


def read_rates(export: Path) -> dict[str, Any] | None:
    try:
        rates = json.loads(rates_file(export).read_text())
    except (OSError, ValueError):
        return None
    return rates if isinstance(rates, dict) and rates.get("machine") == describe_cpu() else None


def choose(
    export: Path | None,
    int8: bool,
    count: int,
    device: str = "auto",
    precision: str = "auto",
    torch_loaded: bool = False,
) -> Engine:
    """The engine for embedding `count` images; `export` is the verified image export's folder (None:
    there is none yet), `int8` whether its int8 variant passed its check, `torch_loaded` whether this
    process holds the torch encoder already (its start-up is paid)."""
    if device not in ("auto", "cpu"):
        return Engine(TORCH, device, precision, f"--device {device}")
    rates = read_rates(export) if export is not None else None
    if rates is None:
        why = "no image export yet" if export is None else "engine speeds not measured on this machine yet"
        return Engine(TORCH, device, precision, why)
    measured: dict[str, float] = rates.get("img_per_s", {})
    startup: dict[str, float] = rates.get("startup_s", {})
    torch_device = rates.get("torch_device", "cpu") if device == "auto" else "cpu"
    options = [Engine(TORCH, torch_device, index_precision(torch_device, precision))]
    if precision in ("auto", "fp32"):
        options.append(Engine(ONNX, "cpu", "fp32"))
    if precision == "auto" and int8:
        options.append(Engine(ONNX, "cpu", "int8"))

    def estimate(engine: Engine) -> float:
        rate = measured.get(engine.name)
        if not rate:
            return float("inf")
        paid = engine.runtime == TORCH and torch_loaded
        return (0.0 if paid else startup.get(engine.runtime, 0.0)) + count / rate

    times = {option: estimate(option) for option in options}
    best = min(options, key=lambda option: times[option])
    if times[best] == float("inf"):
        return Engine(TORCH, device, precision, "no speed measured for these numerics on this machine")
    shown = ", ".join(f"{o.name} {t:.1f} s" for o, t in times.items() if t != float("inf"))
    return Engine(best.runtime, best.device, best.precision, f"estimated for {count} images: {shown}")


def write_rates(export: Path, rates: dict[str, Any]) -> None:
    """Atomically, so a concurrent index run reads the old figures or the new."""
    path = rates_file(export)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"machine": describe_cpu(), **rates}, indent=2))
    tmp.replace(path)
