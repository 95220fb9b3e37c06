"""Indexing throughput against the pipeline limit, in one run, with a real architecture and random weights.

    python bench/index_rate.py [--model ViT-B-32] [--count 96] [--size 1024x768]

Builds the architecture with random weights into a local-dir folder (speed does not depend on the weights),
generates photo-like JPEGs, then measures on this machine:
  - decode: core-seconds per image of the project's own decode path (one process);
  - encode: seconds per image of batched inference (all threads), i.e. the encoder-only rate;
  - the pipeline limit: cores / (decode core-s + encode core-s), where encode core-s = encode s x cores;
  - end to end: `Library.index` on the folder, the rate over its encoding phase (workers included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_model(name: str, folder: Path) -> str:
    import open_clip
    from safetensors.torch import save_file

    logging.disable(logging.WARNING)  # "initialized randomly" is the point here
    model = open_clip.create_model(name)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": open_clip.get_model_config(name),
        "preprocess_cfg": dict(model.visual.preprocess_cfg),
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}"


def make_photos(folder: Path, count: int, width: int, height: int) -> None:
    """Smooth colour fields plus sensor-like noise: JPEG sizes and decode costs like real photos."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = rng.random((height // 64 + 1, width // 64 + 1, 3)) * 255
        smooth = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.BICUBIC))
        noisy = smooth.astype(np.int16) + rng.integers(-12, 12, (height, width, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img{i:04d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--size", default="1024x768")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))

    from imgsearch import Library
    from imgsearch.decode import decode_file
    from imgsearch.encoder import Encoder
    from imgsearch.events import IndexEvents
    from imgsearch.models import parse_model_spec

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = make_model(args.model, work / "model")
        make_photos(work / "photos", args.count, width, height)
        files = sorted((work / "photos").iterdir())

        encoder = Encoder.load(parse_model_spec(spec), device="cpu")
        sample = files[:32]
        started = time.perf_counter()
        decoded = [decode_file(str(f), encoder.preprocess) for f in sample]
        decode_s = (time.perf_counter() - started) / len(sample)
        batch = np.stack([d.pixels for d in decoded[: encoder.runtime.batch_size]])
        encoder.embed_pixels(batch)  # warm-up
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < 8:
            encoder.embed_pixels(batch)
            done += len(batch)
        encode_s = (time.perf_counter() - started) / done
        limit = cores / (decode_s + encode_s * cores)

        class Clock(IndexEvents):
            def phase(self, name: str, total: int) -> None:
                self.start = time.perf_counter()

            def advance(self, n: int = 1) -> None:
                self.end = time.perf_counter()

        clock = Clock()
        report = Library(work / "home", model=spec, device="cpu").index([work / "photos"], events=clock)
        rate = report.encoded / (clock.end - clock.start)

    print(
        f"model {args.model} (random weights), {args.count} JPEGs {width}x{height}, {cores} cores, "
        f"{encoder.runtime.precision}"
    )
    print(f"decode + preprocess     {decode_s * 1000:7.1f} ms per image (one core)")
    print(f"encoder only            {1 / encode_s:7.1f} img/s")
    print(f"pipeline limit          {limit:7.1f} img/s")
    print(f"index, encoding phase   {rate:7.1f} img/s  ({rate / limit:.2f} x the limit; {report.summary()})")


if __name__ == "__main__":
    main()
