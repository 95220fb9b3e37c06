"""Every model family imgsearch supports, at full size with random weights, through the real CLI.

    python bench/families.py [--families ViT-B-32,RN50] [--photos 32] [--big-photos 8] [--runs 3]
                             [--out bench/families.json] [--json]

Per family (one NAME:TAG each, the rows of `imgsearch models`, imgsearch/model/choices.py), in a work folder:

1. **The model folder.** The architecture's real open_clip config (`open_clip.get_model_config(NAME)`, with
   the tag's QuickGELU) and the tag's preprocessing (`open_clip.get_pretrained_cfg(NAME, TAG)`: mean, std,
   interpolation, resize mode; size from the config), built by open_clip's own classes with random weights
   and saved as `open_clip_model.safetensors` + `open_clip_config.json`: a `local-dir:` folder. Families with
   a Hugging Face tokenizer get one of the family's transformers class, trained here with `tokenizers` on a
   short multilingual text (tests/tiny_families.py), so its vocabulary is ~600 ids while the text tower keeps
   the real vocab_size; a Hugging Face text tower also gets `config.json` with the real model's
   hyperparameters (HF_TEXT_CONFIGS). Speed does not depend on the weights.
2. **Indexing.** `imgsearch index -v --model local-dir:FOLDER PHOTOS` in a new home and cache, on the sample
   photos (N of them; the big families fewer), the background exporter off (IMGSEARCH_TEXT_EXPORT=0,
   IMGSEARCH_IMAGE_EXPORT=0: it would otherwise compete for the CPU). img/s over the encode phase that `-v`
   reports, and over the command's wall time. `--precision auto` (whatever it picks on this CPU).
3. **Encoder only.** `Encoder.load(spec, "cpu", P).embed_pixels` on model-sized uint8 batches, for P in fp32
   and what `--precision auto` picks here; the warm text encoding of one query (fp32, always).
4. **Cold text queries.** `imgsearch query "a dog on a beach"` as new processes: first without the ONNX text
   export (the torch path: what a query costs until the exporter has run), then after the exporter made it
   (`python -m imgsearch.model.exporter` in the foreground, image export off), which every later query uses.
   The first run of each kind is reported apart (page cache); then `--runs` timed.
5. **Index bytes per image**: the home folder's files (catalog + FAISS) / N.

Contention: every timed sample is bracketed by /proc/stat; a sample during which other processes used >= 5%
of the CPUs is dropped (all are kept, and marked, when none was clean), and before each sample the script
waits (up to --max-wait s) for a quiet second. The counts of clean samples go into the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import SAMPLE_PHOTOS, imgsearch_command  # noqa: E402

#: family -> the NAME:TAG measured (the same as imgsearch.model.choices.CHOICES).
FAMILIES: dict[str, str] = {
    "ViT-B-32": "ViT-B-32:laion2b_s34b_b79k",
    "MobileCLIP2-S0": "MobileCLIP2-S0:dfndr2b",
    "RN50": "RN50:openai",
    "ViT-B-16": "ViT-B-16:laion2b_s34b_b88k",
    "MobileCLIP2-B": "MobileCLIP2-B:dfndr2b",
    "ViT-B-16-SigLIP": "ViT-B-16-SigLIP:webli",
    "ViT-B-16-SigLIP2": "ViT-B-16-SigLIP2:webli",
    "xlm-roberta-base-ViT-B-32": "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k",
    "nllb-clip-base": "nllb-clip-base:v1",
    "ViT-B-16-SigLIP-i18n-256": "ViT-B-16-SigLIP-i18n-256:webli",
    "ViT-L-14": "ViT-L-14:laion2b_s32b_b82k",
    "ViT-H-14": "ViT-H-14:laion2b_s32b_b79k",
}
BIG = ("ViT-L-14", "ViT-H-14")

#: Hugging Face text towers' hyperparameters, as their hub repositories' config.json publish them:
#: huggingface.co/FacebookAI/xlm-roberta-base/blob/main/config.json and
#: huggingface.co/facebook/nllb-200-distilled-600M/blob/main/config.json (the NLLB-200 paper, Costa-jussà
#: et al. 2022, table of model sizes: the 600M distilled dense model, d_model 1024, 12+12 layers).
HF_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "xlm-roberta-base-ViT-B-32": {
        "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 514,
        "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
    },
    "nllb-clip-base": {
        "vocab_size": 256206, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
        "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
        "decoder_ffn_dim": 4096, "activation_function": "relu", "max_position_embeddings": 1024,
        "scale_embedding": True, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        "decoder_start_token_id": 2,
    },
}  # fmt: skip

QUERY = "a dog on a beach"
CLEAN = 0.05  # a sample is clean when other processes used < 5% of the CPUs during it


# -- contention accounting --------------------------------------------------------------------------------
def snapshot() -> tuple[float, float, float]:
    """(machine busy CPU-seconds, CPU-seconds of this process and its waited-for children, wall)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:9]]
    busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def foreign(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Share of the machine's CPUs that other processes used between snapshots a and b."""
    wall = b[2] - a[2]
    if wall <= 0:
        return 0.0
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / (wall * (os.cpu_count() or 1)))


def wait_quiet(max_wait: float, threshold: float = 0.10, window: float = 1.0) -> float:
    """Wait until other processes use < threshold of the CPUs over `window` s; return the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait:
        a = snapshot()
        time.sleep(window)
        if foreign(a, snapshot()) < threshold:
            break
    return time.perf_counter() - started


class Samples:
    """Timed samples, each with the share of the CPUs that other processes used meanwhile."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.shares: list[float] = []

    def add(self, value: float, share: float) -> None:
        self.values.append(value)
        self.shares.append(share)

    @property
    def clean(self) -> list[float]:
        return [v for v, s in zip(self.values, self.shares, strict=True) if s < CLEAN]

    def summary(self, scale: float = 1.0) -> dict[str, Any]:
        used = self.clean or self.values
        return {
            "median": statistics.median(used) * scale if used else None,
            "min": min(used) * scale if used else None,
            "clean": len(self.clean),
            "samples": len(self.values),
            "others_max": round(max(self.shares), 3) if self.shares else None,
            "all_used": not self.clean,
        }


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, float, str, str]:
    """Run a command to completion: (wall s, others' CPU share meanwhile, stdout, stderr)."""
    a = snapshot()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    b = snapshot()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}... failed ({done.returncode}): {done.stderr[-2000:]}")
    return b[2] - a[2], foreign(a, b), done.stdout, done.stderr


# -- the model folder -------------------------------------------------------------------------------------
def build(family: str, folder: Path) -> dict[str, Any]:
    """Write `family`'s local-dir folder at full size with random weights (see the module docstring)."""
    import logging
    from copy import deepcopy

    import open_clip
    import torch
    from safetensors.torch import save_file

    from tests.tiny_families import _build, _save_tokenizer

    logging.disable(logging.WARNING)
    name, tag = FAMILIES[family].split(":")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = deepcopy(open_clip.get_model_config(name))
    pretrained = open_clip.get_pretrained_cfg(name, tag)
    if pretrained.get("quick_gelu"):
        cfg["quick_gelu"] = True
    text = cfg["text_cfg"]
    info: dict[str, Any] = {}
    if "hf_tokenizer_name" in text:
        info["tokenizer_vocab"] = _save_tokenizer(family, folder)  # the text tower keeps its vocab_size
        saved = json.loads((folder / "tokenizer_config.json").read_text())
        info["tokenizer_class"] = saved["tokenizer_class"]
    if "hf_model_name" in text:
        import transformers

        config_class = (
            transformers.M2M100Config if family == "nllb-clip-base" else transformers.XLMRobertaConfig
        )
        config_class(**HF_TEXT_CONFIGS[family]).save_pretrained(str(folder))
        info["text_vocab"] = HF_TEXT_CONFIGS[family]["vocab_size"]
    else:
        info["text_vocab"] = text.get("vocab_size")
    size = cfg["vision_cfg"].get("image_size", 224)
    preprocess = {"size": size, "mode": "RGB"}
    for key, default in (("mean", None), ("std", None), ("interpolation", "bicubic"), ("resize_mode", None)):
        value = pretrained.get(key, default)
        if value is not None:
            preprocess[key] = list(value) if isinstance(value, tuple) else value
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2)
    )
    torch.manual_seed(0)
    model = _build(folder, cfg)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    info["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    info["weights_mb"] = round((folder / "open_clip_model.safetensors").stat().st_size / 1e6, 1)
    info["embed_dim"] = cfg["embed_dim"]
    info["preprocess"] = preprocess
    return info


# -- encoder only (a child process) -----------------------------------------------------------------------
def encoder_child(spec_text: str, batch: int, cap_s: float, max_wait: float) -> dict[str, Any]:
    """Encoder-only rates: batches until the clean ones add up to cap_s (or 8 x cap_s have passed)."""
    import numpy as np

    from imgsearch.model.encoder import Encoder
    from imgsearch.model.numerics import index_precision
    from imgsearch.model.specs import parse_model_spec

    spec = parse_model_spec(spec_text)
    auto = index_precision("cpu")
    out: dict[str, Any] = {"auto": auto, "batch": batch}
    for precision in dict.fromkeys(["fp32", auto]):
        started = time.perf_counter()
        encoder = Encoder.load(spec, "cpu", precision)
        out[f"load_s_{precision}"] = round(time.perf_counter() - started, 2)
        prep = encoder.preprocess
        pixels = (
            np.random.default_rng(0).integers(0, 256, (batch, prep.height, prep.width, 3)).astype(np.uint8)
        )
        encoder.embed_pixels(pixels)  # warm-up
        samples, begun = Samples(), time.perf_counter()
        while sum(samples.clean) < cap_s and time.perf_counter() - begun < 8 * cap_s:
            wait_quiet(min(10.0, max_wait))
            a = snapshot()
            encoder.embed_pixels(pixels)
            b = snapshot()
            samples.add(b[2] - a[2], foreign(a, b))
        s = samples.summary()
        out[f"img_s_{precision}"] = batch / s["median"]
        out[f"img_s_{precision}_best"] = batch / s["min"]
        out[f"batches_{precision}"] = s
        if precision == "fp32":
            encoder.embed_texts([QUERY])
            text = Samples()
            for _ in range(10):
                a = snapshot()
                encoder.embed_texts([QUERY])
                b = snapshot()
                text.add(b[2] - a[2], foreign(a, b))
            out["text_ms"] = text.summary(1000)
            out["input_px"] = [prep.height, prep.width]
        del encoder
    return out


# -- one family -------------------------------------------------------------------------------------------
def measure(family: str, work: Path, photos: int, runs: int, max_wait: float) -> dict[str, Any]:
    folder, cache = work / "model", work / "cache"
    result: dict[str, Any] = {"family": family, "model": FAMILIES[family], "photos": photos}
    begun = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--build", family, str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        result["error"] = "build: " + (done.stderr.strip().splitlines() or ["?"])[-1]
        return result
    result["build"] = json.loads(done.stdout.strip().splitlines()[-1])
    result["build_s"] = round(time.perf_counter() - begun, 1)
    spec = f"local-dir:{folder}"

    pictures = work / "photos"
    pictures.mkdir()
    for path in sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:photos]:
        shutil.copy(path, pictures / path.name)
    base = {**os.environ, "IMGSEARCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    off = {**base, "IMGSEARCH_TEXT_EXPORT": "0", "IMGSEARCH_IMAGE_EXPORT": "0"}
    cli = imgsearch_command()

    # indexing: each run a new home
    encode, wall = Samples(), Samples()
    phases: list[dict[str, float]] = []
    home = work / "home"
    for _ in range(min(runs, 2)):  # the model load dominates a run: two runs of each family
        shutil.rmtree(home, ignore_errors=True)
        env = {**off, "IMGSEARCH_HOME": str(home)}
        wait_quiet(max_wait)
        try:
            seconds, share, out, err = timed_run([*cli, "index", "-v", "--model", spec, str(pictures)], env)
        except RuntimeError as e:
            result["error"] = f"index: {e}"
            return result
        times = dict(
            re.findall(r"(\w[\w ]*?) (\d+\.\d+) s", [*err.split("time: ", 1), ""][1].splitlines()[0])
        )
        phase = {k.strip(): float(v) for k, v in times.items()}
        phases.append(phase)
        wall.add(seconds, share)
        if "encode" in phase:
            encode.add(phase["encode"], share)
        result["index_summary"] = out.strip().splitlines()[-1] if out.strip() else ""
        result["engine"] = next((line[8:] for line in err.splitlines() if line.startswith("engine: ")), None)
    result["index_wall"] = wall.summary()
    result["index_encode"] = encode.summary()
    result["index_img_s"] = photos / result["index_encode"]["median"] if encode.values else None
    result["index_img_s_wall"] = photos / result["index_wall"]["median"]
    result["index_phases"] = phases
    files = {p.name: p.stat().st_size for p in home.rglob("*") if p.is_file()}
    result["home_files"] = files
    result["bytes_per_image"] = sum(files.values()) / photos
    result["faiss_bytes_per_image"] = sum(v for k, v in files.items() if "faiss" in k) / photos

    # encoder only
    big = family in BIG
    cap = min(4.0 if big else 6.0, 2.0 * runs)  # s of clean batches: 6 s (4 s) with --runs 3
    wait_quiet(max_wait)
    done = subprocess.run(
        [sys.executable, __file__, "--encoder", spec, str(4 if big else 16), str(cap), str(max_wait)],
        capture_output=True, text=True, env=off,
    )  # fmt: skip
    if done.returncode == 0:
        result["encoder"] = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        result["encoder_error"] = (done.stderr.strip().splitlines() or ["?"])[-1]

    # cold text queries: the torch path, then with the text export
    query = [*cli, "query", QUERY, "-n", "5"]
    kinds = {
        "torch": {**off, "IMGSEARCH_HOME": str(home)},
        "export": {**base, "IMGSEARCH_HOME": str(home), "IMGSEARCH_IMAGE_EXPORT": "0"},
    }
    for label, env in kinds.items():
        if label == "export":
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "imgsearch.model.exporter", spec],
                env=env,
                capture_output=True,
                text=True,
            )
            result["export_s"] = round(time.perf_counter() - started, 1)
            metas = list((cache / "text-encoder").glob("*/meta.json"))
            meta = json.loads(metas[0].read_text()) if metas else {}
            result["text_export"] = {k: meta.get(k) for k in ("supported", "reason", "min_cos") if k in meta}
            result["text_export_mb"] = round(
                sum(p.stat().st_size for p in (cache / "text-encoder").rglob("*") if p.is_file()) / 1e6, 1
            )
        samples = Samples()
        try:
            wait_quiet(max_wait)
            first, share, _, _ = timed_run(query, env)
            for _ in range(runs):
                wait_quiet(max_wait)
                seconds, share, _, _ = timed_run(query, env)
                samples.add(seconds, share)
        except RuntimeError as e:
            result[f"query_{label}_error"] = str(e)[-500:]
            continue
        result[f"query_{label}"] = {"first_s": first, **samples.summary()}
    result["total_s"] = round(time.perf_counter() - begun, 1)
    return result


def machine() -> dict[str, Any]:
    import platform

    from imgsearch.model.numerics import describe_cpu, index_precision

    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    flags = info.get("flags", "").split()
    return {
        "cpu": info.get("model name", "?"),
        "cpu_family_model": f"{info.get('cpu family', '')}/{info.get('model', '')}",
        "cores": os.cpu_count(),
        "flags": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")),
        "describe_cpu": describe_cpu(),
        "auto_precision": index_precision("cpu"),
        "python": platform.python_version(),
    }


# -- results: the speed columns of imgsearch/model/choices.py, and BENCHMARKS.md -----------------------------
CHOICES_FILE = ROOT / "imgsearch" / "model" / "choices.py"


def _get(r: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(r, dict) or r.get(key) is None:
            return None
        r = r[key]
    return r


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def speeds(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Each measured model's speed columns, as imgsearch.model.choices.Speed takes them."""
    out = {}
    for r in data["results"].values():
        if "error" in r:
            continue
        q, t = _get(r, "query_export", "median"), _get(r, "query_torch", "median")
        auto = _get(r, "encoder", "auto") or "fp32"
        out[r["model"]] = {
            "index_img_s": _round(r.get("index_img_s"), 1),
            "encoder_img_s_fp32": _round(_get(r, "encoder", "img_s_fp32"), 1),
            "encoder_img_s_auto": _round(_get(r, "encoder", f"img_s_{auto}"), 1),
            "query_ms": None if q is None else round(q * 1000),
            "query_torch_s": _round(t, 1),
            "bytes_per_image": None if r.get("bytes_per_image") is None else round(r["bytes_per_image"]),
        }
    return out


def measured(data: dict[str, Any]) -> dict[str, str]:
    dates = sorted(r["date"] for r in data["results"].values() if "date" in r)
    m = data["machine"]
    day = sorted({d[:10] for d in dates})
    return {
        "date": day[0] if len(day) == 1 else f"{day[0]} to {day[-1]}" if day else "",
        "cpu": f"{m['cores']}-core {m['describe_cpu']}, --precision auto: {m['auto_precision']}",
        "command": data.get("command", ""),
    }


def write_choices(data: dict[str, Any]) -> None:
    """Rewrite the speed block of imgsearch/model/choices.py from the measurements."""
    text = CHOICES_FILE.read_text()
    start, end = "# speeds:start\n", "# speeds:end\n"
    rows = [
        f"    {json.dumps(model)}: Speed({', '.join(f'{k}={v!r}' for k, v in fields.items())}),"
        for model, fields in speeds(data).items()
    ]
    block = (
        f"MEASURED: dict[str, str] = {json.dumps(measured(data))}\n"
        "SPEEDS: dict[str, Speed] = {\n" + "\n".join(rows) + "\n}\n"
    )
    text = text[: text.index(start) + len(start)] + block + text[text.index(end) :]
    CHOICES_FILE.write_text(text)
    ruff = Path(sys.executable).with_name("ruff")  # the house format, as `make lint` checks it
    if ruff.exists():
        subprocess.run([str(ruff), "format", "-q", str(CHOICES_FILE)], check=True)


def _f(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def _clean(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['clean']}/{s['samples']}" + (" (none clean: all used)" if s.get("all_used") else "")


def report(data: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section: a summary table, then a table per family."""
    m = data["machine"]
    lines = [
        "### Every model family at full size: indexing, encoder, cold queries (random weights)",
        "",
        f"Measured {measured(data)['date']} (each family's time below). "
        f"Machine: {m['cores']} cores, `{m['cpu']}` (cpu family/model {m['cpu_family_model']}), flags "
        f"{', '.join(m['flags'])} (`grep -o -m1 avx512_bf16 /proc/cpuinfo`: "
        f"{'avx512_bf16' if 'avx512_bf16' in m['flags'] else 'nothing'}); `--precision auto` is "
        f"**{m['auto_precision']}** here; Python {m['python']}, torch {data.get('torch', '?')}. "
        f"Command: `{data.get('command', '')}`.",
        "",
        "| model | photos | `index` img/s (encoding phase; whole command) | encoder img/s fp32 / "
        f"{m['auto_precision']} | text query, new process: ONNX export / torch | query, first run: export "
        "/ torch | index bytes per image | clean samples: index, encoder, queries |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"].values():
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error'][:300]} | | | | | | |")
            continue
        e = r.get("encoder", {})
        auto = e.get("auto", m["auto_precision"])
        qe, qt = r.get("query_export") or {}, r.get("query_torch") or {}
        cells = [
            r["model"],
            str(r["photos"]),
            f"{_f(r.get('index_img_s'), '.1f')} ({_f(r.get('index_img_s_wall'), '.2f')})",
            f"{_f(e.get('img_s_fp32'), '.1f')} / {_f(e.get(f'img_s_{auto}'), '.1f')}",
            f"{_f(qe.get('median'), '.2f', ' s')} / {_f(qt.get('median'), '.2f', ' s')}",
            f"{_f(qe.get('first_s'), '.2f', ' s')} / {_f(qt.get('first_s'), '.2f', ' s')}",
            _f(r.get("bytes_per_image"), ",.0f"),
            f"{_clean(r.get('index_encode'))}, {_clean(e.get('batches_fp32'))} + "
            f"{_clean(e.get(f'batches_{auto}'))}, {_clean(qe)} + {_clean(qt)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per family:", ""]
    for r in data["results"].values():
        if "error" in r:
            continue
        b, e = r["build"], r.get("encoder", {})
        auto = e.get("auto", m["auto_precision"])
        px = e.get("input_px", ["?"])
        tok = (
            f"; tokenizer: {b['tokenizer_class']} trained here ({b['tokenizer_vocab']} ids; the text tower's "
            f"vocabulary {b['text_vocab']:,})"
            if "tokenizer_class" in b
            else ""
        )
        ie, iw, qe, qt = (
            r.get(k) or {} for k in ("index_encode", "index_wall", "query_export", "query_torch")
        )
        fp, au, tm = (e.get(k) or {} for k in ("batches_fp32", f"batches_{auto}", "text_ms"))
        load = statistics.median(p.get("model", 0) for p in r["index_phases"])
        rows = [
            (
                f"`imgsearch index -v` of {r['photos']} sample photos, new home, exports off: encoding phase",
                f"{_f(r.get('index_img_s'), '.1f')} img/s ({_f(ie.get('median'), '.2f')} s; engine "
                f"{r.get('engine') or '?'})",
                f"{_clean(ie)} ({_f(ie.get('others_max'), '.0%')})",
            ),
            (
                "the same, whole command (import, model load, scan, encode, save)",
                f"{_f(iw.get('median'), '.1f')} s (model load {load:.1f} s)",
                _clean(iw),
            ),
            (
                f"`Encoder.embed_pixels`, batches of {e.get('batch', '?')}, fp32",
                f"{_f(e.get('img_s_fp32'), '.1f')} img/s (best {_f(e.get('img_s_fp32_best'), '.1f')})",
                f"{_clean(fp)} ({_f(fp.get('others_max'), '.0%')})",
            ),
            (
                f"the same, {auto} (`--precision auto`)",
                f"{_f(e.get(f'img_s_{auto}'), '.1f')} img/s (best {_f(e.get(f'img_s_{auto}_best'), '.1f')})",
                f"{_clean(au)} ({_f(au.get('others_max'), '.0%')})",
            ),
            (
                "one query's text encoding in a warm process (torch, fp32)",
                _f(tm.get("median"), ".0f", " ms"),
                _clean(tm),
            ),
            (
                f'`imgsearch query "{QUERY}"`, new process, torch (no export yet): median (first)',
                f"{_f(qt.get('median'), '.2f', ' s')} ({_f(qt.get('first_s'), '.2f', ' s')})",
                _clean(qt),
            ),
            (
                "exporter, text tower only (`python -m imgsearch.model.exporter`, foreground)",
                f"{_f(r.get('export_s'), '.0f', ' s')}, {_f(r.get('text_export_mb'), '.0f', ' MB')}; "
                f"{json.dumps(r.get('text_export', {}))}",
                "",
            ),
            (
                "the same query with the text export: median (first)",
                f"{_f(qe.get('median'), '.2f', ' s')} ({_f(qe.get('first_s'), '.2f', ' s')})",
                _clean(qe),
            ),
            (
                "index folder / images",
                f"{_f(r.get('bytes_per_image'), ',.0f')} bytes (FAISS file "
                f"{_f(r.get('faiss_bytes_per_image'), ',.0f')})",
                "",
            ),
        ]
        lines += [
            f"#### {r['model']}",
            "",
            f"{b['params_m']} M parameters, {b['weights_mb']:.0f} MB of fp32 weights, {b['embed_dim']}-d "
            f"vectors, input {px[0]} px{tok}. Measured {r['date']}.",
            "",
            "| measurement | value | clean samples (others' CPU share, max) |",
            "| --- | --- | --- |",
            *(f"| {what} | {value} | {clean} |" for what, value, clean in rows),
            "",
        ]
    for key in ("query_torch_error", "query_export_error", "encoder_error"):
        bad = [f"{r['model']}: {r[key]}" for r in data["results"].values() if key in r]
        if bad:
            lines += [f"Failures ({key}): " + "; ".join(bad), ""]
    return lines


NOTE = """\
Random weights in each family's real architecture and its tag's preprocessing (speed does not depend on
the weights), saved as a `local-dir:` folder (`bench/families.py`, step 1). The Hugging Face families'
tokenizers are trained here on a few multilingual captions (~600 ids) and saved with the family's
transformers class, since no real one can be downloaded: loading a real 250k-entry tokenizer.json
(SigLIP-i18n, SigLIP 2, XLM-R, NLLB) takes longer, so their cold-query and load times are
**underestimated** by that difference; the text towers keep their real vocabulary sizes (embedding tables),
so the model load and memory are real. Index runs embed with torch (`--precision auto`); the ONNX
exporter is off for them, as it would otherwise run in the background and take the CPU. "clean" = samples
during which other processes used < 5% of the CPUs (/proc/stat around each sample; the script waits up
to 30 s for a quiet second before each); where none was clean all are used, as marked. The index bytes
per image are from a small index (the SQLite file's fixed pages dominate; a vector is dim x 4 bytes in
the catalog and again in the FAISS file). The encoding phase of 32 photos is about a second for the
fast families, so those rates move by ±15–25% from run to run (as everywhere in this file); the encoder-only
rates are longer samples. MobileCLIP2's fastvit/ViT branches are fused on load (`Encoder.load`), as in
use. This machine (AMD Zen 4 with AVX512-BF16) is neither of the two named at the top of this file."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", nargs=2, metavar=("FAMILY", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--encoder", nargs=4, metavar=("SPEC", "BATCH", "CAP", "WAIT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument("--photos", type=int, default=32, help="photos to index per family")
    parser.add_argument("--big-photos", type=int, default=8, help=f"photos for {' and '.join(BIG)}")
    parser.add_argument("--runs", type=int, default=3, help="timed index runs and cold queries of each kind")
    parser.add_argument("--max-wait", type=float, default=30.0, help="s to wait for a quiet CPU per sample")
    parser.add_argument("--out", type=Path, help="keep the results here (updated after each family)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--from-json", type=Path, help="do not measure: use these saved results")
    parser.add_argument(
        "--write",
        action="store_true",
        help="with --from-json: write the speeds into choices.py and the section into BENCHMARKS.md",
    )
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build[0], Path(args.build[1]))))
        return 0
    if args.encoder:
        spec, batch, cap, wait = args.encoder
        print(json.dumps(encoder_child(spec, int(batch), float(cap), float(wait))))
        return 0
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        if args.write:
            write_choices(data)
            from harness import place

            path = ROOT / "BENCHMARKS.md"
            marks = ("<!-- harness:families:start -->", "<!-- harness:families:end -->")
            section = "\n".join([marks[0], *report(data), NOTE, marks[1]])
            path.write_text(place(path.read_text(), "families", section))
        print("\n".join(report(data)))
        return 0
    import torch

    data: dict[str, Any] = {"results": {}}
    if args.out and args.out.exists():
        data = json.loads(args.out.read_text())
    data.update(
        machine=machine(),
        torch=torch.__version__.split("+")[0],
        command=" ".join(["python", "bench/families.py", *sys.argv[1:]]),
    )
    for family in args.families.split(","):
        photos = args.big_photos if family in BIG else args.photos
        runs = max(1, args.runs - 1) if family in BIG else args.runs
        with tempfile.TemporaryDirectory(prefix=f"families-{family}-") as work:
            print(f"[{time.strftime('%H:%M:%S')}] {family} ...", file=sys.stderr, flush=True)
            try:
                r = measure(family, Path(work), photos, runs, args.max_wait)
            except Exception as e:  # one family's failure is reported, the others still run
                r = {"family": family, "model": FAMILIES[family], "error": f"{type(e).__name__}: {e}"[-800:]}
        r["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        data["results"][family] = r
        print(f"[{time.strftime('%H:%M:%S')}] {family}: {json.dumps(r)[:600]}", file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(json.dumps(data, indent=1) + "\n")
    if args.json:
        print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
