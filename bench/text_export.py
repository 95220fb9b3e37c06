"""The ONNX text export (imgsearch.model.export / onnx_text): its cost, its fidelity, its cold-start pieces.

    python bench/text_export.py [--model ViT-B-32] [--runs 20] [--work DIR]

Builds the architecture with random weights in a local-dir folder (bench/common.make_model), loads it with
torch in fp32 and exports its text tower into a cache of its own (WORK/cache as $IMGSEARCH_CACHE, so that no
export of an earlier run is found), timing the export and reporting the verification's minimum cosine on
the probe strings. Then, in a new process that never imports torch: the import of the reader, finding the
export in the cache (the model's content key, imgsearch.model.cache, then meta.json), the tokenizer build,
the session creation, and one query's encoding (first call and median of RUNS), with the cosine of those
vectors to torch's on a few other texts; then the session as `imgsearch serve` opens it (warm: prepacked
weights, one thread) and its median encoding time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_model

TEXTS = ["a red apple on a table", "mountain lake in winter", "two dogs playing in the snow at dusk"]

_COLD = r"""
import json, statistics, sys, time
t0 = time.perf_counter()
from imgsearch.model.cache import export_folder
from imgsearch.model.onnx_text import FOLDER, FORMAT, OnnxText, current_meta, open_session, MODEL_FILE
from imgsearch.model.tokenizer import ClipTokenizer, read_merges
from imgsearch.model.specs import parse_model_spec
t1 = time.perf_counter()
model, runs = sys.argv[1], int(sys.argv[2])
spec = parse_model_spec(model)
folder = export_folder(spec, FOLDER)
meta = current_meta(folder, spec, FORMAT)
assert meta is not None, f"no current text export in {folder}"
t2 = time.perf_counter()
tok = ClipTokenizer(read_merges(folder / "merges.txt"))
t3 = time.perf_counter()
import onnxruntime
t4 = time.perf_counter()
session = open_session(folder / MODEL_FILE)
t5 = time.perf_counter()
onnx = OnnxText(session, tok, meta)
onnx.embed_texts(["a red apple on a table"])
t6 = time.perf_counter()
times = []
for _ in range(runs):
    s = time.perf_counter()
    onnx.embed_texts(["a red apple on a table"])
    times.append(time.perf_counter() - s)
vectors = onnx.embed_texts(json.loads(sys.argv[3]))
t7 = time.perf_counter()
warm = OnnxText(open_session(folder / MODEL_FILE, warm=True), tok, meta)  # as `imgsearch serve` opens it
t8 = time.perf_counter()
warm_times = []
for i in range(runs):
    s = time.perf_counter()
    warm.embed_texts([f"a red apple on a table {i}"])
    warm_times.append(time.perf_counter() - s)
print(json.dumps({
    "import_reader_s": t1 - t0, "find_export_s": t2 - t1, "tokenizer_build_s": t3 - t2,
    "import_onnxruntime_s": t4 - t3,
    "session_s": t5 - t4, "first_encode_s": t6 - t5, "encode_median_s": statistics.median(times),
    "warm_session_s": t8 - t7, "warm_encode_median_s": statistics.median(warm_times),
    "torch_loaded": "torch" in sys.modules, "vectors": vectors.tolist(),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--work", type=Path, help="keep the model, cache and export here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgsearch-text-export-"))
    model_dir = work / "model"
    spec_text = f"local-dir:{model_dir}" if model_dir.exists() else make_model(args.model, model_dir)
    os.environ["IMGSEARCH_CACHE"] = str(work / "cache")  # this run's exports only; the cold process's too

    import numpy as np

    from imgsearch.model.cache import export_folder
    from imgsearch.model.encoder import Encoder
    from imgsearch.model.export import export_text
    from imgsearch.model.onnx_text import FOLDER
    from imgsearch.model.specs import parse_model_spec

    spec = parse_model_spec(spec_text)
    encoder = Encoder.load(spec, device="cpu", precision="fp32")
    started = time.perf_counter()
    meta = export_text(encoder, export_folder(spec, FOLDER))  # includes hashing local weights for the key
    export_s = time.perf_counter() - started
    cold = subprocess.run(
        [sys.executable, "-c", _COLD, spec.id, str(args.runs), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(cold.stdout)
    cos = (np.array(result.pop("vectors")) * encoder.embed_texts(TEXTS)).sum(axis=1)
    files = meta.get("files", {})
    out = {
        "model": args.model,
        "export_s": round(export_s, 2),
        "supported": meta["supported"],
        "verified": meta.get("verified"),
        "export_mb": round(sum(files.values()) / 1e6, 1),
        "cos_other_texts_min": round(float(cos.min()), 7),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
