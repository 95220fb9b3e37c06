"""open_clip's SimpleTokenizer built with Hugging Face `tokenizers`: the alternative to imgsearch's
hand-written CLIP BPE (imgsearch.model.tokenizer) that bench/tokenizer_cold_start.py measures. It gives
the same ids (on cleaned text: ftfy, HTML unescape, whitespace and lowercasing stay in Python) but starts
slower, so imgsearch keeps the hand-written one; this module exists for the benchmark. (No bench module
is named after the package: scripts run from bench/ would import it instead of `tokenizers`.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imgsearch.model.tokenizer import _SPECIAL, _SPLIT, _bytes_to_unicode


def clip_pipeline(tokenizer: Any, context_length: int = 77) -> Any:
    """Give a `tokenizers.Tokenizer` whose model is CLIP's BPE (`</w>` word ends) open_clip's split, byte
    mapping, special tokens, truncation and padding. Cleaning stays in Python (clean_function)."""
    from tokenizers import Regex, pre_tokenizers, processors

    sot, eot = (tokenizer.token_to_id(t) for t in _SPECIAL)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex("(?i)" + "|".join(_SPECIAL) + _SPLIT), behavior="removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False, trim_offsets=False),
        ]
    )
    tokenizer.add_special_tokens(list(_SPECIAL))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{_SPECIAL[0]} $A {_SPECIAL[1]}", special_tokens=[(_SPECIAL[0], sot), (_SPECIAL[1], eot)]
    )
    tokenizer.enable_truncation(context_length)
    tokenizer.enable_padding(pad_id=0, pad_token="!", length=context_length)
    return tokenizer


def clip_tokenizers(merges: Sequence[str], context_length: int = 77) -> Any:
    """open_clip's SimpleTokenizer built with Hugging Face `tokenizers` from the merge lines: the same ids
    for cleaned text (see bench/tokenizer_cold_start.py, which measures it against ClipTokenizer)."""
    from tokenizers import Tokenizer, models

    symbols = list(_bytes_to_unicode().values())
    words = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges), *_SPECIAL]
    vocab = {word: i for i, word in enumerate(words)}
    pairs = [(first, second) for first, second in (m.split(" ") for m in merges)]
    model = models.BPE(vocab=vocab, merges=pairs, end_of_word_suffix="</w>", continuing_subword_prefix="")
    return clip_pipeline(Tokenizer(model), context_length)
