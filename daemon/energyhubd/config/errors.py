"""Validation errors that name the field and the reason.

Every rejected configuration, push, lease line or API argument is reported as a list of
``FieldError``: a user fixing a document needs to know *where* and *why*, all at once, not one
error per round trip.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem at one place: ``path`` like ``forwards[0].allow_from``."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.path, "reason": self.reason}


class ConfigError(Exception):
    """A configuration was rejected; nothing was applied."""

    def __init__(self, errors: list[FieldError], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(prefix + str(error) for error in self.errors)


def join_path(base: str, key: str | int) -> str:
    """Extend a field path: ``join_path("lan", "dhcp")`` -> ``lan.dhcp``, ints become ``[i]``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key
