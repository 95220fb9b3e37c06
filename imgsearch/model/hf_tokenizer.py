"""Hugging Face tokenizers without transformers or torch: the token ids of open_clip's `HFTokenizer`
(SigLIP, SigLIP 2, SigLIP-i18n, XLM-R, NLLB), for the fast text path (imgsearch.model.onnx_text).

open_clip's HFTokenizer cleans each text (its `clean` setting: whitespace, lower or canonicalize), then
calls the transformers tokenizer with `padding='max_length'`, truncation at the context length, and maybe
sets separator tokens to 0 (`strip_sep_token`); NLLB's starts each text with its source-language code.
transformers' fast tokenizers are `tokenizers.Tokenizer` objects underneath: the exporter saves that one
(tokenizer.json) with the settings transformers applies around it (compat.hf_tokenizer_config), and this
module applies them again with `tokenizers` alone. Equality with the torch tokenizer is checked on every
export (imgsearch.model.export).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .languages import nllb_code
from .tokenizer import clean_function

TOKENIZER_FILE = "tokenizer.json"
KIND = "hf"


class HfTokenizer:
    """Texts -> (N, context_length) int64 token ids, as open_clip's HFTokenizer (and, for NLLB,
    imgsearch.model.encoder.Encoder.tokenize with its language codes) gives them."""

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        """`path`: a tokenizer.json; `settings`: what compat.hf_tokenizer_config recorded."""
        from tokenizers import Tokenizer

        self.context_length = int(settings["context_length"])
        self.clean = clean_function(settings["clean"])
        self.pad_id = int(settings["pad_id"])
        self.sep_id: int | None = settings["sep_id"] if settings.get("strip_sep_token") else None
        self.language: dict[str, Any] | None = settings.get("language")
        self._tokenizer = tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(
            self.context_length, stride=0, strategy="longest_first", direction=settings["truncation_side"]
        )
        tokenizer.enable_padding(
            direction=settings["padding_side"],
            pad_id=self.pad_id,
            pad_type_id=int(settings["pad_type_id"]),
            pad_token=settings["pad_token"],
            length=self.context_length,
        )
        tokenizer.encode_special_tokens = bool(settings.get("split_special_tokens", False))
        self._code: str | None = None  # the language code the post-processor is set to

    def __call__(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray:
        """`lang`: NLLB's language code for every text; None: each text's from its script
        (imgsearch.model.languages). Other tokenizers have no language: ignored."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        codes: list[str | None] = [None] * len(texts)
        if self.language is not None:
            codes = [nllb_code(text, lang) for text in texts]
        groups = {code: [i for i, c in enumerate(codes) if c == code] for code in dict.fromkeys(codes)}
        for code, rows in groups.items():
            if code is not None:
                self._set_language(code)
            encoded = self._tokenizer.encode_batch([self.clean(texts[i]) for i in rows])
            out[rows] = [e.ids for e in encoded]
        if self.sep_id is not None:
            out[out == self.sep_id] = 0
        return out

    def _set_language(self, code: str) -> None:
        """What transformers' NLLB `set_src_lang_special_tokens` does: the code before the text and the
        end token after it (legacy: both after)."""
        if code == self._code or self.language is None:
            return
        from tokenizers import processors

        eos = self.language["eos"]
        code_id = self._tokenizer.token_to_id(code)
        if code_id is None:  # as transformers' convert_tokens_to_ids: the unknown token's id
            code_id = self.language["unk_id"]
        single = ["$A", eos, code] if self.language["legacy"] else [code, "$A", eos]
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(eos, self.language["eos_id"]), (code, code_id)]
        )
        self._code = code
