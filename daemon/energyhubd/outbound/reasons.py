"""A stable machine-readable code beside each diagnostic reason sentence.

The sentences in ``diagnose`` are written for a customer's IT department, in English. The
LuCI page shows them in the installer's language, so every row also carries a ``code`` (one
of ``CODES``) and the few values the sentence names (``params``: a timeout, a host name, a
certificate issuer). The code is derived from the sentence here, in one table, rather than
at every place a sentence is made: the checks stay as they are, and a sentence this table
does not know yet gets the code ``other`` (the page then shows the English sentence).
"""

from __future__ import annotations

import re
from typing import Any

OK = "ok"
OTHER = "other"

# Order matters: the first match wins. "cannot resolve X: <why>" embeds another reason, so
# it comes first; the TLS sentences before the generic socket errors they may contain.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("unresolved", r"^cannot resolve (?P<host>\S+): "),
    ("trust_store", r"^cannot load the trust store"),
    (
        "tls_expired",
        r"^TLS to (?P<host>\S+): certificate .*\(issuer: (?P<issuer>.*)\); "
        r"check the router's clock",
    ),
    (
        "tls_wrong_name",
        r"^TLS to (?P<host>\S+) presented a certificate for another name "
        r"\(issuer: (?P<issuer>.*)\); ",
    ),
    (
        "tls_intercepted",
        r"^TLS to (?P<host>\S+) is intercepted by a device on the customer network "
        r"\(issuer: (?P<issuer>.*)\); ",
    ),
    ("tls_failed", r"^TLS to (?P<host>\S+) failed \("),
    ("tls_no_http", r"^TLS to (?P<host>\S+) verified but no HTTP answer"),
    ("filtered", r": no answer within (?P<timeout>[0-9.]+ s) \(filtered\)$"),
    ("port_unreachable", r"unreachable \(ICMP port unreachable"),
    ("refused", r": connection refused \("),
    ("host_unreachable", r": host unreachable \("),
    ("network_unreachable", r": network unreachable \("),
    ("reset", r": connection reset \("),
    ("blocked_here", r": blocked by this router's own firewall$"),
    ("dns_refused", r"refused the query for (?P<host>\S+)$"),
    ("dns_nxdomain", r"says (?P<host>\S+) does not exist \(NXDOMAIN\)$"),
    ("dns_failed", r"failed to resolve (?P<host>\S+) \((?P<rcode>[^)]*)\)$"),
    ("dns_no_address", r"returned no IPv4 address for (?P<host>\S+)$"),
    ("ntp_unsynchronised", r"answered but is not synchronised itself"),
    ("clock_off", r"^clock is (?P<offset>[-+][0-9.]+ s) off"),
    ("clock_unconfirmed", r"^clock not confirmed"),
    ("ssh_no_greeting", r"connected but the server sent no SSH greeting"),
    ("not_ssh", r"answered with something that is not SSH"),
    ("no_http", r": connected but no HTTP answer$"),
)
_COMPILED = tuple((code, re.compile(pattern)) for code, pattern in _PATTERNS)
CODES = frozenset({OK, OTHER, *(code for code, _ in _PATTERNS)})


def explain(passed: bool, reason: str) -> dict[str, Any]:
    """``{"code": ..., "params": {...}}`` for one row (pure)."""
    if passed:
        return {"code": OK, "params": {}}
    for code, pattern in _COMPILED:
        match = pattern.search(reason)
        if match:
            return {"code": code, "params": match.groupdict()}
    return {"code": OTHER, "params": {}}
