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
import statistics
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
    numerics_also: str  # more architectures for the bf16-vs-fp32 speed and fidelity test
    numerics_rounds: tuple[int, int, int]  # (alternated rounds, batches of 16 each, s to wait for quiet)
    numerics_corpus: tuple[int, str, int]  # (count, WxH, runs per precision) for `imgsearch index`
    raw_decode: tuple[int, str, int] = (6, "6000x4000", 3)  # (pictures, sensor WxH, decodes of each file)
    raw_corpora: tuple[tuple[int, str, str, int], ...] = (  # (distinct DNGs, sensor WxH, path, runs)
        (48, "6000x4000", "preview", 3),
        (24, "6000x4000", "demosaic", 3),
    )
    raw_quiet_wait: int = 60  # s to wait for a quiet machine before each RAW limit and index measurement
    rescan_extras: int = 100_000  # photos; plus a tenth without an extension and a tenth sidecars
    ray: tuple[int, str, int, int, str] = (160, "1024x768", 3, 24, "4000x3000")  # (count, WxH, runs, 12 MP)
    rclip: tuple[int, bool] = (3, False)  # (runs of each tool per row, --quick corpora)
    #: (library files and rows, insert rows, add_image calls per transaction, cold queries, re-scans) for
    #: bench/catalog_backends.py.
    catalog: tuple[int, int, int, int, int] = (100_000, 1_000_000, 64, 5, 3)
    #: (families, "" for all; photos indexed; photos for ViT-L-14 and ViT-H-14; runs; s to wait for a quiet
    #: CPU before each sample) for bench/families.py.
    families: tuple[str, int, int, int, int] = ("", 32, 8, 3, 30)


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
    "ViT-B-16",
    (7, 3, 5),
    (48, "1024x768", 2),
)
SMOKE = Settings(
    *("", ((12, "320x240"),), 300, "300", 1, "2000", "", "300", 20, "", (2, 1, 0), (6, "320x240", 1)),
    raw_decode=(2, "640x480", 1),
    raw_corpora=((4, "640x480", "preview", 1), (2, "640x480", "demosaic", 1)),
    raw_quiet_wait=0,
    rescan_extras=300,
    ray=(8, "320x240", 1, 2, "640x480"),
    rclip=(2, True),
    catalog=(300, 2000, 64, 1, 1),
    families=("RN50", 4, 2, 1, 0),
)


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
        "RSS is the sum over the `imgsearch index` process and its decode workers, sampled every 50 ms: a "
        "first run embeds with torch (no exports yet), a later run on new photos with the engine "
        f"`--precision auto` then takes ({r.get('later_engine', 'torch')}); the background exporter the "
        f"first run leaves behind is not counted in it (its own peak: {r.get('exporter_peak_rss_mb', '—')} "
        "MB, after the command returned).",
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


def raw_decode_section(s: Settings) -> list[str]:
    count, size, rounds = s.raw_decode
    r = run_script("raw_decode.py", "--count", str(count), "--size", size, "--rounds", str(rounds))
    names = {
        "jpeg": "JPEG, quality 95 (the reference)",
        "preview": "DNG with a full-size JPEG preview (that JPEG)",
        "demosaic": "DNG without a preview (half-size demosaic)",
    }
    lines = [
        "### Camera RAW: decode cost per photo",
        "",
        f"| {size} file ({r['kinds']['jpeg']['files']} distinct pictures, each as all three) | size "
        "| CPU per file: min / median | wall: min / median |",
        "| --- | --- | --- | --- |",
    ]
    for kind, k in r["kinds"].items():
        lines.append(
            f"| {names[kind]} | {k['file_mb']:.1f} MB | {k['cpu_ms_min']:.0f} / {k['cpu_ms_median']:.0f} ms "
            f"| {k['wall_ms_min']:.0f} / {k['wall_ms_median']:.0f} ms |"
        )
    steps = list(dict.fromkeys([*r["steps"]["preview"], *r["steps"]["demosaic"]]))
    lines += [
        "",
        f"`imgsearch.index.decode.decode_file` into ViT-B-32's input ({r['prep']}; no model runs), in a "
        "spawned process as the indexer's decode workers are; per file the least of "
        f"{r['rounds']} decodes, then the min and median over the files; CPU is the process's time on every "
        "thread (LibRaw's OpenMP ones included). Other processes took "
        f"{r['others_share']:.0%} of the CPU meanwhile. Where the time goes, the same calls one by one "
        "(`bench/raw_decode.py` `breakdown`; CPU ms, median over the files):",
        "",
        "| step | preview path | demosaic path |",
        "| --- | --- | --- |",
    ]
    for step in steps:
        cells = [r["steps"][path].get(step) for path in ("preview", "demosaic")]
        lines.append(f"| {step} | " + " | ".join("" if c is None else f"{c:.0f}" for c in cells) + " |")
    return lines


def raw_index_section(s: Settings) -> list[str]:
    lines = [
        "### Indexing camera RAW vs the pipeline limit",
        "",
        "| corpus | decode + preprocess, CPU per image (wall) | encoder only | pipeline limit "
        "| `index`, encoding phase | ratio (target ≥ 0.85): median (least) | others' CPU share, max "
        "| hashing phase before it | peak RSS, `index` + workers: first run / later runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for count, size, path, runs in s.raw_corpora:
        r = run_script(
            "index_rate.py",
            *("--model", s.model, "--count", str(count), "--size", size, "--raw", path, "--runs", str(runs)),
            *("--quiet-wait", str(s.raw_quiet_wait)),
        )
        ratios = ", ".join(f"{run['ratio']:.2f}" for run in r["runs"])
        lines.append(
            f"| {r['images']} DNGs {size} ({r['distinct']} distinct, {r['file_mb']:.1f} MB each), "
            f"{'full-size JPEG preview' if path == 'preview' else 'no preview: demosaic'} "
            f"| {r['decode_ms']:.0f} ms ({r['decode_wall_ms']:.0f} ms) | {r['encoder_img_s']:.1f} img/s "
            f"| {r['limit_img_s']:.2f} img/s | {r['index_img_s']:.2f} img/s "
            f"| {r['ratio']:.2f} ({r['ratio_min']:.2f}) of {len(r['runs'])} runs: {ratios}; "
            f"{verdict(r['ratio'], 0.85, False)} | {max(run['others_share'] for run in r['runs']):.0%} "
            f"| {r['hash_s']:.1f} s "
            f"| {r['peak_rss_mb']} MB / {r['later_peak_rss_mb']} MB |"
        )
    lines += [
        "",
        f"Numerics: {r['precision']}. As in the indexing section above (`bench/index_rate.py --raw PATH "
        "--runs N`), with DNGs made from the sample photos (`bench/common.py` `make_camera_files`: each a "
        "different photo or mirrored, with its own sensor noise; the index encodes every file, so none is a "
        "copy of another); decode core-seconds are the CPU time of a spawned process decoding "
        f"{r['decode_sample']} of them (after one untimed, as a worker imports its decoders once). "
        "Each run measures the limit and indexes into a new index, each of the two after waiting up to "
        f"{s.raw_quiet_wait} s for a second in which other processes took < 5% of the CPU; the row shows "
        "the median run, and the most of the CPU that other processes took during any. The "
        "hashing phase (every new file read and hashed in the parent, before the model loads) is outside the "
        "encoding phase.",
    ]
    return lines


def rescan_sniff_section(s: Settings) -> list[str]:
    r = run_script("rescan.py", "--count", str(s.rescan_extras), "--extras")
    x = r["extras"]
    target = s.rescan_extras == 100_000
    lines = [
        "### Re-scan with files the candidate rule must look at",
        "",
        "| folder | files | opened to sniff | `imgsearch index`, new process: median (least) of 3 | target |",
        "| --- | --- | --- | --- | --- |",
        f"| {r['files']:,} photos | {r['files']:,} | 0 | {r['seconds']:.2f} s ({r['seconds_min']:.2f} s) | "
        + (f"≤ 5 s: {verdict(r['seconds'], 5.0)} |" if target else "(not 100,000) |"),
        f"| the same + {x['sniffed']:,} files without an extension + {x['sidecars']:,} .json / .mov "
        f"sidecars | {x['files']:,} | {x['sniffed']:,} | {x['seconds']:.2f} s ({x['seconds_min']:.2f} s) | "
        + (f"≤ 5 s: {verdict(x['seconds'], 5.0)} |" if target else "(not 100,000) |"),
        "",
        "Both in one run of `bench/rescan.py --extras`, over the same index. The files without an "
        "extension are notes, zip archives, phone videos, JSON and random bytes, none a picture: the rule "
        "opens each on every scan and reads 32 bytes; the sidecars are named after photos and never opened. "
        "Setting up the "
        f"rule (Pillow's plugins, pillow-heif, rawpy imported; every signature check) costs "
        f"{x['setup_s']['rule'] - x['setup_s']['import']:.2f} s of each new process (`import "
        f"imgsearch.formats` alone: {x['setup_s']['import']:.2f} s), inside both figures.",
    ]
    return lines


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
            f"the first one {k['new image']['first_s']:.1f} s) "
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


def numerics_section(s: Settings) -> list[str]:
    count, size, index_runs = s.numerics_corpus
    rounds, batches, wait = s.numerics_rounds
    r = run_script(
        "numerics.py",
        *("--model", s.model, "--also", s.numerics_also, "--runs", str(rounds), "--batches", str(batches)),
        *("--count", str(count), "--size", size, "--index-runs", str(index_runs), "--max-wait", str(wait)),
    )
    target = r["min_cos_target"]
    lines = [
        "### Indexing numerics: bf16 against fp32, and the query vectors under each",
        "",
        f"CPU {r['cpu']}: `--precision auto` resolves to **{r['auto']}** here; torch's CPU kernels "
        f"{r['torch_cpu_capability']}, {r['threads']} threads. Both precisions loaded side by side through "
        "`Encoder.load` (fp32 weights, only the image tower cast), seeded random weights.",
        "",
        "| model | encoder only, fp32: median (best) | bf16: median (best) | bf16 / fp32: wall (median of "
        "the alternated rounds; range), CPU time | rounds: clean / run (others' CPU share, max) "
        "| cos bf16 vs fp32, sample photos: min / mean | cos, noise images: min / mean "
        f"| faithful: cos ≥ {target} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    context = []
    for m in r["models"]:
        sp, f = m["speed"], m["fidelity"]
        photos, noise = f["photos"], f["noise"]
        low, high = sp["ratio_range"]
        lines.append(
            f"| {m['model']} ({m['input']}, batches of {m['batch']}) "
            f"| {sp['fp32_img_s_median']:.1f} ({sp['fp32_img_s_best']:.1f}) img/s "
            f"| {sp['bf16_img_s_median']:.1f} ({sp['bf16_img_s_best']:.1f}) img/s "
            f"| {sp['ratio_median']:.2f} x ({low:.2f}–{high:.2f}), {sp['cpu_ratio']:.2f} x "
            f"| {sp['clean']} / {sp['rounds']}{'' if sp['used'] == 'clean' else ', **all used**'} "
            f"({sp['others_max']:.0%}) "
            f"| {photos['min']:.5f} / {photos['mean']:.5f} ({photos['n']} photos) "
            f"| {noise['min']:.5f} / {noise['mean']:.5f} ({noise['n']} images) "
            f"| {verdict(f['min'], target, False)} |"
        )
        context.append(
            f"{m['model']}: different photos' fp32 vectors are at cos {photos['between_photos_mean']:.3f} on "
            f"average (max {photos['between_photos_max']:.3f}), and {photos['same_nearest']} of "
            f"{photos['n']} photos keep their nearest other photo under bf16"
        )
    lines += [
        "",
        f"Rounds alternate the two encoders (fp32 first, then bf16 first), {batches} batches each after two "
        "warm-up batches (the `--also` models one batch fewer), through `Encoder.embed_pixels` as the "
        f"indexer calls it; each waits up to {wait} s for a quiet second, and rounds run until {rounds} are "
        "clean (other processes took < 10% of the CPU, from /proc/stat) or twice that many were run; the "
        "figures are from the clean rounds (from all where fewer than half were clean, as marked). CPU "
        "time: fp32 / bf16 CPU-seconds per image of the benchmark's own threads. What random weights "
        "leave room for: "
        + "; ".join(context)
        + ". Trained weights have other activations (outliers), so these cosines check the arithmetic path, "
        "not a trained model's fidelity.",
    ]
    first = r["models"][0]
    ix, text = first["index"], first["text"]
    lines += [
        "",
        f"`imgsearch index` of {ix['images']} photo-like JPEGs {ix['size']} into a new index, "
        f"{first['model']}, `--precision` fp32 and bf16 alternated, {ix['runs']} run(s) each, each after "
        "waiting for a quiet second (medians; the ONNX text export off):",
        "",
        "| `--precision` | `Library.index`, encoding phase | `imgsearch index`, new process: wall "
        "| its peak RSS with workers | others' CPU share during it, max | the index records |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in ("fp32", "bf16"):
        lines.append(
            f"| {p} | {ix[p + '_rate']:.1f} img/s | {ix[p + '_cli_s']:.1f} s | {ix[p + '_cli_mb']:.0f} MB "
            f"| {ix[p + '_others']:.0%} | {ix['recorded_numerics'][p]} |"
        )
    stored = ix["stored_bf16_vs_fp32"]
    if text["bitwise_equal"]:
        equal = "are bitwise equal to those of the fp32 one (the text tower stays fp32)"
    else:
        equal = f"**differ** from the fp32 one's (max abs difference {text['max_abs_diff']:.2e})"
    onnx, checked = text.get("onnx_vs_torch_fp32"), text.get("export_verified") or {}
    if onnx:
        export = (
            f"gives cos ≥ {onnx['min']:.7f} to torch fp32 on them, batched and alone (its own check: "
            f"{checked.get('min_cos')} on {checked.get('probes')} probes): "
            f"{verdict(onnx['min'], target, False)}"
        )
    else:
        export = "was not made (unsupported for this model)"
    lines += [
        "",
        f"bf16 / fp32, encoding phase: {ix['rate_ratio']:.2f} x. The vectors the two indexes stored for the "
        f"same {stored['n']} files: cos min {stored['min']:.5f}, mean {stored['mean']:.5f} "
        f"({verdict(stored['min'], target, False)}).",
        "",
        f"Query vectors: the text vectors ({text['texts']} texts) of the encoder loaded with `--precision "
        f"bf16` {equal}; the ONNX text export made from the bf16-loaded encoder, as `index --precision bf16` "
        f"makes it, {export}.",
    ]
    return lines


def ray_section(s: Settings) -> list[str]:
    count, size, runs, big_count, big_size = s.ray
    r = run_script(
        "ray_index.py",
        "--model",
        s.model,
        "--count",
        str(count),
        "--size",
        size,
        "--runs",
        str(runs),
        "--big-count",
        str(big_count),
        "--big-size",
        big_size,
    )

    def rates(key: str) -> str:
        return " / ".join(f"{v:.1f}" for v in r[key])

    per_node = max(r["ray_img_s"])
    return [
        "### Indexing on Ray (`index --ray`) against the local path",
        "",
        "| corpus | local, encoding phase, img/s per run "
        "| Ray (a local cluster of this machine), img/s per run "
        "| Ray / local, median (least) (target ≥ 0.8) | start-up before the first commit, local / Ray, s "
        "| whole call, local / Ray, s (first run) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {r['images']} distinct JPEGs {r['size']} | {rates('local_img_s')} | {rates('ray_img_s')} "
        f"| {r['ratio_median']:.2f} ({r['ratio_min']:.2f}), {verdict(r['ratio_median'], 0.8, False)} "
        f"| {statistics.median(r['local_startup_s']):.1f} / {statistics.median(r['ray_startup_s']):.1f} "
        f"| {r['local_wall_s'][0]:.1f} / {r['ray_wall_s'][0]:.1f} |",
        "",
        "| driver's commit rate alone (synthetic vectors, real Indexer + SQLite + FAISS) | nodes one driver "
        "feeds, on paper, at this machine's Ray rate | object store peak, Ray run over 12 MP photos "
        "| `ray.init` of a local cluster |",
        "| --- | --- | --- | --- |",
        f"| {r['commit_rows_s']:,.0f} rows/s | {r['commit_rows_s'] / per_node:,.0f} "
        f"| {r['store_peak_mb']:.1f} MB ({r['big_images']} photos {r['big_size']}, "
        f"{r['big_img_s']:.1f} img/s) "
        f"| {r['ray_init_s']:.1f} s |",
        "",
        "Both paths run `Library.index` into a new index folder, alternately; the encoding phase starts when "
        "the model starts loading (on Ray: the actor's start and the model description task are inside it) "
        "and ends at the last commit. The cluster is this machine (one CPU slot per core for decode tasks "
        "and one for the encoder actor, as `--ray local` makes it), started once before the runs. The "
        "object store peak sums every node's plasma bytes in use, sampled every 50 ms. Start-up is the "
        "median time from the model load's start to the first commit (on Ray: a worker's torch import and "
        "model load for the model's description, then the actor's, and Ray Data's start; the first commit "
        "there is at 64 vectors, at 16 locally).",
    ]


#: Today's cold-query figures (another machine), for the query rows of the rclip table.
QUERY_BEFORE_S = {"text_query": 0.44, "image_query": 0.38, "help": 0.07}


def engines_section(s: Settings) -> list[str]:
    r = run_script(
        "engines.py", "--model", s.model or "ViT-B-32", *(["--photos", "8"] if not s.model else [])
    )
    lines = [
        "### Image engines on this CPU: torch against ONNX Runtime",
        "",
        "| engine | encoder only, img/s (batch of 16, fastest of alternated rounds) "
        "| min cosine to torch fp32, photo-like images | exporter's own measurement, img/s |",
        "| --- | --- | --- | --- |",
    ]
    measured = r["exporter_rates"]["img_per_s"]
    for name, rate in r["img_per_s"].items():
        lines.append(
            f"| {name} | {rate:.1f} | {r['min_cos_to_torch_fp32'][name]:.6f} | {measured.get(name, '—')} |"
        )
    startup = r["exporter_rates"]["startup_s"]
    check = r["int8_check"] or {}
    verdict_int8 = (
        f"kept (min cosine {check['verified']['min_cos']} on the exporter's probes)"
        if check.get("supported")
        else f"dropped: {check.get('reason')}"
    )
    choices = ", ".join(f"{int(n):,} new images: {name}" for n, name in r["auto_choice"].items())
    lines += [
        "",
        f"Model {r['model']}, random weights, {r['photos']} photo-like 1024x768 JPEGs. The int8 variant: "
        f"{verdict_int8}; ≥ 0.999 is required. Start-up the exporter measured: torch {startup['torch']} s "
        f"(import and model load), ONNX Runtime {startup['onnxruntime']} s (session). What `--precision "
        f"auto` takes here: {choices}. The exporter (`python -m imgsearch.model.exporter MODEL`, a new "
        f"process) took {r['export_and_measure_s']} s for the exports and the measurements, waited for "
        "here (at nice 10, as always; after a command nobody waits for it). Random weights say "
        "nothing about int8's fidelity on trained weights: the exporter checks it on each model's own.",
    ]
    return lines


def rclip_section(s: Settings) -> list[str]:
    runs, quick = s.rclip
    quick_flag = ["--quick"] if quick else []
    r = run_script("rclip_anchor.py", "--model", s.model, "--runs", str(runs), *quick_flag)
    rows, corpora = r["rows"], r["corpora"]

    def cell(m: dict) -> str:
        return f"{m['min_s']:.2f} / {m['median_s']:.2f} s"

    def line(label: str, ours: dict, theirs: dict, goal: str) -> str:
        return (
            f"| {label} | {cell(ours)} | {cell(theirs)} | {ours['median_s'] / theirs['median_s']:.2f} "
            f"| {ours['peak_rss_mb']} / {theirs['peak_rss_mb']} MB | {goal} |"
        )

    lines = [
        f"### imgsearch beside {r['rclip_version']} (the anchor), measured in one run",
        "",
        "| row | imgsearch: min / median | rclip: min / median | imgsearch / rclip, medians "
        "| peak RSS, process tree: imgsearch / rclip | goal |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, corpus in (("first_index_small", "small"), ("first_index_large", "large")):
        row = rows[key]
        for variant, what in (("imgsearch_cold", "(a) nothing cached"), ("imgsearch", "(b) exports cached")):
            ratio = row[variant]["median_s"] / row["rclip"]["median_s"]
            goal = f"≤ 0.8 x rclip: {verdict(ratio, 0.8)}" if corpus == "small" else ""
            label = f"first `index`, {corpus} corpus ({corpora[corpus]}), imgsearch {what}"
            lines.append(line(label, row[variant], row["rclip"], goal))
    row = rows["reindex_small"]
    lines.append(line("re-index of the small corpus, unchanged", row["imgsearch"], row["rclip"], ""))
    row = rows["three_new_into_10k"]
    goal = f"≤ 1.5 s: {verdict(row['imgsearch']['median_s'], 1.5)}"
    lines.append(line("three new photos into a 10k index", row["imgsearch"], row["rclip"], goal))
    for key, label in (
        ("text_query", f"cold text query, {r['measured']['text_query']['imgsearch']}"),
        ("image_query", "cold image query (a photo not in the index)"),
        ("help", "`--help`"),
    ):
        row = rows[key]
        before = f"no worse than before ({QUERY_BEFORE_S[key]} s, another machine)"
        lines.append(line(label, row["imgsearch"], row["rclip"], before))

    first = {
        f"{corpus} {variant}": rows[f"first_index_{corpus}"][tool]
        for corpus in ("small", "large")
        for variant, tool in (("(a)", "imgsearch_cold"), ("(b)", "imgsearch"), ("rclip", "rclip"))
    }

    def peak(name: str, m: dict) -> str:
        alone = m.get("peak_rss_mb_foreground", m["peak_rss_mb"])
        return f"{name} {m['peak_rss_mb']} MB" + (f" ({alone} MB)" if alone != m["peak_rss_mb"] else "")

    ours_peak = max(m["peak_rss_mb"] for name, m in first.items() if "rclip" not in name)
    background = rows["first_index_small"]["imgsearch_cold"].get("background_export_s") or []
    background += rows["first_index_large"]["imgsearch_cold"].get("background_export_s") or []
    done = [b for b in background if b is not None]
    exported = (
        f"median {statistics.median(done):.0f} s ({', '.join(f'{b:.0f}' for b in done)} s), at nice 10, "
        "waited for before the next run"
        if done
        else "none ran"
    )
    warm_rows = [rows[k]["imgsearch"].get("background_export_s") for k in rows]
    others = max(m["others_share_max"] for row in rows.values() for m in row.values())
    setup = r["rclip_setup"]
    lines += [
        "",
        "Peak memory, first index (RSS summed over the process and all its descendants, every 20 ms; in "
        "brackets where it differs: without imgsearch's background exporter, a child until `index` exits): "
        + ", ".join(peak(name, m) for name, m in first.items())
        + f"; imgsearch's largest, target ≤ 1.2 GB (1,229 MB): {verdict(ours_peak, 1229)}.",
        "",
        f"imgsearch's background export after the command returned (row (a): a user's first run with the "
        f"model): {exported}; rows with the exports cached: "
        + ("none started." if not any(warm_rows) else "**one started** (see the JSON).")
        + f" Other processes took at most {others:.0%} of the CPUs during any timed run.",
        "",
        f"`bench/rclip_anchor.py`: runs alternate (imgsearch, rclip, imgsearch, ...), {r['runs']} of each "
        "per row after one untimed run of each (page cache), each a new process timed from spawn to exit. "
        f"Models: imgsearch {r['models']['imgsearch']}; rclip {r['models']['rclip']}. rclip's model takes "
        "256 px (65 tokens per image; ViT-B-32 at 224 px: 50), so its image tower does about 1.3 x the work "
        "per photo. The query rows run on the 10k indexes; before-figures are imgsearch's from "
        f"`bench/cold_query.py` on another machine. Corpora: small {corpora['small']}, large "
        f"{corpora['large']} (the copies in subfolders; both tools look a copy up by its hash), 10k library "
        f"{corpora['library']}. What each row ran:",
        "",
    ]
    for key, tools in r["measured"].items():
        if key == "first_index_large":
            lines.append(f"- {key}: as first_index_small, over the large corpus")
            continue
        lines.append(f"- {key}: " + "; ".join(f"{tool}: {what}" for tool, what in tools.items()))
    lines += [
        "",
        f"rclip setup: `pip install rclip==3.3.0` into its own venv; its files "
        f"({', '.join(setup['datadir_files'])}; "
        + ", ".join(f"{name} {mb} MB" for name, mb in setup["model_mb"].items())
        + ") made by our exporter, cos to torch "
        f"≥ {min(setup['export_check_cos_min'].values())}; "
        f"{setup['env']}. {setup['download_check']}. CPU: {r['cpu']}.",
    ]
    return lines


def catalog_section(s: Settings) -> list[str]:
    library, rows, batch, runs, rescans = s.catalog
    r = run_script(
        "catalog_backends.py",
        *("--model", s.model, "--library", str(library), "--insert-rows", str(rows)),
        *("--batch", str(batch), "--runs", str(runs), "--rescans", str(rescans)),
    )
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    backends = [name for name in names if name in r["rescan"]]
    server = r.get("server") or {}
    version = server.get("server_version", "").split(" ")[0]
    heading = " | ".join(names[b] + (f" {version}" if b == "postgresql" else "") for b in backends)
    both = len(backends) == 2

    def row(
        label: str, cell: Callable[[str], str], ratio: Callable[[str], float] | None, goal: str = ""
    ) -> str:
        cells = " | ".join(cell(b) for b in backends)
        versus = f"{ratio('postgresql') / ratio('sqlite'):.2f}" if both and ratio else ""
        return f"| {label} | {cells} | {versus} | {goal} |"

    def seconds(m: dict) -> str:
        return f"{m['median_s']:.2f} s ({m['min_s']:.2f} s)"

    rescan, query, insert = r["rescan"], r["query"], r["insert"]
    at_target = library == 100_000
    goal = (
        "≤ 5 s: " + " / ".join(verdict(rescan[b]["median_s"], 5.0) for b in backends)
        if at_target
        else "(not 100,000)"
    )
    steps = ["imports", "open index", "load text encoder", "encode text", "search", "metadata join"]
    lines = [
        "### Catalog on SQLite and on PostgreSQL (issue 13)",
        "",
        f"| row | {heading} | PostgreSQL / SQLite | target |",
        "| --- |" + " --- |" * len(backends) + " --- | --- |",
        row(
            f"re-scan of {library:,} unchanged files: `imgsearch index`, new process, median (least) of "
            f"{r['rescan_runs']}",
            lambda b: seconds(rescan[b]),
            lambda b: rescan[b]["median_s"],
            goal,
        ),
        row(
            f'cold text query at {library:,}: `imgsearch query "a red apple on a table"`, new process, '
            f"median (least) of {r['runs']}",
            lambda b: seconds(query[b]),
            lambda b: query[b]["median_s"],
        ),
        row("its peak RSS", lambda b: f"{query[b]['peak_rss_mb']} MB", lambda b: query[b]["peak_rss_mb"]),
        row(
            "its steps, ms: " + " / ".join(steps),
            lambda b: " / ".join(f"{query[b]['breakdown'][k] * 1000:.0f}" for k in steps),
            lambda b: sum(query[b]["breakdown"][k] for k in steps),
        ),
        row(
            f"first index of {insert['sqlite']['rows']:,} rows: Catalog.write() of {batch} add_image each "
            "+ VectorIndex.apply, rows/s (s)",
            lambda b: f"{insert[b]['rows_per_s']:,.0f} ({insert[b]['insert_s']:.0f} s)",
            lambda b: insert[b]["insert_s"],
        ),
        row(
            "the same, first / last segment of rows, rows/s",
            lambda b: " / ".join(f"{insert[b]['segments_rows_per_s'][k]:,.0f}" for k in (0, -1)),
            None,
        ),
        row(
            "the writer's own CPU per row (the server's not counted)",
            lambda b: f"{insert[b]['client_cpu_ms_per_row']:.2f} ms",
            lambda b: insert[b]["client_cpu_ms_per_row"],
        ),
        row(
            "then fit (FAISS) + save",
            lambda b: f"{insert[b]['fit_s']:.1f} + {insert[b]['save_s']:.1f} s ({insert[b]['faiss']})",
            None,
        ),
        row("first index in all", lambda b: f"{insert[b]['total_s']:.0f} s", lambda b: insert[b]["total_s"]),
        row(
            "catalog on disk per image (SQLite: file + WAL; PostgreSQL: its tables, with TOAST and indexes)",
            lambda b: f"{insert[b]['catalog_bytes'] / insert[b]['rows']:,.0f} bytes",
            lambda b: insert[b]["catalog_bytes"],
        ),
        row(
            "FAISS file per image",
            lambda b: f"{insert[b]['faiss_bytes'] / insert[b]['rows']:,.0f} bytes",
            lambda b: insert[b]["faiss_bytes"],
        ),
    ]
    settings = ", ".join(f"{k} {v}" for k, v in server.items() if k != "server_version")
    before, after = (r[k].split("load average:")[1].strip() for k in ("uptime_before", "uptime_after"))
    loaded = max(float(x) for x in f"{before}, {after}".split(",")) > 1
    if not both:
        lines += ["", "PostgreSQL is not installed on this machine: its column was not measured."]
    else:
        pg = insert["postgresql"]["parts"]
        lite = insert["sqlite"]["parts"]
        n = insert["postgresql"]["rows"]
        torch_loaded = any(query[b]["breakdown"]["torch imported"] for b in backends)
        lines += [
            "",
            "`bench/catalog_backends.py` (its docstring has the method). PostgreSQL "
            f"{server['server_version']}, a throwaway cluster of the run's own on 127.0.0.1 (TCP, "
            f"scram-sha-256 password), at its defaults: {settings}: every commit waits for its WAL flush, "
            "real durability costs. SQLite as imgsearch opens it: WAL, synchronous=NORMAL. Same disk for "
            "both. Each row ran on both backends in the same run, alternating; the insert filled both "
            "catalogs at once in alternating segments of 20,000 rows. The query processes loaded "
            + ("**torch**" if torch_loaded else "no torch (the ONNX text export)")
            + "; on PostgreSQL they import psycopg (inside 'open index'). Load averages (1, 5, 15 min) "
            f"from `uptime` before the run: {before}; after: {after}"
            + (
                " (above 1: other sessions' work shared the cores, so absolute figures are high; the "
                "side-by-side ratios are what to compare)."
                if loaded
                else "."
            ),
            "",
            "1-minute load average as each row started: "
            + ", ".join(f"{row} {load[0]:.1f}" for row, load in r["load"].items())
            + ".",
            "",
            "Where the bytes are, per image: SQLite file "
            f"{lite['file'] / n:,.0f}, WAL {lite['wal'] / n:,.0f}; PostgreSQL images heap "
            f"{pg['images heap'] / n:,.0f}, its TOAST table {pg['images TOAST'] / n:,.0f}, its indexes "
            f"{pg['images indexes'] / n:,.0f} (the vector column itself: "
            f"{pg['vector bytes stored (pg_column_size)'] / n:,.0f} bytes stored per row).",
        ]
    if insert["sqlite"]["rows"] < 1_000_000:
        minutes = {b: 1_000_000 / insert[b]["rows_per_s"] / 60 for b in backends}
        lines += [
            "",
            "The issue asks for the insert at 1,000,000 rows; this run inserts "
            f"{insert['sqlite']['rows']:,}: at the rates measured here 1M would take about "
            + " + ".join(f"{minutes[b]:.0f} min ({names[b]})" for b in backends)
            + " of inserting alone (extrapolated linearly; compare the first and last segments' rates)"
            + (", more than the ~15 minutes this section is given" if sum(minutes.values()) > 15 else "")
            + ". The rate is what matters.",
        ]
    return lines


def families_section(s: Settings) -> list[str]:
    """Every model family at full size with random weights (bench/families.py); its own machine line."""
    import families

    names, photos, big, runs, wait = s.families
    args = ["--photos", str(photos), "--big-photos", str(big), "--runs", str(runs), "--max-wait", str(wait)]
    r = run_script("families.py", *(["--families", names] if names else []), *args)
    return [*families.report(r), families.NOTE]


SECTIONS: dict[str, Callable[[Settings], list[str]]] = {
    "index": index_section,
    "rescan": rescan_section,
    "query": query_section,
    "search": search_section,
    "serve": serve_section,
    "numerics": numerics_section,
    "raw_decode": raw_decode_section,
    "raw_index": raw_index_section,
    "rescan_sniff": rescan_sniff_section,
    "ray": ray_section,
    "rclip": rclip_section,
    "engines": engines_section,
    "catalog": catalog_section,
    "families": families_section,
}


def render(s: Settings, name: str, command: str) -> str:
    """One section between its own markers, so that `--only` rewrites just the sections it ran."""
    from common import machine

    started = time.perf_counter()
    lines = SECTIONS[name](s)
    minutes = (time.perf_counter() - started) / 60
    weights = "speed does not depend on the weights" + (", the cosines may" if name == "numerics" else "")
    caption = (
        f"`{command} --only {name}`, {datetime.date.today().isoformat()}, {machine()}, model {s.model} "
        f"with random weights ({weights}); {minutes:.0f} min."
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
