"""The one owner of ``table inet energyhub``: what the kernel holds, and the only code that
changes it, through libnftables' official JSON binding.

Every write goes through ``Table``: ``reconcile`` (replace the whole table in one atomic
transaction, only when the compiled rules differ from what was applied), ``update_sets``
(learned set contents, never rules), ``verify`` (drift repair after someone else changed or
deleted the table, e.g. ``fw4 flush``) and ``delete``. ``TableState`` is its bookkeeping and
the source of the ``policy`` part of status.

No dry run before a write: the kernel commits a transaction whole or not at all, so a refused
ruleset leaves the running table as it was, and the error text is the same one a dry run
would give. An unchanged ruleset is recognised in normal form against the last applied one
without asking the kernel (external changes are caught by ``verify``, which the nftables
monitor triggers), so a no-op costs one compile-and-compare and zero kernel calls.

No listing after a write either: the compiler emits rules in the form the kernel lists them
(``tests/test_kernel_table.py`` checks the normal forms agree for every feature), so the
written ruleset's normal form is what ``verify`` compares a later listing with. ``verify``
runs only for changes someone else made to our table (``touched_by_others``: the monitor's
notifications carry the committing socket's port id), not after our own writes.

Not thread-safe: used only by the daemon's event loop (or a one-shot command).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from energyhubd.kernel.nlevents import NETLINK_NETFILTER, NftChange, own_ports
from energyhubd.policy import nft

Json = dict[str, Any]
NFPROTO_INET = 1


class NftError(Exception):
    """libnftables refused a command; the message is libnftables' own error text."""


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    seconds: float
    digest: str


@dataclass
class TableState:
    """What energyhubd put into the kernel and what happened to it since."""

    desired: Json | None = None  # the compiled ruleset last applied (also what a repair writes)
    desired_normal: Json | None = None  # its normal form: what a no-op compares with
    # What the kernel holds, normalised (verify compares a listing with it); None: unknown,
    # the next reconcile lists first.
    applied_normal: Json | None = None
    digest: str | None = None
    applies: int = 0
    writes: int = 0  # reconciles that replaced the table (an unchanged one is not rewritten)
    set_writes: int = 0
    drift_repairs: int = 0
    last_error: str | None = None
    last_apply: float | None = None
    last_apply_ms: float | None = None
    last_reason: str | None = None
    last_drift: float | None = None


class Table:
    """Owns one libnftables context and the table's applied state."""

    def __init__(self) -> None:
        import nftables  # the binding from the nftables sources (python3-nftables)

        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        self.state = TableState()
        self._own_ports: set[int] = set()  # netlink port ids of this process (libnftables')

    # -- the only kernel calls ------------------------------------------------------------
    def _json_cmd(self, doc: Json) -> None:
        rc, _output, error = self._nft.json_cmd(doc)
        if rc != 0:
            raise NftError(_first_lines(error) or f"libnftables returned {rc}")

    def current(self) -> Json | None:
        """Our table as libnftables lists it, or None when it does not exist."""
        rc, output, _error = self._nft.cmd(f"list table {nft.FAMILY} {nft.TABLE}")
        if rc != 0 or not output:
            return None
        listing: Json = json.loads(output)
        return listing

    # -- writers ----------------------------------------------------------------------------
    def reconcile(self, ruleset: Json, reason: str | None = "apply") -> ApplyResult:
        """Make the kernel hold exactly ``ruleset``; write nothing if it already does.

        ``reason`` None: a re-assert (after a link change), not counted as an apply.
        Raises NftError (state and kernel unchanged, ``last_error`` set) when refused.
        """
        started = time.monotonic()
        normal = nft.normalise(ruleset)
        digest = nft.normal_digest(normal)
        s = self.state
        if s.applied_normal is not None and normal == s.desired_normal:
            changed = False
        else:
            # First apply of this process (or after a failure): the kernel may already hold
            # it, e.g. after a daemon restart; then handles and counters stay as they are.
            current = self.current() if s.applied_normal is None else None
            changed = current is None or nft.normalise(current) != normal
            if changed:
                try:
                    self._write(ruleset)
                except NftError as exc:
                    s.last_error = str(exc)
                    raise
            s.applied_normal = normal
        seconds = time.monotonic() - started
        s.desired, s.desired_normal, s.digest = ruleset, normal, digest
        s.writes += 1 if changed else 0
        if reason is not None:
            s.applies += 1
            s.last_apply, s.last_apply_ms = time.time(), round(seconds * 1000, 1)
            s.last_error, s.last_reason = None, reason
        return ApplyResult(changed, seconds, digest)

    def _write(self, ruleset: Json) -> None:
        self._json_cmd(nft.replace_transaction(ruleset))

    def update_sets(self, transaction: Json) -> None:
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
            self.state.set_writes += 1

    def touched_by_others(self, change: NftChange) -> bool:
        """Whether an nftables notification needs ``verify``: it concerns our table (or could
        not be read) and was not committed by this process."""
        if change.table is not None and (change.table, change.family) != (nft.TABLE, NFPROTO_INET):
            return False
        if change.port in self._own_ports:
            return False
        # libnftables opens its socket on first use (and may reopen it): learn it once more.
        self._own_ports = own_ports(NETLINK_NETFILTER)
        return change.port not in self._own_ports

    def verify(self) -> str | None:
        """After someone else changed our table: if it is gone or altered, restore it.

        Returns what had happened to it (``deleted`` or ``changed``) when it was restored,
        None when it was as applied. Raises NftError when the restore was refused.
        """
        s = self.state
        if s.desired is None:
            return None
        current = self.current()
        if current is not None and nft.normalise(current) == s.applied_normal:
            return None
        what = "deleted" if current is None else "changed"
        # Until a write succeeds nobody knows what the kernel holds: the next reconcile lists.
        s.applied_normal = None
        self._write(s.desired)
        restored = self.current()
        s.applied_normal = nft.normalise(restored) if restored else None
        s.drift_repairs += 1  # counted here, not in writes (the applies' table transactions)
        s.last_drift = time.time()
        return what

    def delete(self) -> None:
        self._json_cmd(nft.delete_transaction())
        self.state = TableState()

    # -- readers ----------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Packet counts of our commented counter rules (e.g. ``input dropped``)."""
        listing = self.current()
        return nft.rule_counters(listing) if listing else {}

    def status(self) -> dict[str, Any]:
        """The table's part of the ``policy`` status (times as epoch seconds)."""
        s = self.state
        result: dict[str, Any] = {
            "applies": s.applies,
            "writes": s.writes,
            "drift_repairs": s.drift_repairs,
            "last_error": s.last_error,
        }
        if s.digest is not None:
            result.update(
                digest=s.digest,
                last_apply=s.last_apply,
                last_apply_ms=s.last_apply_ms,
                last_reason=s.last_reason,
            )
        if s.last_drift is not None:
            result["last_drift"] = s.last_drift
        return result


def _first_lines(text: str, limit: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])
