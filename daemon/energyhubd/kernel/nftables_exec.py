"""The one place that talks to nftables: libnftables' official JSON binding.

Every apply is a single JSON transaction that replaces ``inet energyhub`` atomically, after a
dry run has checked it. When the kernel already holds exactly the desired table nothing is
written, so table and chain handles stay as they were.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from energyhubd.policy import nft


class NftError(Exception):
    """libnftables refused a command; the message is libnftables' own error text."""


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    seconds: float
    digest: str


class NftExecutor:
    """Owns one libnftables context. Not thread-safe: used only by the daemon's event loop."""

    def __init__(self) -> None:
        import nftables  # the binding from the nftables sources (python3-nftables)

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)

    def _json_cmd(self, doc: dict[str, Any]) -> None:
        rc, _output, error = self._nft.json_cmd(doc)
        if rc != 0:
            raise NftError(_first_lines(error) or f"libnftables returned {rc}")

    def current(self) -> dict[str, Any] | None:
        """Our table as libnftables lists it, or None when it does not exist."""
        rc, output, _error = self._nft.cmd(f"list table {nft.FAMILY} {nft.TABLE}")
        if rc != 0 or not output:
            return None
        listing: dict[str, Any] = json.loads(output)
        return listing

    def matches(self, ruleset: dict[str, Any]) -> bool:
        current = self.current()
        return current is not None and nft.normalise(current) == nft.normalise(ruleset)

    def check(self, ruleset: dict[str, Any]) -> None:
        """Dry-run the replacing transaction: the kernel validates it, nothing changes."""
        self._nft.set_dry_run(True)
        try:
            self._json_cmd(nft.replace_transaction(ruleset))
        finally:
            self._nft.set_dry_run(False)

    def apply(
        self, ruleset: dict[str, Any], force: bool = False, checked: bool = False
    ) -> ApplyResult:
        """Make the kernel hold exactly ``ruleset``; write nothing if it already does.

        ``checked`` says the caller has just dry-run this ruleset: a dry run waits in the
        kernel about as long as the write itself, so it is not repeated.
        """
        started = time.monotonic()
        digest = nft.digest(ruleset)
        if not force and self.matches(ruleset):
            return ApplyResult(False, time.monotonic() - started, digest)
        if not checked:
            self.check(ruleset)
        self._json_cmd(nft.replace_transaction(ruleset))
        return ApplyResult(True, time.monotonic() - started, digest)

    def delete(self) -> None:
        self._json_cmd(nft.delete_transaction())

    def update_sets(self, transaction: dict[str, Any]) -> None:
        """Change the contents of our table's named sets in one atomic transaction.

        For learned data that changes between applies (resolved broker addresses, S3
        prefixes, DNS servers): only ``element`` commands and ``flush set`` on our own table
        are accepted, so this path can never alter rules or touch another table.
        """
        for command in transaction.get("nftables", []):
            verb, body = next(iter(command.items()))
            target = body.get("element") or body.get("set") or {}
            allowed = ("element" in body and verb in ("add", "delete")) or (
                "set" in body and verb == "flush"
            )
            if not allowed or target.get("table") != nft.TABLE or len(body) != 1:
                raise NftError(f"update_sets: refused command {verb} {sorted(body)}")
            if target.get("family") != nft.FAMILY:
                raise NftError(f"update_sets: refused family {target.get('family')!r}")
        if transaction.get("nftables"):
            self._json_cmd(transaction)

    def counters(self) -> dict[str, int]:
        """Packet counts of our commented counter rules (e.g. ``input dropped``)."""
        listing = self.current()
        result: dict[str, int] = {}
        if listing is None:
            return result
        for obj in listing.get("nftables", []):
            rule = obj.get("rule")
            if not rule or not rule.get("comment"):
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    result[rule["comment"]] = int(expr["counter"].get("packets", 0))
        return result


def _first_lines(text: str, limit: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])
