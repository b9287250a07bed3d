"""Turn strings chosen by strangers (DHCP host names, client ids) into safe display text.

Whoever plugs into the LAN picks their DHCP host name. The result is shown in status output,
written to logs and sent in events, so it must not be able to forge log lines, move a
terminal's cursor, hide text with bidi overrides or surprise anyone who pastes it into a
shell. It is never passed to a shell or to nft; this is defence in depth for humans.

Rule: characters that are letters or digits (any script) and ``- _ . :`` are kept; everything
else - control characters, newlines, spaces, shell metacharacters, quotes, bidi/format
characters, invalid UTF-8 bytes - is written as an escape (``\\x24`` for ``$``, ``\\xff`` for
an invalid byte, ``\\u202e`` for a bidi override), and a backslash itself becomes ``\\\\``.
The output is then at most ``max_len`` characters; a cut is marked with ``...``.
"""

from __future__ import annotations

import unicodedata

MAX_DISPLAY_LEN = 63  # one DNS label; long enough for every honest host name
ELLIPSIS = "..."
_SAFE_PUNCT = frozenset("-_.:")
_SAFE_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by "surrogateescape"
        return f"\\x{code - 0xDC00:02x}"
    if ch == "\\":
        return "\\\\"
    if ch in _SAFE_PUNCT or (ch.isascii() and ch.isalnum()):
        return ch
    if not ch.isascii() and unicodedata.category(ch) in _SAFE_CATEGORIES:
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(value: str | bytes | None, max_len: int = MAX_DISPLAY_LEN) -> str:
    """Escape ``value`` for display; bytes are decoded as UTF-8, bad bytes shown as ``\\xNN``.

    Escapes are never cut in half: the text stops before a token that would not fit.
    """
    if value is None:
        return ""
    if max_len < len(ELLIPSIS) + 1:
        raise ValueError("max_len too small")
    if isinstance(value, bytes | bytearray | memoryview):
        # Decoding a 10 MB name only to throw it away is wasteful; 4 bytes per kept char is
        # the worst case of UTF-8, plus room to notice that a cut is needed.
        raw = bytes(value[: max_len * 4 + 8])
        text = raw.decode("utf-8", errors="surrogateescape")
        cut_input = len(value) > len(raw)
    else:
        text = value[: max_len * 2 + 8]
        cut_input = len(value) > len(text)
    out: list[str] = []
    length = 0
    budget = max_len - len(ELLIPSIS)
    fits_budget = 0  # how many tokens fit if we must add the ellipsis
    for ch in text:
        token = _escape_char(ch)
        if length + len(token) <= budget:
            fits_budget += 1
        length += len(token)
        out.append(token)
        if length > max_len:
            break
    if length <= max_len and not cut_input:
        return "".join(out)
    return "".join(out[:fits_budget]) + ELLIPSIS


def optional_field(value: bytes | str | None, max_len: int = MAX_DISPLAY_LEN) -> str | None:
    """dnsmasq writes ``*`` for "none"; map that (and empty) to None, else ``safe_text``."""
    if value is None or value in (b"*", "*", b"", ""):
        return None
    return safe_text(value, max_len)
