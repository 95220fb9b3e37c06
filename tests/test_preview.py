"""Inline thumbnails: each protocol's escape sequence, terminal detection, and silence elsewhere."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imgsearch.cli.preview import detect, escape_sequence, sixel
from tests.conftest import SAMPLE_PHOTOS


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm2"),
        ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, "iterm2"),
        ({"TERM": "foot", "TERM_PROGRAM": "foot"}, "sixel"),
        ({"TERM": "xterm-256color"}, None),
    ],
)
def test_terminals_are_detected_from_their_environment(monkeypatch, env, expected):
    for name in ("TERM", "TERM_PROGRAM", "LC_TERMINAL", "KITTY_WINDOW_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert detect(Tty()) == expected
    assert detect(io.StringIO()) is None  # piped: never


def test_kitty_and_iterm2_carry_the_png_thumbnail():
    image = Image.new("RGB", (120, 80), (200, 30, 30))
    kitty = escape_sequence(image, "kitty")
    assert kitty.startswith(b"\x1b_Ga=T,f=100,m=") and kitty.endswith(b"\x1b\\")
    payload = b"".join(part.split(b";", 1)[1] for part in kitty.split(b"\x1b\\")[:-1])
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (120, 80)
    iterm = escape_sequence(image, "iterm2")
    assert iterm.startswith(b"\x1b]1337;File=inline=1;") and iterm.endswith(b"\x07")


def test_large_kitty_payloads_are_chunked():
    image = Image.open(SAMPLE_PHOTOS / "cat-chelsea.jpg").convert("RGB")
    kitty = escape_sequence(image, "kitty")
    chunks = kitty.split(b"\x1b\\")[:-1]
    assert len(chunks) > 1
    assert all(len(c.split(b";", 1)[1]) <= 4096 for c in chunks)
    assert chunks[-1].startswith(b"\x1b_Gm=0") and chunks[0].startswith(b"\x1b_Ga=T,f=100,m=1")


def test_sixel_encodes_every_band_and_colour():
    image = Image.new("RGB", (10, 13), (255, 0, 0))
    image.paste((0, 0, 255), (0, 6, 10, 13))
    data = sixel(image)
    assert data.startswith(b'\x1bPq"1;1;10;13') and data.endswith(b"\x1b\\")
    assert data.count(b"-") == 3  # 13 rows = three bands of six
    assert b";2;100;0;0" in data and b";2;0;0;100" in data


def test_preview_is_silent_when_piped(cli, indexed):
    result = cli("query", "a cat", "--preview", "-n", "2")
    assert result.exit_code == 0
    assert "\x1b" not in result.output and len(result.output.splitlines()) == 2
