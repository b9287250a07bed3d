"""The table owner on a real kernel, inside a throwaway namespace.

Each scenario runs in a child Python under ``ip netns exec`` (the test process itself stays
in the host's namespace) and prints what it saw as JSON; libnftables calls are counted by
wrapping the owner's context, so "no kernel call" is measured, not assumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.feed]

SCENARIO = r"""
import json, subprocess
from energyhubd.config.load import parse_document
from energyhubd.kernel.table import NftError, Table
from energyhubd.policy import nft

class Counting:
    def __init__(self, inner):
        self.inner, self.calls = inner, []
    def json_cmd(self, doc):
        self.calls.append("json_cmd")
        return self.inner.json_cmd(doc)
    def cmd(self, text):
        self.calls.append("cmd")
        return self.inner.cmd(text)

out = {}
table = Table()
counting = Counting(table._nft)
table._nft = counting
ruleset = nft.compile_ruleset(parse_document({}))
first = table.reconcile(ruleset, "first")
out["first"] = [first.changed, list(counting.calls)]
counting.calls.clear()
again = table.reconcile(ruleset, "again")
out["noop"] = [again.changed, list(counting.calls), table.state.writes, table.state.applies]
table.reconcile(ruleset, None)
out["reassert"] = [table.state.applies, table.state.last_reason]
bad = json.loads(json.dumps(ruleset))
bad["nftables"][1]["chain"]["hook"] = "no-such-hook"
counting.calls.clear()
try:
    table.reconcile(bad, "bad")
    out["bad"] = "accepted"
except NftError as exc:
    out["bad"] = [str(exc)[:200], list(counting.calls), table.state.last_error is not None,
                  table.state.digest == first.digest]
listing = subprocess.run(["nft", "-j", "list", "table", "inet", "energyhub"],
                         capture_output=True, text=True, check=True).stdout
out["kernel_kept"] = nft.normalise(json.loads(listing)) == nft.normalise(ruleset)
out["verify_clean"] = table.verify()
subprocess.run(["nft", "delete", "table", "inet", "energyhub"], check=True)
out["verify_deleted"] = table.verify()
subprocess.run(["nft", "flush", "chain", "inet", "energyhub", "input"], check=True)
out["verify_changed"] = table.verify()
out["repairs"] = table.state.drift_repairs
out["counters"] = sorted(table.counters())
fresh = Table()
fresh_counting = Counting(fresh._nft)
fresh._nft = fresh_counting
out["restart"] = [fresh.reconcile(ruleset, "restart").changed, list(fresh_counting.calls)]

# The normal form written is the normal form listed, for every feature the compiler has: a
# write is not followed by a listing, so verify compares a later listing with this.
from energyhubd.policy import egress
from tests.policy_samples import SAMPLES
import ipaddress
s3 = (ipaddress.ip_network("52.219.0.0/20"),)
inputs = egress.EgressInputs(("192.0.2.53",), ("203.0.113.10",), s3)
documents = {**SAMPLES, "allowlist": {"egress": {"mode": "allowlist"}, "dns": {"fallback": []}}}
out["forms"] = {}
for name, document in sorted(documents.items()):
    compiled = nft.compile_ruleset(parse_document(document), None, inputs)
    fresh.reconcile(compiled, name)
    out["forms"][name] = nft.normalise(fresh.current()) == nft.normalise(compiled)
print(json.dumps(out))
"""

MONITOR = r"""
import json, subprocess
from energyhubd.config.load import parse_document
from energyhubd.kernel.nlevents import NftMonitor
from energyhubd.kernel.table import Table
from energyhubd.policy import nft

table = Table()
monitor = NftMonitor(table.touched_by_others)
everything = NftMonitor()
ruleset = nft.compile_ruleset(parse_document({}))
nft_cli = lambda *args: subprocess.run(["nft", *args], check=True)
out = {}
def seen(label):
    import time
    time.sleep(0.2)  # notifications are queued on commit; a moment covers the scheduler
    out[label] = [monitor.drain(), everything.drain() > 0]
table.reconcile(ruleset, "first")
seen("own write")
table.reconcile(nft.compile_ruleset(parse_document({"lan": {"admin_access": False}})), "x")
seen("own rewrite")
nft_cli("add", "table", "inet", "other")
nft_cli("add", "chain", "inet", "other", "c")
seen("other table")
nft_cli("add", "table", "ip", "energyhub")
seen("same name, other family")
nft_cli("flush", "chain", "inet", "energyhub", "input")
seen("our chain flushed")
nft_cli("delete", "table", "inet", "energyhub")
seen("our table deleted")
print(json.dumps(out))
"""


def scenario(ns: str, code: str = SCENARIO) -> dict[str, Any]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_table_owner_writes_once_repairs_drift_and_never_writes_a_noop(ns: str) -> None:
    out = scenario(ns)
    # The first apply: one look (the table may already be there) and one write, no listing.
    assert out["first"] == [True, ["cmd", "json_cmd"]]
    # The same ruleset again: recognised in normal form, no kernel call at all.
    assert out["noop"] == [False, [], 1, 2]
    # A re-assert after a link change is not an apply of its own.
    assert out["reassert"] == [2, "again"]
    # A refused ruleset: one transaction, no dry run; the kernel keeps the running table.
    message, calls, has_error, digest_kept = out["bad"]
    assert calls == ["json_cmd"] and has_error and digest_kept and message
    assert out["kernel_kept"]
    # Drift: nothing to do while intact; a deleted or altered table is restored.
    assert out["verify_clean"] is None
    assert out["verify_deleted"] == "deleted"
    assert out["verify_changed"] == "changed"
    assert out["repairs"] == 2
    assert "input dropped" in out["counters"] and "forward dropped" in out["counters"]
    # A restarted daemon finds its table in place: it lists once and writes nothing.
    assert out["restart"] == [False, ["cmd"]]
    # What is written lists back in the same normal form, for every sample and allowlist mode.
    assert out["forms"] and all(out["forms"].values()), out["forms"]


def test_the_monitor_wakes_the_owner_only_for_others_changes_to_its_table(ns: str) -> None:
    out = scenario(ns, MONITOR)
    # Our own writes and other tables' changes are seen by the kernel, and filtered out.
    assert out["own write"] == [0, True]
    assert out["own rewrite"] == [0, True]
    assert out["other table"] == [0, True]
    assert out["same name, other family"] == [0, True]
    # Someone else touching our table is what verify is for.
    assert out["our chain flushed"][0] > 0
    assert out["our table deleted"][0] > 0
