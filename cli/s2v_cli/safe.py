"""One sanitizer for every user-derived string the CLI and the dashboard show.

Key names, notes, reasons and params come from uploads: a key may hold ESC, OSC or C1 control
sequences that move a terminal's cursor or write its clipboard, or bidi overrides that show a
name backwards. ``shown`` makes each such character visible as an escape (``\\x1b``, ``\\u202e``)
instead of acting on it; the CLI's consoles pass everything they print through it, the dashboard's
templates every value, and ``json_text`` the JSON output (still valid JSON).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from rich.console import Console
from rich.segment import Segment

# Bidi embeddings, overrides and isolates: they reorder what follows on the line.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Every C0 control but newline and tab, DEL, every C1 control, and the bidi controls.
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_BIDI}]")  # json.dumps escapes C0 itself


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` with every control character that could act on a terminal or reorder a line made visible."""
    return _UNSAFE.sub(_visible, text)


def is_safe(text: str) -> bool:
    """True when ``text`` holds nothing ``shown`` would change (nor any other control character but \\n, \\t)."""
    return not _UNSAFE.search(text) and all(
        ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in text)


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """JSON for scripts: non-ASCII kept readable, but C1 and bidi controls as \\u escapes (still JSON)."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class SafeConsole(Console):
    """A rich console whose printed text passes through ``shown``: styles and the console's own
    cursor controls still work, a user's string cannot."""

    def _render_buffer(self, buffer: Any) -> str:
        cleaned = (segment if segment.control else Segment(shown(segment.text), segment.style, segment.control)
                   for segment in buffer)
        return super()._render_buffer(cleaned)
