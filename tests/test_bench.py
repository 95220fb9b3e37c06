"""The benchmark harness at its smallest setting, as a smoke test: every part runs and writes its table.
Correctness only: the numbers of a tiny model on a busy test machine are not checked against targets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SECTIONS = ("index", "rescan", "query", "search", "serve", "engines", "catalog")
#: The rclip side-by-side builds the anchor's own venv and ONNX files (minutes, GBs); run by hand:
#: `python bench/harness.py --smoke --model ViT-B-32 --only rclip --out FILE`.
LEFT_OUT = ("rclip",)


def test_harness_runs_every_benchmark_and_rewrites_only_its_block(tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nA hand-written section that must survive.\n")
    # Both exports on, as a user has them: the scripts that index or query then also go through the
    # background exporter and the image export (index_rate, cold_query and numerics keep theirs in a
    # cache of their own; the others use this test's).
    env = {**os.environ, "IMGSEARCH_TEXT_EXPORT": "1", "IMGSEARCH_IMAGE_EXPORT": "1"}
    env.pop("IMGSEARCH_MODEL", None)
    command = [sys.executable, str(REPO / "bench" / "harness.py"), "--smoke", "--model", tiny_model]
    sys.path.insert(0, str(REPO / "bench"))
    from harness import SECTIONS as ALL

    only = ",".join(name for name in ALL if name not in LEFT_OUT)
    done = subprocess.run(
        [*command, "--out", str(out), "--only", only], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nA hand-written section that must survive.\n")
    for name in SECTIONS:
        section = text.split(f"<!-- harness:{name}:start -->")[1].split(f"<!-- harness:{name}:end -->")[0]
        assert section.count("|") > 10, section  # a table with measured rows
    assert "img/s" in text and "files/s" in text and "recall" in text and "p50" in text

    again = subprocess.run(
        [*command, "--out", str(out), "--only", "rescan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rewritten = out.read_text()
    assert rewritten.count("<!-- harness:rescan:start -->") == 1
    for name in ("index", "serve"):  # sections not run again are kept as they were
        marker = f"<!-- harness:{name}:start -->"
        assert rewritten.split(marker)[1].split("<!--")[0] == text.split(marker)[1].split("<!--")[0]
