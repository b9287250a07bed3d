"""Read and write UCI configuration files without libuci.

The daemon runs where libuci's Python binding is not packaged, and it must read
``/etc/config/energyhub`` *before* anything else works, so this is a small, strict parser of
the file format (``config``/``option``/``list`` lines, quoting as the shell and libuci do) plus
a writer whose output parses back to the same model. Every error names file, line and option,
because the technician fixing the file on site has only ``vi`` and ``logread``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from energyhubd.config.errors import ConfigError, FieldError

Value = str | list[str]

NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
TYPE_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class UciError(ConfigError):
    """A UCI file was rejected; renders as ``FILE:LINE: what: reason`` like a compiler."""

    def render(self) -> str:
        def line(error: FieldError) -> str:
            if not self.source:
                return str(error)
            glue = ":" if error.path[:1].isdigit() else ": "  # FILE:LINE: but FILE: field
            return f"{self.source}{glue}{error}"

        return "\n".join(line(error) for error in self.errors)


def located(line: int, what: str, reason: str) -> FieldError:
    """An error at ``line``: the path reads ``12: option 'port'`` (file comes from the source)."""
    where = f"{line}: {what}" if what else str(line)
    return FieldError(where, reason)


@dataclass
class Section:
    """One ``config <type> ['name']`` block; ``name`` is None for anonymous sections."""

    type: str
    name: str | None = None
    options: dict[str, Value] = field(default_factory=dict)
    line: int = field(default=0, compare=False)
    option_lines: dict[str, int] = field(default_factory=dict, compare=False)

    def get(self, key: str, default: Value | None = None) -> Value | None:
        return self.options.get(key, default)


@dataclass
class Package:
    """An ordered list of sections, as in one file under ``/etc/config``."""

    sections: list[Section] = field(default_factory=list)
    source: str = field(default="", compare=False)

    def of_type(self, type_: str) -> list[Section]:
        return [s for s in self.sections if s.type == type_]

    def named(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


class _LineError(Exception):
    """Raised by the tokenizer; becomes a located FieldError."""


def tokenize(line: str) -> list[str]:
    """Split one line into words with shell-like quoting, dropping a trailing comment.

    Single quotes keep everything literally; double quotes and bare words honour backslash
    escapes; adjacent quoted and bare parts join into one word (``'a'\\''b'`` is ``a'b``).
    """
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch == "#":
            break
        word: list[str] = []
        while i < n and line[i] not in " \t\r\n":
            ch = line[i]
            if ch == "'":
                end = line.find("'", i + 1)
                if end < 0:
                    raise _LineError("unterminated quote")
                word.append(line[i + 1 : end])
                i = end + 1
            elif ch == '"':
                i += 1
                while True:
                    if i >= n:
                        raise _LineError("unterminated quote")
                    ch = line[i]
                    if ch == '"':
                        i += 1
                        break
                    if ch == "\\" and i + 1 < n:
                        word.append(line[i + 1])
                        i += 2
                        continue
                    word.append(ch)
                    i += 1
            elif ch == "\\":
                if i + 1 >= n:
                    raise _LineError("backslash at end of line")
                word.append(line[i + 1])
                i += 2
            else:
                word.append(ch)
                i += 1
        words.append("".join(word))
    return words


def parse(text: str, source: str = "") -> Package:
    """Parse UCI text into a Package; raise UciError listing every bad line."""
    package = Package(source=source)
    errors: list[FieldError] = []
    current: Section | None = None
    # Only "\n" ends a line (as in libuci); str.splitlines would also split on \x1e etc.
    for number, raw in enumerate(text.split("\n"), start=1):
        what = ""
        try:
            words = tokenize(raw)
        except _LineError as exc:
            head = raw.split()
            if len(head) >= 2 and head[0] in ("option", "list"):
                what = f"{head[0]} {head[1].strip(chr(39) + chr(34))!r}"
            errors.append(located(number, what, str(exc)))
            continue
        if not words:
            continue
        keyword, args = words[0], words[1:]
        if keyword == "package":
            if len(args) != 1:
                errors.append(located(number, "package", "expects one name"))
            continue
        if keyword == "config":
            current = _start_section(package, args, number, errors)
            continue
        if keyword in ("option", "list"):
            _add_value(current, keyword, args, number, errors)
            continue
        errors.append(
            located(number, "", f"unknown keyword {keyword!r} (expected config, option or list)")
        )
    if errors:
        raise UciError(errors, source)
    return package


def _start_section(
    package: Package, args: list[str], number: int, errors: list[FieldError]
) -> Section | None:
    if not 1 <= len(args) <= 2:
        errors.append(located(number, "config", "expects a type and an optional name"))
        return None
    type_ = args[0]
    name = args[1] if len(args) == 2 else None
    if not TYPE_RE.match(type_):
        errors.append(located(number, "config", f"invalid section type {type_!r}"))
        return None
    if name is not None and not NAME_RE.match(name):
        errors.append(
            located(
                number,
                f"config {type_}",
                f"invalid section name {name!r} (letters, digits and _ only)",
            )
        )
        return None
    if name is not None:
        existing = package.named(name)
        if existing is not None:
            if existing.type != type_:
                errors.append(
                    located(
                        number,
                        f"config {type_}",
                        f"section {name!r} already defined as {existing.type!r} "
                        f"on line {existing.line}",
                    )
                )
                return None
            return existing  # libuci merges a repeated named section into the first one
    section = Section(type_, name, line=number)
    package.sections.append(section)
    return section


def _add_value(
    section: Section | None, keyword: str, args: list[str], number: int, errors: list[FieldError]
) -> None:
    if section is None:
        what = f"{keyword} {args[0]!r}" if args else keyword
        errors.append(located(number, what, "comes before any config line"))
        return
    if len(args) != 2:
        what = f"{keyword} {args[0]!r}" if args else keyword
        errors.append(
            located(number, what, "expects a name and one value (quote values that contain spaces)")
        )
        return
    key, value = args
    if not NAME_RE.match(key):
        errors.append(located(number, f"{keyword} {key!r}", "invalid option name"))
        return
    if keyword == "option" or not isinstance(section.options.get(key), list):
        section.option_lines[key] = number  # a list is reported at its first line
    if keyword == "option":
        section.options[key] = value  # a later option replaces an earlier one, as in libuci
        return
    existing = section.options.get(key)
    if isinstance(existing, list):
        existing.append(value)
    elif existing is None:
        section.options[key] = [value]
    else:
        section.options[key] = [existing, value]


def quote(value: str) -> str:
    """Single-quote a value so that :func:`tokenize` returns it unchanged.

    A line break cannot be represented on one UCI line, so it is refused instead of written
    as a file that would not parse back.
    """
    if "\n" in value or "\r" in value:
        raise ValueError(f"UCI values cannot contain line breaks: {value!r}")
    return "'" + value.replace("'", "'\\''") + "'"


def render(package: Package) -> str:
    """Render a Package as UCI text (the layout ``uci export`` uses, without a package line)."""
    blocks: list[str] = []
    for section in package.sections:
        head = f"config {section.type}"
        if section.name is not None:
            head += f" {quote(section.name)}"
        lines = [head]
        for key, value in section.options.items():
            if isinstance(value, list):
                lines.extend(f"\tlist {key} {quote(item)}" for item in value)
            else:
                lines.append(f"\toption {key} {quote(value)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
