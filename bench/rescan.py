"""Re-scan of an unchanged library: how fast `imgsearch index` finds that nothing changed.

    python bench/rescan.py [--count 100000] [--extras] [--json]

Creates COUNT small .jpg files in folders of 1,000 and an index whose rows match their size and mtime
(written through the catalog API with clustered vectors: nothing is decoded or encoded), runs
`imgsearch index` once to warm the page cache, then times three more runs as new processes. Stat only:
an unchanged file is never opened, and the model is never loaded.

`--extras`: then, in the same run, adds to every folder what the candidate rule has to look at besides the
photos (imgsearch.formats.is_candidate_name), and times three more runs after a warm one:
  - a tenth as many files with NO extension that are not pictures (notes, archives, videos, random
    bytes): the rule opens each of them on every scan and sniffs its first 32 bytes;
  - a tenth as many sidecars, half .json and half .mov, named after photos: taken at their extension's
    word, never opened.
It also times the rule's fixed cost in a new process: importing the decoders it derives the extensions
from (Pillow's plugins, pillow-heif, rawpy) and every signature check's first call.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import imgsearch_command, run_timed, synthetic_library, synthetic_path

DEFAULT_MODEL_ID = "ViT-B-32:laion2b_s34b_b79k"
#: What files without an extension hold in a real folder (first bytes): none of them a picture.
NOT_PICTURES = (
    b"notes from the trip: ferry at 9, hotel by the harbour\n",
    b"PK\x03\x04\x14\x00\x08\x00\x08\x00" + bytes(40),  # a zip archive
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(24),  # a video from a phone backup
    b'{"title": "IMG_0001", "photoTakenTime": {"timestamp": "1714979289"}}\n',
)
#: How the rule's setup is timed in a new process: the imports it triggers and one sniff.
SETUP = "from imgsearch.formats import candidate_extensions, sniff; candidate_extensions(); sniff(b'x' * 32)"


def measure(count: int, work: Path, extras: bool = False) -> dict[str, Any]:
    root, home = work / "photos", work / "home"
    for number in range(count):
        path = synthetic_path(root, number)
        if number % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8")
    synthetic_library(home, DEFAULT_MODEL_ID, 512, root, count, on_disk=True)
    env = {**os.environ, "IMGSEARCH_HOME": str(home)}
    walls = timed_rescans(count, env)
    result: dict[str, Any] = {
        "files": count,
        "seconds": statistics.median(walls),
        "seconds_min": min(walls),
        "walls": walls,
        "files_per_s": count / statistics.median(walls),
    }
    if extras:
        sniffed, sidecars = add_extras(root, count)
        found = rule_counts(root)
        if found["sniffed"] != sniffed:
            raise RuntimeError(f"expected {sniffed} files without an extension, the rule saw {found}")
        walls = timed_rescans(count, env)
        result["extras"] = {
            "files": count + sniffed + sidecars,
            "sniffed": sniffed,
            "sidecars": sidecars,
            "seconds": statistics.median(walls),
            "seconds_min": min(walls),
            "walls": walls,
            "setup_s": rule_setup(),
        }
    return result


def timed_rescans(count: int, env: dict[str, str]) -> list[float]:
    """One warm-up `imgsearch index`, then the wall seconds of three more; each must find nothing new."""
    command = [*imgsearch_command(), "index"]
    _, _, out = run_timed(command, env)
    if f"0 new, 0 changed, 0 moved, 0 copied, {count} unchanged, 0 removed, 0 failed" not in out:
        raise RuntimeError(f"expected {count} unchanged files and nothing else: {out}")
    return [run_timed(command, env)[0] for _ in range(3)]


def add_extras(root: Path, count: int) -> tuple[int, int]:
    """Per folder of 1,000 photos, 100 files without an extension and 100 sidecars; their numbers."""
    rng = random.Random(0)
    sniffed = sidecars = 0
    for number in range(0, count, 10):
        photo = synthetic_path(root, number)
        kind = (number // 10) % (len(NOT_PICTURES) + 1)
        body = NOT_PICTURES[kind] if kind < len(NOT_PICTURES) else b"\x00\x01" + rng.randbytes(62)
        (photo.parent / f"notes{number:07d}").write_bytes(body)
        sniffed += 1
        photo.with_suffix(".json" if number % 20 == 0 else ".mov").write_bytes(b"{}")
        sidecars += 1
    return sniffed, sidecars


def rule_counts(root: Path) -> dict[str, int]:
    """How the candidate rule judges every file's name: by extension, or to be sniffed."""
    from imgsearch.formats import is_candidate_name

    counts = {"candidates": 0, "ignored": 0, "sniffed": 0}
    for _folder, _dirs, names in os.walk(root):
        for name in names:
            verdict = is_candidate_name(os.fsencode(name))
            counts["sniffed" if verdict is None else "candidates" if verdict else "ignored"] += 1
    return counts


def rule_setup() -> dict[str, float]:
    """Median wall seconds of three new processes: imgsearch.formats imported alone, and the rule set up."""
    times = {}
    for name, code in (("import", "import imgsearch.formats"), ("rule", SETUP)):
        walls = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            walls.append(time.perf_counter() - started)
        times[name] = statistics.median(walls)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--extras", action="store_true", help="then add files without an extension and sidecars"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.count, Path(tmp), args.extras)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"re-scan of {result['files']:,} unchanged files: {result['seconds']:.2f} s "
        f"({result['files_per_s']:,.0f} files/s; least {result['seconds_min']:.2f} s)"
    )
    extras = result.get("extras")
    if extras:
        print(
            f"with {extras['sniffed']:,} files without an extension (sniffed) and {extras['sidecars']:,} "
            f"sidecars: {extras['seconds']:.2f} s (least {extras['seconds_min']:.2f} s); the rule's setup "
            f"{extras['setup_s']['rule'] - extras['setup_s']['import']:.2f} s of a new process"
        )


if __name__ == "__main__":
    main()
