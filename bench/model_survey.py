#!/usr/bin/env python
"""CPU speed survey of open_clip architectures for imgsearch, joined with published quality.

Speed does not depend on the weights, so every model is built with random weights
(``open_clip.create_model_and_transforms(name, pretrained=None)``); nothing is downloaded.
Each architecture is measured in a fresh subprocess so memory is freed between models.
The quality columns are copied from published result files (see PUBLISHED / SOURCES below);
they are NOT measured here.

Usage (from the repo root):
    python bench/model_survey.py                      # measure all candidates, print table
    python bench/model_survey.py --json out.json      # also save raw measurements
    python bench/model_survey.py --from-json out.json # re-print the table without measuring
    python bench/model_survey.py --models ViT-B-32 MobileCLIP2-S0
Runs single-process, serially, with torch.set_num_threads(THREADS) (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREADS = int(os.environ.get("SURVEY_THREADS", "2"))
BATCH = 16

# name -> per-model options.
#   image_only: skip the text encoder; cap_s: target seconds of timed image batches;
#   bf16_batch: batch for the bf16 image timing. bf16 has no native support on AVX2-only
#   CPUs: ViTs run ~7x slower than fp32 and MobileCLIP convs ~80x slower, so ViT-L-14 and the
#   MobileCLIP models use a small bf16 batch to keep the whole survey under ~25 minutes.
CANDIDATES = {
    "ViT-B-32": {},
    "ViT-B-32-256": {},
    "ViT-B-16": {},
    "MobileCLIP2-S0": {"reparam": True, "bf16_batch": 2},
    "MobileCLIP2-S2": {"reparam": True, "bf16_batch": 2},
    "MobileCLIP-S1": {"reparam": True, "bf16_batch": 2},
    "MobileCLIP-S2": {"reparam": True, "bf16_batch": 2},
    "ViT-B-16-SigLIP2": {},
    "ViT-B-16-SigLIP": {},
    "ViT-L-14": {"image_only": True, "cap_s": 20.0, "warmup": 1, "bf16_batch": 2},
}

# ---------------------------------------------------------------------------------------
# Published quality numbers (fractions, as in the source files). Not measured here.
# coco_r5 / flickr_r5 = text->image ("image retrieval") Recall@5; in1k = ImageNet-1k
# zero-shot top-1. src: key into SOURCES.
SOURCES = {
    "oc": "mlfoundations/open_clip docs/openclip_retrieval_results.csv (COCO/Flickr 'image retr. R@5') "
    "and docs/openclip_results.csv ('ImageNet 1k'), commit f862f86cd92123615a8695ce8bcb6ecc066af452",
    "apple": "apple/ml-mobileclip results/mobileclip_s1.jsonl, mobileclip_s2.jsonl (commit a2e4041a), "
    "mobileclip2_s0.jsonl, mobileclip2_s2.jsonl (commit e15d36ef): keys "
    "retrieval/mscoco_2014_5k_test_image_text_retrieval, retrieval/flickr_1k_test_image_text_retrieval "
    "(image_retrieval_recall@5) and imagenet1k (acc1). Apple's own eval, not in open_clip's CSVs",
    "g": "google-research/big_vision big_vision/configs/proj/image_text/README_siglip2.md (B/16, 224): "
    "INet 0-shot 78.2; it gives COCO T->I R@1 only (52.1), no R@5 and no Flickr",
}
# (arch, tag): (name in source, coco_r5, flickr_r5, in1k, src)
PUBLISHED = {
    ("ViT-B-32", "openai"): ("ViT-B-32", 0.5594, 0.8356, 0.6332, "oc"),
    ("ViT-B-32", "laion2b_s34b_b79k"): ("ViT-B-32", 0.6543, 0.8838, 0.6656, "oc"),
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): ("ViT-B-32", 0.6235, 0.8492, 0.6917, "oc"),
    ("ViT-B-32", "metaclip_fullcc"): ("ViT-B-32-quickgelu", 0.6411, 0.8766, 0.6766, "oc"),
    ("ViT-B-32-256", "datacomp_s34b_b86k"): ("ViT-B-32-256", 0.6543, 0.8722, 0.7281, "oc"),
    ("ViT-B-16", "openai"): ("ViT-B-16", 0.5842, 0.8572, 0.6834, "oc"),
    ("ViT-B-16", "laion2b_s34b_b88k"): ("ViT-B-16", 0.6770, 0.9038, 0.7023, "oc"),
    ("ViT-B-16", "datacomp_xl_s13b_b90k"): ("ViT-B-16", 0.6595, 0.8834, 0.7349, "oc"),
    ("ViT-B-16", "metaclip_fullcc"): ("ViT-B-16-quickgelu", 0.6718, 0.9082, 0.7212, "oc"),
    ("ViT-B-16", "dfn2b"): ("ViT-B-16", 0.6924, 0.8982, 0.7624, "oc"),
    ("MobileCLIP2-S0", "dfndr2b"): ("mobileclip2_s0", 0.6996, 0.8986, 0.7153, "apple"),
    ("MobileCLIP2-S2", "dfndr2b"): ("mobileclip2_s2", 0.7375, 0.9294, 0.7724, "apple"),
    ("MobileCLIP-S1", "datacompdr"): ("mobileclip_s1", 0.6887, 0.9130, 0.7262, "apple"),
    ("MobileCLIP-S2", "datacompdr"): ("mobileclip_s2", 0.7005, 0.9230, 0.7444, "apple"),
    ("ViT-B-16-SigLIP2", "webli"): ("SigLIP 2 B/16 224", None, None, 0.782, "g"),
    ("ViT-B-16-SigLIP", "webli"): ("ViT-B-16-SigLIP", 0.7244, 0.9230, 0.7604, "oc"),
    ("ViT-L-14", "openai"): ("ViT-L-14", 0.6106, 0.8724, 0.7554, "oc"),
    ("ViT-L-14", "laion2b_s32b_b82k"): ("ViT-L-14", 0.7108, 0.9286, 0.7525, "oc"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): ("ViT-L-14", 0.7003, 0.9174, 0.7921, "oc"),
    ("ViT-L-14", "dfn2b"): ("ViT-L-14-quickgelu", 0.7381, 0.9280, 0.8141, "oc"),
}


# ---------------------------------------------------------------------------------------
def _smooth_images(n, seed=0):
    """Smooth random 'photo-like' PIL images (low-frequency noise + gradients), 640x480."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.functional import to_pil_image

    g = torch.Generator().manual_seed(seed)
    imgs = []
    for _i in range(n):
        coarse = torch.rand(1, 3, 6, 8, generator=g)
        fine = torch.rand(1, 3, 48, 64, generator=g) * 0.15
        img = F.interpolate(coarse, size=(480, 640), mode="bicubic", align_corners=False)
        img = img + F.interpolate(fine, size=(480, 640), mode="bilinear", align_corners=False)
        yy = torch.linspace(0, 1, 480).view(1, 1, 480, 1)
        img = img * 0.8 + 0.2 * yy  # vertical "sky/ground" gradient
        imgs.append(to_pil_image(img.clamp(0, 1)[0]))
    return imgs


def _real_photos(n):
    """Use JPEGs from sample_photos/ if the repo has any."""
    from PIL import Image

    here = os.path.dirname(os.path.abspath(__file__))
    for d in (
        os.path.join(here, "..", "sample_photos"),
        os.path.join(os.getcwd(), "sample_photos"),
        "/work/main/sample_photos",
    ):
        if os.path.isdir(d):
            files = sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg")))
            if files:
                out = [Image.open(os.path.join(d, f)).convert("RGB") for f in files[:n]]
                while len(out) < n:
                    out += out[: n - len(out)]
                return out, f"{min(len(files), n)} JPEGs from {os.path.normpath(d)}"
    return None, None


def _cpu_snapshot():
    """(machine busy seconds, own-process cpu seconds, wall) for contention accounting."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def _foreign_frac(a, b):
    """Share of the machine's total CPU capacity used by OTHER processes between a and b."""
    wall = b[2] - a[2]
    if wall <= 0:
        return 0.0
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (wall * (os.cpu_count() or 1)))


def _wait_for_quiet(threshold, max_wait, window=3.0):
    """Wait until other processes use < threshold of the CPUs (measured over `window` s)."""
    t0 = time.perf_counter()
    while True:
        a = _cpu_snapshot()
        time.sleep(window)
        f = _foreign_frac(a, _cpu_snapshot())
        if f < threshold or time.perf_counter() - t0 >= max_wait:
            return f, time.perf_counter() - t0


CLEAN = 0.05  # a timed section counts as clean if other processes used < 5% of the CPUs


def _time_batches(fn, x, warmup, cap_s, max_s):
    """Warm up, then time whole batches. Each batch is checked for CPU contention from other
    processes; timing stops once the CLEAN batches add up to cap_s, or after max_s seconds.
    Returns (times of clean batches, or of all batches if none was clean; n clean; n total;
    mean foreign share; first output)."""
    out = None
    for _ in range(warmup):
        out = fn(x)
    times, clean, foreign = [], [], []
    t_start = time.perf_counter()
    while True:
        a = _cpu_snapshot()
        o = fn(x)
        b = _cpu_snapshot()
        dt = b[2] - a[2]
        f = _foreign_frac(a, b)
        times.append(dt)
        foreign.append(f)
        if f < CLEAN:
            clean.append(dt)
        if out is None:
            out = o
        if sum(clean) >= cap_s or time.perf_counter() - t_start >= max_s:
            break
    return (clean or times), len(clean), len(times), statistics.mean(foreign), out


def worker(name):
    import open_clip
    import torch

    torch.set_num_threads(THREADS)
    opts = CANDIDATES.get(name, {})
    res = {"name": name, "threads": THREADS, "torch": torch.__version__, "open_clip": open_clip.__version__}
    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    res["build_s"] = round(time.perf_counter() - t0, 2)
    res["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    res["visual_params_m"] = sum(p.numel() for p in model.visual.parameters()) / 1e6
    pcfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = pcfg.get("size") or getattr(model.visual, "image_size", None)
    res["input_px"] = list(size) if isinstance(size, (tuple, list)) else size

    imgs, src = _real_photos(BATCH)
    if imgs is None:
        imgs, src = _smooth_images(BATCH), "smooth random 640x480 images (no sample_photos JPEGs)"
    res["inputs"] = src
    x = torch.stack([preprocess(im) for im in imgs])
    res["input_px"] = list(x.shape[-2:])

    snap0 = _cpu_snapshot()
    cap = float(opts.get("cap_s", 8.0))
    warm = int(opts.get("warmup", 2))
    bf16_batch = int(opts.get("bf16_batch", BATCH))

    with torch.inference_mode():
        if opts.get("reparam"):
            # MobileCLIP/FastViT blocks are trained multi-branch; deployment speed is with the
            # branches fused. Measure the un-fused fp32 speed too so the difference is visible.
            def enc(t):
                return model.encode_image(t)

            times, nc, nt, fr, _ = _time_batches(enc, x, 1, cap / 2, 3 * cap)
            res["img_s_fp32_unfused"] = BATCH / statistics.median(times)
            res["img_unfused_clean_batches"] = f"{nc}/{nt}"
            from timm.utils.model import reparameterize_model

            reparameterize_model(model, inplace=True)
            model.eval()
            res["reparameterized"] = True
            res["params_m_fused"] = sum(p.numel() for p in model.parameters()) / 1e6

        # ---- image encoder fp32
        def enc(t):
            return model.encode_image(t)

        times, nc, nt, fr, emb32 = _time_batches(enc, x, warm, cap, max(60.0, 4 * cap))
        res["img_s_fp32"] = BATCH / statistics.median(times)
        res["img_fp32_clean_batches"] = f"{nc}/{nt}"
        res["img_fp32_foreign_mean"] = fr
        emb32 = torch.nn.functional.normalize(emb32.float(), dim=-1)

        # ---- text encoder fp32 (one query)
        tok = None
        if not opts.get("image_only"):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                tokenizer = open_clip.get_tokenizer(name)
                tok = tokenizer(["a photo of a dog playing on the beach at sunset"])
                res["text_tokens"] = "real tokenizer"
            except Exception as e:  # SigLIP tokenizers live on the HF hub
                ctx = getattr(model, "context_length", None) or model.text.context_length
                vocab = getattr(model, "vocab_size", None) or model.text.vocab_size
                tok = torch.randint(1, vocab - 1, (1, ctx), generator=torch.Generator().manual_seed(0))
                res["text_tokens"] = f"random ids shape {tuple(tok.shape)} ({type(e).__name__})"
            res["text_ctx"] = int(tok.shape[-1])

            def tenc(t):
                return model.encode_text(t)

            def lat(n_warm=3, n=20, max_s=30.0, block=5):
                # median over n calls made in blocks of `block`; blocks during which other
                # processes used the CPU are discarded (kept only if no block was clean)
                for _ in range(n_warm):
                    out = tenc(tok)
                clean, every = [], []
                t_start = time.perf_counter()
                while len(clean) < n and (not every or time.perf_counter() - t_start < max_s):
                    a = _cpu_snapshot()
                    ts = []
                    for _ in range(block):
                        t = time.perf_counter()
                        tenc(tok)
                        ts.append(time.perf_counter() - t)
                    every += ts
                    if _foreign_frac(a, _cpu_snapshot()) < CLEAN:
                        clean += ts
                return statistics.median(clean or every) * 1000, out, f"{len(clean)}/{len(every)}"

            res["text_ms_fp32"], t32, res["text_reps_fp32"] = lat()
            t32 = torch.nn.functional.normalize(t32.float(), dim=-1)

        # ---- bf16
        model.to(torch.bfloat16)
        xb = x[:bf16_batch].to(torch.bfloat16)
        # bf16 is slow on CPUs without native bf16: one warm-up batch, then batches until
        # one is clean (or cap_s has passed)
        times, nc, nt, fr, embb = _time_batches(enc, xb, 1, 1e-9, cap)
        res["img_s_bf16"] = bf16_batch / statistics.median(times)
        res["img_bf16_clean_batches"] = f"{nc}/{nt}"
        res["bf16_batch"] = bf16_batch
        embb = torch.nn.functional.normalize(embb.float(), dim=-1)
        cos = (embb * emb32[:bf16_batch]).sum(-1)
        res["min_cos_img_bf16"] = float(cos.min())
        res["n_cos_img"] = int(cos.numel())
        if tok is not None:
            res["text_ms_bf16"], tb, res["text_reps_bf16"] = lat(n_warm=1)
            tb = torch.nn.functional.normalize(tb.float(), dim=-1)
            res["cos_text_bf16"] = float((tb * t32).sum(-1).min())
    res["foreign_cpu"] = _foreign_frac(snap0, _cpu_snapshot())
    res["loadavg_end"] = os.getloadavg()
    res["total_s"] = round(time.perf_counter() - t0, 1)
    print("RESULT " + json.dumps(res), flush=True)


def interleave(names, rounds, per_s):
    """Head-to-head fp32 image throughput: all models loaded in ONE process and timed in
    alternation (round-robin), so slow drifts of the machine's speed hit every model alike."""
    import open_clip
    import torch
    from timm.utils.model import reparameterize_model

    torch.set_num_threads(THREADS)
    imgs, src = _real_photos(BATCH)
    if imgs is None:
        imgs, src = _smooth_images(BATCH), "smooth random images"
    models = {}
    with torch.inference_mode():
        for n in names:
            m, _, pre = open_clip.create_model_and_transforms(n, pretrained=None)
            m.eval()
            if CANDIDATES.get(n, {}).get("reparam"):
                reparameterize_model(m, inplace=True)
                m.eval()
            x = torch.stack([pre(im) for im in imgs])
            for _ in range(2):
                m.encode_image(x)
            models[n] = (m, x)
        out = {n: [] for n in names}
        for r in range(rounds):
            for n in names:
                m, x = models[n]
                times, nc, nt, _fr, _ = _time_batches(m.encode_image, x, 0, per_s, 4 * per_s)
                out[n].append(BATCH / statistics.median(times))
                print(
                    f"[round {r + 1}] {n}: {out[n][-1]:.2f} img/s (clean {nc}/{nt})",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"Interleaved fp32 image throughput, batch {BATCH}, {THREADS} threads, inputs: {src}")
    print("| model | img/s per round | median |\n|---|---|---|")
    for n in names:
        print(f"| {n} | {', '.join(f'{v:.2f}' for v in out[n])} | {statistics.median(out[n]):.2f} |")


# ---------------------------------------------------------------------------------------
def _f(v, fmt):
    return "n/a" if v is None else format(v, fmt)


def table(results):
    hdr = [
        "model:tag",
        "params (M)",
        "input px",
        "image img/s fp32",
        "image img/s bf16",
        "text ms fp32",
        "text ms bf16",
        "min cos bf16 vs fp32",
        "COCO T->I R@5",
        "Flickr T->I R@5",
        "ImageNet top-1",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    order = list(CANDIDATES)
    rows = sorted(PUBLISHED, key=lambda k: order.index(k[0]) if k[0] in order else 99)
    for arch, tag in rows:
        r = results.get(arch)
        csv_name, coco, flickr, in1k, src = PUBLISHED[(arch, tag)]
        label = f"{arch}:{tag}"
        if src == "oc" and csv_name != arch:
            label += f" (CSV row {csv_name})"
        if src not in (None, "oc"):
            label += f" [{src}]"
        if r is None or "error" in r:
            sp = ["n/a"] * 7 if r is None else [f"build failed: {r['error'][:60]}"] + ["n/a"] * 6
        else:
            px = r["input_px"]
            px = f"{px[0]}" if isinstance(px, list) and px[0] == px[-1] else str(px)
            bf = _f(r.get("img_s_bf16"), ".2f")
            if r.get("bf16_batch", BATCH) != BATCH:
                bf += f" (b={r['bf16_batch']})"
            if str(r.get("img_bf16_clean_batches", "1/1")).startswith("0/"):
                bf += "*"
            fp = _f(r.get("img_s_fp32"), ".2f")
            if str(r.get("img_fp32_clean_batches", "1/1")).startswith("0/"):
                fp += "*"
            sp = [
                _f(r["params_m"], ".1f"),
                px,
                fp,
                bf,
                _f(r.get("text_ms_fp32"), ".1f")
                + ("*" if str(r.get("text_reps_fp32", "1/")).startswith("0/") else ""),
                _f(r.get("text_ms_bf16"), ".1f")
                + ("*" if str(r.get("text_reps_bf16", "1/")).startswith("0/") else ""),
                _f(r.get("min_cos_img_bf16"), ".5f"),
            ]
        pub = [_f(coco, ".4f"), _f(flickr, ".4f"), _f(in1k, ".4f")]
        lines.append("| " + " | ".join([label, *sp, *pub]) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--json", help="write raw measurements here")
    ap.add_argument("--from-json", help="do not measure; print the table from this file")
    ap.add_argument(
        "--interleave",
        nargs="+",
        metavar="MODEL",
        help="only run a head-to-head fp32 image-throughput test of these models",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds for --interleave")
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.10,
        help="before each model wait until other processes use < this share of the CPUs",
    )
    ap.add_argument("--max-wait", type=float, default=300.0, help="max seconds to wait for --quiet")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the results already in --json and measure only the missing models",
    )
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)
    if a.interleave:
        return interleave(a.interleave, a.rounds, 6.0)
    if a.from_json:
        with open(a.from_json) as fh:
            results = json.load(fh)["results"]
    else:
        import open_clip  # noqa: only to check names

        known = set(open_clip.list_models())
        results = {}
        if a.resume and a.json and os.path.exists(a.json):
            with open(a.json) as fh:
                results = {k: v for k, v in json.load(fh)["results"].items() if "error" not in v}
        for name in a.models:
            if name in results:
                print(f"[keep] {name}: already in {a.json}", file=sys.stderr)
                continue
            if name not in known:
                print(f"[skip] {name}: unknown to open_clip {open_clip.__version__}", file=sys.stderr)
                continue
            pre, waited = _wait_for_quiet(a.quiet, a.max_wait)
            if waited > 4:
                print(
                    f"[wait] {name}: waited {waited:.0f}s for other processes (now {pre:.0%})",
                    file=sys.stderr,
                )
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", name], capture_output=True, text=True
            )
            line = [out for out in p.stdout.splitlines() if out.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                err = (p.stderr.strip().splitlines() or ["?"])[-1]
                results[name] = {"name": name, "error": err}
                print(f"[fail] {name}: {err}", file=sys.stderr)
            else:
                results[name] = json.loads(line[-1][7:])
                results[name]["foreign_cpu_before"] = pre
                print(
                    f"[done] {name} in {time.perf_counter() - t0:.0f}s: {json.dumps(results[name])}",
                    file=sys.stderr,
                )
            if a.json:  # save as we go
                with open(a.json, "w") as fh:
                    json.dump(
                        {"results": results, "argv": sys.argv, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
                        fh,
                        indent=1,
                    )
    print(table(results))
    print(
        f"\nSpeed: random weights, batch {BATCH}, torch.set_num_threads({THREADS}), inference_mode; bf16 = "
        "model.to(torch.bfloat16). MobileCLIP rows are reparameterized (timm reparameterize_model)."
    )
    print(
        "* = every timed batch/block overlapped with other processes using >= 5% of the CPUs "
        "(no clean sample), so the number is pessimistic."
    )
    print("Published columns (not measured here): " + "; ".join(f"[{k}] {v}" for k, v in SOURCES.items()))


if __name__ == "__main__":
    sys.exit(main())
