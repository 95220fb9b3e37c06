"""CLIP's byte-level BPE tokenizer without torch: the token ids of open_clip's `SimpleTokenizer`.

open_clip's tokenizer module imports torch at the top, which costs a cold query seconds, so the fast text
path (imgsearch.model.onnx_text) tokenizes here instead. The algorithm is OpenAI CLIP's, as open_clip copies
it (MIT License, Copyright (c) 2021 OpenAI): ftfy + HTML unescape cleaning, a regex split, byte-to-unicode
mapping, BPE merges with `</w>` word ends, `<start_of_text>` ... `<end_of_text>`, truncated to the context
length and zero-padded. Equality with open_clip is tested and is checked again on every export.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
import re
import string
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLEANERS = ("lower", "whitespace", "canonicalize")
MERGES = 49152 - 256 - 2  # how many merge lines open_clip reads from the vocab file
_SPECIAL = ("<start_of_text>", "<end_of_text>")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# Printable ASCII without "&", plus tab and line breaks: text that ftfy (mojibake, HTML entities, control
# characters, terminal escapes) and html.unescape leave as it is, up to line breaks that the whitespace
# cleaning removes anyway. Most queries are such text.
_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")
_SPLIT = r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# The same split for ASCII text, where letters and digits are [a-z] and [0-9]: Python's re does it without
# importing the regex module.
_ASCII_SPLIT = re.compile(
    "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""", re.IGNORECASE | re.ASCII
)


def open_clip_vocab() -> Path:
    """The vocab file inside the installed open_clip package, found without importing it (and torch)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"open_clip's {VOCAB_FILE} is not installed")


def read_merges(path: str | Path) -> list[str]:
    """The merge lines open_clip uses, from its gzipped vocab file or from a plain copy of those lines."""
    packed = str(path).endswith(".gz")
    with (gzip.open if packed else open)(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    return lines[1 : MERGES + 1] if packed else lines[:MERGES]  # the original starts with a version line


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """A printable character for every byte, so BPE never sees whitespace or control characters."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _basic_clean(text: str) -> str:
    if _PLAIN.fullmatch(text):  # nothing for ftfy or html.unescape to change: skip importing ftfy
        return text.strip()
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


_CLEAN: dict[str, Callable[[str], str]] = {
    "lower": lambda t: _whitespace_clean(_basic_clean(t)).lower(),
    "whitespace": lambda t: _whitespace_clean(_basic_clean(t)),
    "canonicalize": lambda t: _canonicalize(_basic_clean(t)),
}


def clean_function(name: str) -> Callable[[str], str]:
    """open_clip's text cleaning `name` (lower, whitespace, canonicalize): the same steps as its
    `get_clean_fn`, for CLIP's tokenizer and Hugging Face ones alike."""
    if name not in _CLEAN:
        raise ValueError(f"unknown clean function {name!r}")
    return _CLEAN[name]


class ClipTokenizer:
    """Texts -> (N, context_length) int64 token ids, as `open_clip.get_tokenizer(name)(texts)` gives them."""

    def __init__(self, merges: Sequence[str], context_length: int = 77, clean: str = "lower"):
        """`merges`: the BPE merge lines ("a b"), best first, as `read_merges` returns them."""
        if clean not in _CLEAN:
            raise ValueError(f"unknown clean function {clean!r}")
        # The vocabulary is the 256 byte symbols, the same with "</w>", one token per merge, then the special
        # tokens, all distinct: a merge's token id is 512 + its rank, so no 49,408-entry table is built.
        symbols = list(_bytes_to_unicode().values())
        self.base = {w: i for i, w in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
        self.ranks = {m: i for i, m in enumerate(merges)}  # keyed by the line itself: no tuples to build
        self.sot, self.eot = len(self.base) + len(merges), len(self.base) + len(merges) + 1
        self.special = dict(zip(_SPECIAL, (self.sot, self.eot), strict=True))
        self.context_length = context_length
        self.pad_id = 0  # the id after the end-of-text token (also "!"'s: see trim_padding)
        self.clean = _CLEAN[clean]
        self._bytes = _bytes_to_unicode()
        self._pattern: Any = None  # the Unicode split, compiled on the first non-ASCII text
        self._bpe = lru_cache(maxsize=10_000)(self._merge)

    def __call__(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray:
        """`lang` (NLLB's language code for Hugging Face tokenizers) has no meaning here: ignored."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot
            out[row, : len(tokens)] = tokens
        return out

    def encode(self, text: str) -> list[int]:
        """One text's ids, without the start and end tokens."""
        ids: list[int] = []
        text = self.clean(text)
        if text.isascii():
            pieces = _ASCII_SPLIT.findall(text)
        else:
            if self._pattern is None:
                import regex

                self._pattern = regex.compile("|".join(_SPECIAL) + _SPLIT, regex.IGNORECASE)
            pieces = self._pattern.findall(text)
        for piece in pieces:
            word = "".join(self._bytes[b] for b in piece.encode("utf-8"))
            ids.extend(self._bpe(word))
        return ids

    def _merge(self, token: str) -> tuple[int, ...]:
        """Apply BPE merges, lowest rank first, to one pre-split word; its token ids."""
        if token in self.special:
            return (self.special[token],)
        word = (*token[:-1], token[-1] + "</w>")
        ids = tuple(self.base[part] for part in word)
        while len(word) > 1:
            pairs = {f"{a} {b}" for a, b in itertools.pairwise(word)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            first, second = best.split(" ")
            merged_id = len(self.base) + self.ranks[best]
            merged: list[str] = []
            merged_ids: list[int] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    merged_ids.append(merged_id)
                    i += 2
                else:
                    merged.append(word[i])
                    merged_ids.append(ids[i])
                    i += 1
            word, ids = tuple(merged), tuple(merged_ids)
        return ids


def trim_padding(tokens: Any, pad: int = 0) -> Any:
    """Token ids (torch or numpy, one row per text) cut after the last column where any row holds a token
    other than `pad`: the rest is padding, which a causal text tower pooled at the end-of-text token, or a
    tower that masks padding, never looks at. (Not by counting tokens: CLIP's id 0 is "!", which a run of
    punctuation can leave inside a text.)"""
    filled = (tokens != pad).any(0).tolist()
    length = len(filled) - filled[::-1].index(True) if True in filled else 1
    return tokens[:, :length]
