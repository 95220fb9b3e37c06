"""What the script of a query tells about its language: NLLB-CLIP's source-language code, and whether an
English-only model can read it at all.

NLLB's tokenizer starts every text with a language code (eng_Latn, jpn_Jpan, ...). The NLLB-CLIP authors
trained with the code of each caption's language, so a query should carry its own. A script names the
language for most non-Latin scripts (kana is Japanese, Hangul Korean); it cannot tell German from English,
so Latin-script text is taken as English unless `--lang` says otherwise. Pure code-point ranges: no
library, no model, nothing to load on a cold query.
"""

from __future__ import annotations

from collections import Counter

#: (first, last code point, script); the first range that holds a character names its script.
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x3040, 0x30FF, "Japanese"),  # Hiragana, Katakana
    (0x31F0, 0x31FF, "Japanese"),
    (0xFF66, 0xFF9F, "Japanese"),  # half-width Katakana
    (0x1100, 0x11FF, "Korean"),
    (0x3130, 0x318F, "Korean"),
    (0xAC00, 0xD7AF, "Korean"),
    (0x4E00, 0x9FFF, "Han"),
    (0x3400, 0x4DBF, "Han"),
    (0x20000, 0x2FA1F, "Han"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0x0400, 0x04FF, "Cyrillic"),
    (0x0370, 0x03FF, "Greek"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x0530, 0x058F, "Armenian"),
)
#: The NLLB code a script implies (the language most written in it; Han without kana is Chinese).
NLLB_CODES = {
    "Japanese": "jpn_Jpan", "Korean": "kor_Hang", "Han": "zho_Hans", "Arabic": "arb_Arab",
    "Cyrillic": "rus_Cyrl", "Greek": "ell_Grek", "Hebrew": "heb_Hebr", "Thai": "tha_Thai",
    "Devanagari": "hin_Deva", "Bengali": "ben_Beng", "Tamil": "tam_Taml", "Georgian": "kat_Geor",
    "Armenian": "hye_Armn",
}  # fmt: skip
DEFAULT_CODE = "eng_Latn"


def script(text: str) -> str | None:
    """The non-Latin script most of `text`'s letters are in (Japanese when it has any kana: Japanese
    mixes kana with Han), or None for Latin-script (or letterless) text."""
    if text.isascii():
        return None
    found: Counter[str] = Counter()
    for char in text:
        point = ord(char)
        if point < 0x370:
            continue
        for first, last, name in _RANGES:
            if first <= point <= last:
                found[name] += 1
                break
    if not found:
        return None
    if found["Japanese"]:
        return "Japanese"
    return found.most_common(1)[0][0]


def nllb_code(text: str, lang: str | None = None) -> str:
    """The NLLB language code for `text`: `lang` when given, else the one its script implies."""
    if lang:
        return lang
    found = script(text)
    return NLLB_CODES.get(found, DEFAULT_CODE) if found else DEFAULT_CODE


def shown_script(name: str) -> str:
    return "Chinese or Japanese (Han)" if name == "Han" else name
