"""UCI files: parsing, writing, round trips and line-numbered errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energyhubd.config.errors import ConfigError
from energyhubd.openwrt.uci import Package, Section, UciError, parse, quote, render, tokenize

SAMPLE = """\
# /etc/config/energyhub written by hand
package energyhub

config energyhub 'main'
	option device_id "eh-000123"   # trailing comment
	option version 7

config forward modbus
	option port '502'
	option target "unit1"
	list allow_from '198.51.100.20'
	list allow_from 198.51.100.0/28
	option note 'it'\\''s a "quoted" value'
	option esc "a\\"b\\\\c"
	option joined 'ab'"cd"ef

config reservation
	option name 'display'
	option ip '192.168.254.200'
"""


def test_parses_sections_options_lists_and_quoting() -> None:
    pkg = parse(SAMPLE, "/etc/config/energyhub")
    assert [(s.type, s.name) for s in pkg.sections] == [
        ("energyhub", "main"),
        ("forward", "modbus"),
        ("reservation", None),
    ]
    main, forward, reservation = pkg.sections
    assert main.options == {"device_id": "eh-000123", "version": "7"}
    assert forward.options["allow_from"] == ["198.51.100.20", "198.51.100.0/28"]
    assert forward.options["note"] == 'it\'s a "quoted" value'
    assert forward.options["esc"] == 'a"b\\c'
    assert forward.options["joined"] == "abcdef"
    assert reservation.options == {"name": "display", "ip": "192.168.254.200"}
    assert forward.line == 8 and forward.option_lines["port"] == 9


def test_file_model_file_round_trip_is_stable() -> None:
    pkg = parse(SAMPLE)
    text = render(pkg)
    again = parse(text)
    assert again == pkg
    assert render(again) == text
    assert "\tlist allow_from '198.51.100.20'\n\tlist allow_from '198.51.100.0/28'\n" in text
    assert "option note 'it'\\''s a \"quoted\" value'" in text


def test_repeated_named_section_merges_and_option_replaces() -> None:
    pkg = parse(
        "config lan 'lan'\n option device a\nconfig lan 'lan'\n option device b\n"
        " option address x\n list extra 1\n list extra 2\n"
    )
    assert len(pkg.sections) == 1
    assert pkg.sections[0].options == {"device": "b", "address": "x", "extra": ["1", "2"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "config forward\n\toption port '502\n",
            "/etc/config/energyhub:2: option 'port': unterminated quote",
        ),
        (
            'config forward\n\toption target "unit1\n',
            "/etc/config/energyhub:2: option 'target': unterminated quote",
        ),
        (
            "option port 502\n",
            "/etc/config/energyhub:1: option 'port': comes before any config line",
        ),
        (
            "config forward\n\toption port\n",
            "/etc/config/energyhub:2: option 'port': expects a name and one value (quote values "
            "that contain spaces)",
        ),
        (
            "config forward\n\toption port 50 2\n",
            "/etc/config/energyhub:2: option 'port': expects a name and one value (quote values "
            "that contain spaces)",
        ),
        (
            "config forward\n\tlist allow-from x\n",
            "/etc/config/energyhub:2: list 'allow-from': invalid option name",
        ),
        (
            "config forward 'mod-bus'\n",
            "/etc/config/energyhub:1: config forward: invalid section name 'mod-bus' "
            "(letters, digits and _ only)",
        ),
        ("config\n", "/etc/config/energyhub:1: config: expects a type and an optional name"),
        (
            "\n\n  setting x y\n",
            "/etc/config/energyhub:3: unknown keyword 'setting' (expected config, option or list)",
        ),
        (
            "config a 'x'\nconfig b 'x'\n",
            "/etc/config/energyhub:2: config b: section 'x' already defined as 'a' on line 1",
        ),
    ],
)
def test_malformed_uci_names_file_line_and_option(text: str, expected: str) -> None:
    with pytest.raises(UciError) as info:
        parse(text, "/etc/config/energyhub")
    assert str(info.value) == expected
    assert isinstance(info.value, ConfigError)
    assert info.value.source == "/etc/config/energyhub"


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(UciError) as info:
        parse("option a b\nconfig x\n\toption c 'd\n\toption e f\n\tbogus\n", "f")
    assert [e.path for e in info.value.errors] == ["1: option 'a'", "3: option 'c'", "5"]


def test_writer_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        render(Package([Section("x", None, {"a": "one\ntwo"})]))


values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_quote_then_tokenize_is_identity(value: str) -> None:
    assert tokenize(f"option k {quote(value)}") == ["option", "k", value]


names = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(
    sections=st.lists(
        st.tuples(
            st.sampled_from(["lan", "forward", "x-y"]),
            st.none(),
            st.dictionaries(
                names, st.one_of(values, st.lists(values, min_size=1, max_size=3)), max_size=4
            ),
        ),
        max_size=4,
    )
)
def test_any_model_survives_render_and_parse(sections: list) -> None:  # type: ignore[type-arg]
    pkg = Package([Section(t, n, dict(o)) for t, n, o in sections])
    assert parse(render(pkg)) == pkg
