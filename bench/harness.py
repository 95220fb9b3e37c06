"""Every speed and memory target of imgsearch, measured in one run, written into BENCHMARKS.md.

    python bench/harness.py            # the full run (about an hour on a 2-core machine)
    python bench/harness.py --smoke --model local-dir:FOLDER --out FILE   # tiny sizes: a correctness check

Runs each benchmark script in `bench/` as its own process (so one's memory and threads do not disturb the
next), collects their JSON, and rewrites the part of BENCHMARKS.md between the harness markers: per table
the command, date, machine, model and numerics, with each target beside its figure and "met" / "not met".
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- harness:start -->", "<!-- harness:end -->"


@dataclass(frozen=True)
class Settings:
    model: str
    index_corpora: tuple[tuple[int, str], ...]  # (count, WxH)
    rescan_files: int
    query_sizes: str
    query_runs: int
    search_sizes: str
    search_curve: str  # library sizes at which to time exact search alone
    serve_sizes: str
    queries: int  # per size, for search and serve latency


FULL = Settings(
    "ViT-B-32",
    ((96, "1024x768"), (48, "4000x3000")),
    100_000,
    "10000,100000,1000000",
    5,
    "10000,100000,1000000",
    "50000,100000,150000,200000,300000",
    "10000,100000",
    200,
)
SMOKE = Settings("", ((12, "320x240"),), 300, "300", 1, "2000", "", "300", 20)


def run_script(name: str, *args: str) -> dict:
    """One benchmark script as a new process; its JSON result."""
    command = [sys.executable, str(HERE / name), *args, "--json"]
    print("running", " ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])  # the JSON object, on one line or more


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    return "met" if (value <= target if lower_is_better else value >= target) else "**not met**"


def index_section(s: Settings) -> list[str]:
    lines = [
        "### Indexing throughput vs the pipeline limit",
        "",
        "| corpus | decode + preprocess, one core | encoder only | pipeline limit | `index`, encoding phase "
        "| ratio (target ≥ 0.85) | peak RSS, `index` + workers (target ≤ 1.5 GB): first run / later runs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for count, size in s.index_corpora:
        r = run_script("index_rate.py", "--model", s.model, "--count", str(count), "--size", size, "--mixed")
        formats = ", ".join(f"{n} {ext[1:].upper()}" for ext, n in sorted(r["formats"].items()))
        lines.append(
            f"| {r['images']} images {size} ({formats}) + {r['broken']} broken | {r['decode_ms']:.1f} ms/img "
            f"| {r['encoder_img_s']:.1f} img/s | {r['limit_img_s']:.1f} img/s | {r['index_img_s']:.1f} img/s "
            f"| {r['ratio']:.2f}, {verdict(r['ratio'], 0.85, False)} "
            f"| {r['peak_rss_mb']} MB, {verdict(r['peak_rss_mb'], 1536)} / "
            f"{r['later_peak_rss_mb']} MB, {verdict(r['later_peak_rss_mb'], 1536)} |"
        )
    lines += [
        "",
        f"Numerics: {r['precision']} (what `--precision auto` picks on this CPU). The pipeline limit is "
        "cores / (decode core-seconds + encode core-seconds) per image, each measured alone in the same run "
        "with the "
        "project's own decode path; the encoding phase excludes importing torch and loading the model. Peak "
        "RSS is the sum over the `imgsearch index` process and its decode workers, sampled every 50 ms; a "
        "first run into a new index folder also makes the ONNX text export (torch.onnx holds a second copy "
        "of the text tower's weights meanwhile), a later run on new photos does not.",
    ]
    return lines


def rescan_section(s: Settings) -> list[str]:
    r = run_script("rescan.py", "--count", str(s.rescan_files))
    return [
        "### Re-scan of an unchanged library",
        "",
        "| files | `imgsearch index`, new process | files/s | target |",
        "| --- | --- | --- | --- |",
        f"| {r['files']:,} | {r['seconds']:.2f} s | {r['files_per_s']:,.0f} | ≤ 5 s for 100,000"
        + (f": {verdict(r['seconds'], 5.0)} |" if r["files"] == 100_000 else " (not this size) |"),
    ]


def query_section(s: Settings) -> list[str]:
    r = run_script("cold_query.py", "--model", s.model, "--sizes", s.query_sizes, "--runs", str(s.query_runs))
    help_s = r["help"]["wall_s"]
    lines = [
        "### Cold queries: `imgsearch query` as a new process",
        "",
        f"`imgsearch --help`: {help_s:.2f} s (target ≤ 0.2 s: {verdict(help_s, 0.2)}).",
        "",
        "| images | text query | image query (indexed) | image query (new file) | RSS, text query "
        "| with `serve` running: text / new image | index on disk per image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, k in r["sizes"].items():
        n = int(size)
        text_s, text_target = k["text"]["wall_s"], 0.5 if n <= 100_000 else 1.0
        served = k["server running"]
        served_text, served_image = served["text"]["wall_s"], served["new image"]["wall_s"]
        lines.append(
            f"| {n:,} | {text_s:.2f} s (≤ {text_target} s: {verdict(text_s, text_target)}) "
            f"| {k['image']['wall_s']:.2f} s (≤ 0.7 s: {verdict(k['image']['wall_s'], 0.7)}) "
            f"| {k['new image']['wall_s']:.2f} s (≤ 0.7 s: {verdict(k['new image']['wall_s'], 0.7)}; "
            f"the first one {k['new image']['first_s']:.1f} s: torch, and it makes the image export) "
            f"| {k['text']['peak_rss_mb']} MB"
            + (f" (≤ 512 MB: {verdict(k['text']['peak_rss_mb'], 512)})" if n == 100_000 else "")
            + f" | {served_text:.2f} s ({verdict(served_text, text_target)}) / {served_image:.2f} s "
            f"({verdict(served_image, 0.7)}) | {k['disk_bytes_per_image']:,.0f} bytes |"
        )
    steps = list(next(iter(r["sizes"].values()))["breakdown"])
    lines += [
        "",
        "Where a cold text query's time goes (median of new processes running the CLI's calls one by one; "
        "`bench/cold_query.py` BREAKDOWN):",
        "",
        "| images | " + " | ".join(steps) + " |",
        "| --- |" + " --- |" * len(steps),
    ]
    for size, k in r["sizes"].items():
        lines.append(
            f"| {int(size):,} | "
            + " | ".join(f"{k['breakdown'][step] * 1000:.0f} ms" for step in steps)
            + " |"
        )
    return lines


def search_section(s: Settings) -> list[str]:
    import tempfile

    from search_scale import report

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            sys.executable,
            str(HERE / "search_scale.py"),
            "--sizes",
            s.search_sizes,
            "--curve",
            s.search_curve,
            "--queries",
            str(s.queries),
            "--json",
            out.name,
        ]
        print("running", " ".join(command[1:]), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        data = json.loads(Path(out.name).read_text())
    rows = data["rows"]
    lines = ["### Search alone: latency and recall@10 against exact search", ""]
    big = [r for r in rows if r["count"] >= 1_000_000]
    for r in big:
        for kind in ("image", "text"):
            p50, recall = r[f"{kind}_p50"], r[f"{kind}_recall"]
            lines.append(
                f"- {r['count']:,} images, {kind}-like queries: p50 {p50:.2f} ms (target ≤ 10 ms: "
                f"{verdict(p50, 10)}), recall@10 {recall:.3f} (target ≥ 0.98: {verdict(recall, 0.98, False)})"
            )
    lines += [
        "",
        "Synthetic vectors shaped like CLIP embeddings (`bench/common.py` `embeddings`: a shared mean "
        "direction, power-law topics, scenes of ~20 shots, shot noise), inserted through the catalog; "
        "text-like queries add the text-to-image gap (`bench/search_scale.py`).",
        "",
        report(rows, data["curve"]),
    ]
    return lines


def serve_section(s: Settings) -> list[str]:
    r = run_script(
        "serve_latency.py", "--model", s.model, "--sizes", s.serve_sizes, "--queries", str(s.queries)
    )
    lines = [
        "### Warm queries through the HTTP API (`imgsearch serve`)",
        "",
        "| images | HTTP p50 | HTTP p95 | in-process p50 | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size in s.serve_sizes.split(","):
        http, direct = r[size]["http"], r[size]["in_process"]
        target = f"p50 ≤ 30 ms: {verdict(http['p50_ms'], 30)}" if size == "100000" else ""
        lines.append(
            f"| {int(size):,} | {http['p50_ms']:.1f} ms | {http['p95_ms']:.1f} ms | "
            f"{direct['p50_ms']:.1f} ms | {target} |"
        )
    lines += ["", f"{r['queries']} text queries, each a new text (no cache), including text encoding."]
    return lines


SECTIONS: dict[str, Callable[[Settings], list[str]]] = {
    "index": index_section,
    "rescan": rescan_section,
    "query": query_section,
    "search": search_section,
    "serve": serve_section,
}


def render(s: Settings, name: str, command: str) -> str:
    """One section between its own markers, so that `--only` rewrites just the sections it ran."""
    from common import machine

    started = time.perf_counter()
    lines = SECTIONS[name](s)
    minutes = (time.perf_counter() - started) / 60
    caption = (
        f"`{command} --only {name}`, {datetime.date.today().isoformat()}, {machine()}, model {s.model} "
        f"with random weights (speed does not depend on the weights); {minutes:.0f} min."
    )
    return "\n".join(
        [f"<!-- harness:{name}:start -->", lines[0], "", caption, *lines[1:], f"<!-- harness:{name}:end -->"]
    )


def place(text: str, name: str, section: str) -> str:
    """Replace the section's old text, or add it at the end of the harness block."""
    start, end = f"<!-- harness:{name}:start -->", f"<!-- harness:{name}:end -->"
    if start in text and end in text:
        return text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    if START not in text:
        text += f"\n{START}\n## Targets of the speed issue, measured by `python bench/harness.py`\n\n{END}\n"
    return text.replace(END, section + "\n\n" + END)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every part runs")
    parser.add_argument("--model", help="model architecture or local-dir:FOLDER (default ViT-B-32)")
    parser.add_argument("--only", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=HERE.parent / "BENCHMARKS.md", help="file to rewrite")
    args = parser.parse_args()
    settings = SMOKE if args.smoke else FULL
    model = args.model or settings.model
    if not model:
        parser.error("--smoke needs --model (e.g. a small local-dir: model)")
    settings = Settings(model, *list(settings.__dict__.values())[1:])
    only = args.only.split(",") if args.only else list(SECTIONS)
    sys.path.insert(0, str(HERE))
    command = "python bench/harness.py" + (" --smoke" if args.smoke else "")
    for name in only:
        section = render(settings, name, command)
        text = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(place(text, name, section))  # after each section: a long run keeps its results
        print(section, flush=True)


if __name__ == "__main__":
    main()
