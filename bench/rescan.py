"""Re-scan of an unchanged library: how fast `imgsearch index` finds that nothing changed.

    python bench/rescan.py [--count 100000] [--json]

Creates COUNT small .jpg files in folders of 1,000 and an index whose rows match their size and mtime
(written through the catalog API with clustered vectors: nothing is decoded or encoded), runs
`imgsearch index` once to warm the page cache, then times three more runs as new processes. Stat only:
an unchanged file is never opened, and the model is never loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import imgsearch_command, run_timed, synthetic_library, synthetic_path

DEFAULT_MODEL_ID = "ViT-B-32:laion2b_s34b_b79k"


def measure(count: int, work: Path) -> dict[str, float]:
    root, home = work / "photos", work / "home"
    for number in range(count):
        path = synthetic_path(root, number)
        if number % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8")
    synthetic_library(home, DEFAULT_MODEL_ID, 512, root, count, on_disk=True)
    env = {**os.environ, "IMGSEARCH_HOME": str(home)}
    command = [*imgsearch_command(), "index"]
    _, _, out = run_timed(command, env)
    if f"{count} unchanged" not in out:
        raise RuntimeError(f"expected {count} unchanged files: {out}")
    walls = [run_timed(command, env)[0] for _ in range(3)]
    wall = statistics.median(walls)
    return {"files": count, "seconds": wall, "files_per_s": count / wall}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.count, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"re-scan of {result['files']:,} unchanged files: {result['seconds']:.2f} s "
            f"({result['files_per_s']:,.0f} files/s)"
        )


if __name__ == "__main__":
    main()
