"""The image engines side by side on this CPU: torch fp32 and bf16, the ONNX image export in fp32 and int8;
encoder-only img/s (alternated, fastest of the rounds) and each one's cosine to torch fp32 on photo-like
images, with the choice `--precision auto` makes from the exporter's own measurements.

    python bench/engines.py [--model ViT-B-32] [--rounds 5] [--json]

Random weights: the speed is the architecture's; the int8 cosine is the quantizer's on these weights, and
the exporter checks it again on each user's real weights before int8 is ever used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_model, make_photos


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["IMGSEARCH_CACHE"] = str(work / "cache")
        print(json.dumps(measure(make_model(args.model, work / "model"), work, args)))


def measure(model: str, work: Path, args: argparse.Namespace) -> dict:
    from imgsearch.index.decode import decode_file
    from imgsearch.model.cache import export_folder
    from imgsearch.model.encoder import Encoder
    from imgsearch.model.engine import choose
    from imgsearch.model.numerics import cpu_computes_bf16, describe_cpu
    from imgsearch.model.onnx_image import FOLDER, OnnxImage
    from imgsearch.model.onnx_text import cpu_threads, read_meta
    from imgsearch.model.specs import parse_model_spec

    spec = parse_model_spec(model)
    started = time.perf_counter()
    # the exporter itself, in a new process as after a command (torch's start-up measured from scratch),
    # here waited for
    subprocess.run([sys.executable, "-m", "imgsearch.model.exporter", spec.id], check=True)
    export_seconds = time.perf_counter() - started
    folder = export_folder(spec, FOLDER)
    meta = read_meta(folder)
    assert meta is not None and meta["supported"], meta
    make_photos(work / "photos", args.photos, 1024, 768)
    reference = Encoder.load(spec, "cpu", "fp32")
    pixels = np.stack(
        [decode_file(p, reference.preprocess).pixels for p in sorted((work / "photos").iterdir())]
    )
    engines = {"torch cpu fp32": reference}
    if cpu_computes_bf16():
        engines["torch cpu bf16"] = Encoder.load(spec, "cpu", "bf16")
    for precision in ("fp32", "int8"):
        onnx = OnnxImage.load(folder, meta, precision, threads=cpu_threads())
        if onnx is not None and (precision == "fp32" or meta.get("int8", {}).get("supported")):
            engines[f"onnxruntime cpu {precision}"] = onnx
    expected = reference.embed_pixels(pixels)
    fastest = {name: float("inf") for name in engines}
    cosine = {}
    batch = pixels[:16]
    for name, engine in engines.items():
        cosine[name] = float((engine.embed_pixels(pixels) * expected).sum(axis=1).min())
    for _ in range(args.rounds):  # alternated: a busy moment slows one round of each, not one engine
        for name, engine in engines.items():
            begun = time.perf_counter()
            engine.embed_pixels(batch)
            fastest[name] = min(fastest[name], time.perf_counter() - begun)
    rates = json.loads(next(folder.glob("rates-*.json")).read_text())
    choices = {
        n: choose(folder, bool(meta.get("int8", {}).get("supported")), n).name for n in (3, 100, 10_000)
    }
    return {
        "cpu": describe_cpu(),
        "model": args.model,
        "img_per_s": {name: round(len(batch) / s, 1) for name, s in fastest.items()},
        "min_cos_to_torch_fp32": {name: round(c, 6) for name, c in cosine.items()},
        "int8_check": meta.get("int8"),
        "exporter_rates": rates,
        "export_and_measure_s": round(export_seconds, 1),
        "auto_choice": choices,
        "photos": len(pixels),
    }


if __name__ == "__main__":
    main()
