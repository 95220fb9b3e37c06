"""CLIP's BPE two ways: imgsearch's hand-written tokenizer (imgsearch.model.tokenizer) against the same
tokenizer built with Hugging Face `tokenizers`, for the ids they give and the cold start they cost.

    python bench/tokenizer_cold_start.py [--runs 15] [--work DIR]

1. Equality: both against open_clip's SimpleTokenizer on a seeded corpus (ASCII, accents, CJK, Hangul,
   Arabic, Cyrillic, Devanagari, Thai, emoji with joiners and skin tones, punctuation, HTML entities,
   mojibake, control characters, typed special tokens in both cases, texts over 77 tokens), under each
   clean mode (lower, whitespace, canonicalize). The text cleaning (ftfy, HTML unescape, whitespace,
   lowercasing) is open_clip's Python in both: `tokenizers` only splits, maps bytes and merges.
2. Cold start: in fresh processes, interleaved, RUNS of each: import the tokenizer module, load its files
   from an export folder as a cold query would, tokenize one query (a plain-ASCII one and one with
   accents). Median and spread. `tokenizers` is loaded three ways: `Tokenizer.from_file(tokenizer.json)`
   (the vocabulary and merges as JSON, what an export would ship), `models.BPE.from_file(vocab.json,
   merges.txt)`, and `models.BPE(vocab, merges)` built in Python from merges.txt (no vocabulary file).
3. Warm: microseconds per query once loaded (median of 2,000 calls).

The bench/ folder is taken off sys.path first: this file's own name would shadow the `tokenizers` package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.append(_HERE)  # after site-packages: `tokenizers` is the package, clip_bpe_tokenizers ours

from clip_bpe_tokenizers import clip_tokenizers  # noqa: E402

from imgsearch.model.tokenizer import CLEANERS, ClipTokenizer, open_clip_vocab, read_merges  # noqa: E402

QUERIES = {"ascii": "a photo of a dog on the beach", "accents": "café crème brûlée on a table"}
VARIANTS = ("hand-written", "tokenizers json", "tokenizers files", "tokenizers python")

_COLD = {
    "hand-written": """
from imgsearch.model.tokenizer import ClipTokenizer, read_merges
tok = ClipTokenizer(read_merges(folder / "merges.txt"))
ids = tok([query])
""",
    "tokenizers json": """
from imgsearch.model.tokenizer import clean_function
from tokenizers import Tokenizer
tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
ids = [e.ids for e in tok.encode_batch([clean_function("lower")(query)])]
""",
    "tokenizers files": """
from imgsearch.model.tokenizer import clean_function
from clip_bpe_tokenizers import clip_pipeline
from tokenizers import Tokenizer, models
tok = clip_pipeline(Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                                  end_of_word_suffix="</w>")))
ids = [e.ids for e in tok.encode_batch([clean_function("lower")(query)])]
""",
    "tokenizers python": """
from imgsearch.model.tokenizer import clean_function, read_merges
from clip_bpe_tokenizers import clip_tokenizers
tok = clip_tokenizers(read_merges(folder / "merges.txt"))
ids = [e.ids for e in tok.encode_batch([clean_function("lower")(query)])]
""",
}
_PROCESS = """
import sys, time
import numpy
from pathlib import Path
sys.path.append({bench!r})  # after site-packages, for clip_bpe_tokenizers
t0 = time.perf_counter()
folder, query = Path(sys.argv[1]), sys.argv[2]
{body}
print(time.perf_counter() - t0)
print(ids[0][:5], file=sys.stderr)
"""


def corpus(seed: int = 20261127, random_texts: int = 3000) -> list[str]:
    """The equality corpus: hand-picked hard cases, the test and probe texts, then seeded random texts
    drawn from many scripts, symbols and whitespace, some long enough to be truncated."""
    from imgsearch.model.export import PROBES

    picked = [
        "", " ", "a photo of a dog", "A PHOTO, of a Dog!!! (really?)", "Tom's CAT'S dog'S it'll WE'D",
        "<start_of_text> typed <end_of_text>", "<START_OF_TEXT> typed <End_Of_Text>", "x<start_of_text>y",
        "<start_of_text<end_of_text>>", "&amp; &lt;b&gt; &amp;amp; &#39;q&#39; &nbsp;", "Ã©tÃ© mojibake",
        "ＦＵＬＬ width ａｓｃｉｉ", "\u200b zero\u00a0width", "tab\tnew\nline\r\n", "a" * 300,
        "a long description of a scene " * 30, "東京タワーの夜景 北京 서울 Москва القاهرة दिल्ली กรุงเทพ",
        "🐶🐱 👍🏽 👨‍👩‍👧 🇫🇷 🏳️‍🌈", "C++ / C# .NET 1st 2nd %20 ~ ` ^ { } | \\ [x] (y) <z>", "!!!???...",
        "!?!? ?! !x !", "vertical\x0btab form\x0cfeed bell\x07 \x1b[31mred\x1b[0m del\x7f nul\x00",
        "hello_world snake_case #tag @user e-mail@example.com", "3.14159 2023-12-31 1,000,000",
        "naïve café façade résumé Ünïcödé São Paulo Łódź Ærøskøbing straße", "ein Hund läuft am Strand",
        "木桌上的红苹果", "تفاحة حمراء على طاولة خشبية", "夕焼けの浜辺を走る犬",
    ]  # fmt: skip
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÉÎÕÜŁłŒœ",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年東京日本語",
        "あいうえおかきくけこさしすせそアイウエオカキクケコンー",
        "가나다라마바사아자차카타파하한국어",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД",
        "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह",
        "กขคงจฉชซญดตถทนบปผพฟภมยรลวสหอฮะาิีึืุู",
        "😀😂🥲😍🐶🐱🍎🚗✈️👍🏽👨‍👩‍👧🇯🇵🏳️‍🌈❤️‍🔥",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»—–…“”‘’•·°±×÷€£¥©®™",
        " \t\n\r\u00a0\u2003\u3000\u200b\u200d",
    ]
    rng = random.Random(seed)
    texts = list(picked) + list(PROBES)
    for _ in range(random_texts):
        length = rng.choice([1, 3, 8, 20, 60, 200])
        chosen = rng.sample(pools, rng.randint(1, 4))
        words: list[str] = []
        while sum(map(len, words)) < length:
            pool = rng.choice(chosen)
            words.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 9))))
        texts.append(rng.choice([" ", "", "-", "'s "]).join(words))
    return texts


def check_equality(texts: list[str]) -> dict[str, dict[str, int]]:
    """For each clean mode: texts, and how many differ from open_clip's ids, for each tokenizer."""
    import numpy as np
    from open_clip.tokenizer import SimpleTokenizer

    from imgsearch.model.tokenizer import clean_function

    merges = read_merges(open_clip_vocab())
    result: dict[str, dict[str, int]] = {}
    for clean in CLEANERS:
        theirs = SimpleTokenizer(clean=clean)(texts).numpy()
        ours = ClipTokenizer(merges, clean=clean)(texts)
        fast = clip_tokenizers(merges)
        cleaned = [clean_function(clean)(t) for t in texts]
        fast_ids = np.array([e.ids for e in fast.encode_batch(cleaned)], dtype=np.int64)
        hand_bad = [t for t, a, b in zip(texts, ours, theirs, strict=True) if not np.array_equal(a, b)]
        fast_bad = [t for t, a, b in zip(texts, fast_ids, theirs, strict=True) if not np.array_equal(a, b)]
        for name, bad in (("hand-written", hand_bad), ("tokenizers", fast_bad)):
            if bad:
                print(f"{name} differs from open_clip ({clean}) on {bad[:3]!r}", file=sys.stderr)
        truncated = int((theirs[:, -1] != 0).sum())
        result[clean] = {
            "texts": len(texts),
            "truncated": truncated,
            "hand-written": len(hand_bad),
            "tokenizers": len(fast_bad),
        }
    return result


def write_files(folder: Path) -> None:
    """What each variant loads: merges.txt (as the export ships it), tokenizer.json, vocab.json."""
    merges = read_merges(open_clip_vocab())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "merges.txt").write_text("\n".join(merges), encoding="utf-8")
    fast = clip_tokenizers(merges)
    fast.save(str(folder / "tokenizer.json"))
    vocab = fast.get_vocab(with_added_tokens=False)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def cold_runs(folder: Path, runs: int) -> dict[str, dict[str, list[float]]]:
    """Seconds from after `import numpy` to the first query's ids, per variant and query: fresh
    processes, the variants interleaved round by round (one warm-up round not counted)."""
    times: dict[str, dict[str, list[float]]] = {q: {v: [] for v in VARIANTS} for q in QUERIES}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(runs + 1):
        for query_name, query in QUERIES.items():
            for variant in VARIANTS:
                code = _PROCESS.format(body=_COLD[variant], bench=_HERE)
                done = subprocess.run(
                    [sys.executable, "-c", code, str(folder), query],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=str(REPO),
                    check=True,
                )
                if round_:
                    times[query_name][variant].append(float(done.stdout.split()[0]))
    return times


def warm_us(folder: Path, calls: int = 2000) -> dict[str, float]:
    """Median microseconds per query once loaded (a server's case), for the ASCII query."""
    from tokenizers import Tokenizer

    from imgsearch.model.tokenizer import clean_function

    hand = ClipTokenizer(read_merges(folder / "merges.txt"))
    fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
    clean = clean_function("lower")
    query = QUERIES["ascii"]

    def median(call: object) -> float:
        spent = []
        for _ in range(calls):
            begun = time.perf_counter()
            call()  # type: ignore[operator]
            spent.append(time.perf_counter() - begun)
        return statistics.median(spent) * 1e6

    return {
        "hand-written": median(lambda: hand([query])),
        "tokenizers": median(lambda: fast.encode_batch([clean(query)])),
    }


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    try:
        flags = subprocess.run(
            ["grep", "-o", "-m1", "avx512_bf16", "/proc/cpuinfo"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        flags = ""
    return f"{model}, {os.cpu_count()} cores, {'avx512_bf16' if flags else 'no avx512_bf16'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    from importlib.metadata import version

    texts = corpus()
    equality = check_equality(texts)
    with tempfile.TemporaryDirectory() as tmp:
        folder = (args.work or Path(tmp)) / "export"
        write_files(folder)
        sizes = {
            name: (folder / name).stat().st_size for name in ("merges.txt", "tokenizer.json", "vocab.json")
        }
        times = cold_runs(folder, args.runs)
        warm = warm_us(folder)
    print(f"date {datetime.date.today()}; {machine()}; python {platform.python_version()}; ", end="")
    print(f"tokenizers {version('tokenizers')}, open_clip_torch {version('open_clip_torch')}")
    print(f"files: {', '.join(f'{n} {s / 1e6:.1f} MB' for n, s in sizes.items())}\n")
    print("| clean | texts | truncated at 77 | hand-written differs | tokenizers differs |")
    print("| --- | --- | --- | --- | --- |")
    for clean, row in equality.items():
        print(
            f"| {clean} | {row['texts']} | {row['truncated']} | {row['hand-written']} | {row['tokenizers']} |"
        )
    print(f"\n| cold start, ms (median of {args.runs}; min–max) | " + " | ".join(QUERIES) + " |")
    print("| --- | " + " | ".join("---" for _ in QUERIES) + " |")
    for variant in VARIANTS:
        cells = []
        for query_name in QUERIES:
            spent = [t * 1000 for t in times[query_name][variant]]
            cells.append(f"{statistics.median(spent):.1f} ({min(spent):.1f}–{max(spent):.1f})")
        print(f"| {variant} | " + " | ".join(cells) + " |")
    print(f"\nwarm, µs per query: {', '.join(f'{n} {v:.0f}' for n, v in warm.items())}")


if __name__ == "__main__":
    main()
