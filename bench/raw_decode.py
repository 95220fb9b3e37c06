"""Decode cost of a camera RAW photo, through imgsearch's own decode path, against a JPEG of the same picture.

    python bench/raw_decode.py [--count 6] [--size 6000x4000] [--rounds 3] [--json]

Writes COUNT distinct photo-like pictures at a sensor's size (default 24 MP; `common.camera_picture`) as
three files each: a JPEG as a camera saves it (quality 95, 4:2:0), a DNG with that JPEG as its full-size
embedded preview (the RAW path that decodes the preview), and a DNG without a preview (LibRaw's half-size
demosaic). Each file is decoded ROUNDS times by `imgsearch.index.decode.decode_file` into the ViT-B-32 input
(224 x 224, open_clip's defaults), in a spawned process as the indexer's decode workers are; per file the
least CPU time (process_time: every thread of that process, LibRaw's OpenMP ones included) and wall time
over the rounds, then the min and median over the files.

Then where the time goes: the calls `open_raw` makes, one by one in this process (median over the files):
reading and hashing the bytes, LibRaw's open, the preview and the date from the file's own EXIF (preview
path), or the half-size demosaic, its box reduction and LibRaw's date (demosaic path: rawpy's `other`
unpacks the sensor data, which the demosaic has done already), and the resize to the model's input.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CAMERA_KINDS, decode_costs, make_camera_files
from numerics import OtherLoad

DATE_STEP = "date taken"
#: ViT-B-32's input as open_clip's defaults give it (shortest edge, bicubic, centre crop).
PREP = (224, 224)


def measure(count: int, width: int, height: int, rounds: int, work: Path) -> dict[str, Any]:
    from imgsearch.model.preprocess import Preprocess

    prep = Preprocess(*PREP)
    files = make_camera_files(work, count, width, height, list(CAMERA_KINDS))
    kinds: dict[str, Any] = {}
    with OtherLoad() as load:
        for kind, paths in files.items():
            costs, decoded = decode_costs(paths, prep, rounds)
            cpu, wall = [c for c, _ in costs], [w for _, w in costs]
            kinds[kind] = {
                "files": len(paths),
                "file_mb": statistics.mean(p.stat().st_size for p in paths) / 1e6,
                "format": decoded[0].format,
                "cpu_ms_min": min(cpu) * 1000,
                "cpu_ms_median": statistics.median(cpu) * 1000,
                "wall_ms_min": min(wall) * 1000,
                "wall_ms_median": statistics.median(wall) * 1000,
                "pixels": list(decoded[0].pixels.shape),
                "taken_at": decoded[0].taken_at,
            }
    steps = {
        "preview": breakdown(files["preview"], prep, preview=True),
        "demosaic": breakdown(files["demosaic"], prep, preview=False),
    }
    return {
        "size": f"{width}x{height}",
        "rounds": rounds,
        "prep": f"{prep.width}x{prep.height} {prep.resize_mode} {prep.interpolation}",
        "kinds": kinds,
        "steps": steps,
        "others_share": load.share,
    }


def breakdown(paths: list[Path], prep: Any, preview: bool) -> dict[str, float]:
    """CPU milliseconds of each call that `decode_file` and `open_raw` make, one by one (median of files)."""
    import rawpy
    from PIL import Image

    from imgsearch.index.decode import drafted, fit_to_model, hash_bytes
    from imgsearch.index.exif import taken_at, tiff_exif

    timed: dict[str, list[float]] = {}

    def step(name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        result = call(*args, **kwargs)
        timed.setdefault(name, []).append((time.process_time() - started) * 1000)
        return result

    def preview_jpeg(data: bytes) -> Image.Image:
        image = drafted(Image.open(io.BytesIO(data)), prep)  # as decode.open_upright_rgb drafts a JPEG
        image.load()
        return image

    def libraw_date(raw: Any) -> Any:
        return raw.other

    for path in paths:
        data = step("read the file", path.read_bytes)
        step("hash it (blake2b)", hash_bytes, data)
        raw = step("LibRaw open (rawpy.imread)", rawpy.imread, io.BytesIO(data))
        if preview:
            thumb = step("extract_thumb", raw.extract_thumb)
            image = step("preview JPEG, drafted", preview_jpeg, thumb.data)
            step(DATE_STEP, lambda d: taken_at(tiff_exif(d)), data)  # the file's own EXIF: no unpack
        else:
            pixels = step(
                "postprocess(half_size)",
                raw.postprocess,
                half_size=True,
                use_camera_wb=True,
                output_bps=8,
                user_flip=0,
            )
            image = step("box reduce", drafted, Image.fromarray(pixels), prep, demosaiced=True)
            step(DATE_STEP, libraw_date, raw)  # LibRaw's, free once postprocess has unpacked
        step("resize + crop to 224", fit_to_model, image.convert("RGB"), prep)
        raw.close()
    return {name: statistics.median(ms) for name, ms in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=6, help="distinct pictures (files of each kind)")
    parser.add_argument("--size", default="6000x4000", help="the sensor's size (WxH, even)")
    parser.add_argument("--rounds", type=int, default=3, help="decodes of each file; the least counts")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.count, width, height, args.rounds, Path(tmp))
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.count} pictures {r['size']} -> {r['prep']}, least of {r['rounds']} decodes per file")
    for kind, k in r["kinds"].items():
        print(
            f"{kind:9} {k['file_mb']:5.1f} MB  CPU min {k['cpu_ms_min']:6.1f} "
            f"median {k['cpu_ms_median']:6.1f} ms  wall min {k['wall_ms_min']:6.1f} "
            f"median {k['wall_ms_median']:6.1f} ms"
        )
    for path, steps in r["steps"].items():
        print(f"{path}: " + ", ".join(f"{name} {ms:.1f}" for name, ms in steps.items()) + " (CPU ms)")
    print(f"other processes took {r['others_share']:.0%} of the CPU meanwhile")


if __name__ == "__main__":
    main()
