"""Every diagnostic reason: the English sentence, its stable code and the values it names.

The sentences are written for a customer's IT department, in English. The LuCI page shows
them in the installer's language, so every row also carries a ``code`` (one of ``CODES``) and
the few values the sentence names (``params``: a timeout, a host name, a certificate issuer).
Each function below makes one kind of sentence and its code and params from the same
arguments, and the checks call it where they decide what went wrong: a reworded sentence
keeps its code, and a code cannot name a value the sentence does not say. ``PARAMS`` is the
contract with the LuCI view and its translations (docs/api.md): every code and the names of
its params. ``other`` marks a sentence no translation covers (the page shows it as it is).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

OK = "ok"
OTHER = "other"

# code -> the params its sentence names. The LuCI view (status.js, reasonText) reads these.
PARAMS: Mapping[str, tuple[str, ...]] = {
    OK: (),
    OTHER: (),
    "filtered": ("timeout",),
    "refused": (),
    "host_unreachable": (),
    "network_unreachable": (),
    "reset": (),
    "blocked_here": (),
    "port_unreachable": (),
    "dns_refused": ("host",),
    "dns_nxdomain": ("host",),
    "dns_failed": ("host", "rcode"),
    "dns_no_address": ("host",),
    "unresolved": ("host",),
    "ntp_unsynchronised": (),
    "clock_off": ("offset",),
    "clock_unconfirmed": (),
    "ssh_no_greeting": (),
    "not_ssh": (),
    "trust_store": (),
    "tls_expired": ("host", "issuer"),
    "tls_wrong_name": ("host", "issuer"),
    "tls_intercepted": ("host", "issuer"),
    "tls_failed": ("host",),
    "tls_no_http": ("host",),
    "no_http": (),
}
CODES = frozenset(PARAMS)


@dataclass(frozen=True)
class Reason:
    """One row's verdict in words (``text``) and for machines (``code``, ``params``)."""

    code: str
    text: str
    params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A programming error, caught by the first test that makes this reason.
        if self.code not in CODES:
            raise ValueError(f"unknown reason code {self.code!r}")
        if sorted(self.params) != sorted(PARAMS[self.code]):
            raise ValueError(f"{self.code} names {sorted(PARAMS[self.code])}, not {self.params}")
        if not all(isinstance(v, str) for v in self.params.values()):
            raise ValueError(f"{self.code}: params must be strings: {self.params}")

    @property
    def passed(self) -> bool:
        return self.code == OK


def seconds(value: float) -> str:
    return f"{value:g} s"


def ok(text: str) -> Reason:
    """The flow works; ``text`` says what was seen."""
    return Reason(OK, text)


def other(text: str) -> Reason:
    """A failure without a translation of its own (the check's own error, for example)."""
    return Reason(OTHER, text)


# -- sockets ---------------------------------------------------------------------------------


def from_oserror(exc: BaseException, what: str, timeout: float) -> Reason:
    """A failed connect/send/receive in plain language."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        secs = seconds(timeout)
        return Reason("filtered", f"{what}: no answer within {secs} (filtered)", {"timeout": secs})
    number = getattr(exc, "errno", None)
    if number == errno.ECONNREFUSED:
        why = "connection refused (nothing listening, or rejected by a firewall)"
        return Reason("refused", f"{what}: {why}")
    if number == errno.EHOSTUNREACH:
        why = "host unreachable (no route, or rejected by a firewall)"
        return Reason("host_unreachable", f"{what}: {why}")
    if number == errno.ENETUNREACH:
        why = "network unreachable (the router has no default route)"
        return Reason("network_unreachable", f"{what}: {why}")
    if number == errno.ECONNRESET:
        return Reason("reset", f"{what}: connection reset (a firewall or proxy cut it)")
    if number in (errno.EACCES, errno.EPERM):
        return Reason("blocked_here", f"{what}: blocked by this router's own firewall")
    return other(f"{what}: {getattr(exc, 'strerror', None) or exc}")


def port_unreachable(what: str, port: int, hint: str = "") -> Reason:
    """UDP answered by ICMP port unreachable (``hint``: what that means for this service)."""
    extra = f": {hint}" if hint else ""
    return Reason(
        "port_unreachable", f"{what}: UDP {port} unreachable (ICMP port unreachable{extra})"
    )


# -- DNS -------------------------------------------------------------------------------------


def dns_refused(what: str, name: str) -> Reason:
    return Reason("dns_refused", f"{what} refused the query for {name}", {"host": name})


def dns_nxdomain(what: str, name: str) -> Reason:
    return Reason("dns_nxdomain", f"{what} says {name} does not exist (NXDOMAIN)", {"host": name})


def dns_failed(what: str, name: str, rcode: str) -> Reason:
    text = f"{what} failed to resolve {name} ({rcode})"
    return Reason("dns_failed", text, {"host": name, "rcode": rcode})


def dns_no_address(what: str, name: str) -> Reason:
    return Reason("dns_no_address", f"{what} returned no IPv4 address for {name}", {"host": name})


def unresolved(host: str, why: str) -> Reason:
    """``host`` could not be resolved; ``why`` is the last DNS failure's sentence."""
    return Reason("unresolved", f"cannot resolve {host}: {why}", {"host": host})


# -- NTP and the clock -----------------------------------------------------------------------


def ntp_unsynchronised(what: str, stratum: int) -> Reason:
    text = f"{what} answered but is not synchronised itself (stratum {stratum})"
    return Reason("ntp_unsynchronised", text)


def clock_off(offset: float) -> Reason:
    amount = f"{offset:+.1f} s"
    text = f"clock is {amount} off; the portal will show data at the wrong time"
    return Reason("clock_off", text, {"offset": amount})


def clock_unconfirmed() -> Reason:
    text = "clock not confirmed: no NTP server answered; the portal may show data at the wrong time"
    return Reason("clock_unconfirmed", text)


# -- SSH and HTTP ----------------------------------------------------------------------------


def ssh_no_greeting(what: str) -> Reason:
    text = (
        f"{what}: connected but the server sent no SSH greeting "
        "(a firewall or proxy may be in the path)"
    )
    return Reason("ssh_no_greeting", text)


def not_ssh(what: str, line: str) -> Reason:
    text = (
        f"{what}: answered with something that is not SSH ({line[:40]!r}); "
        "a firewall or proxy is in the path"
    )
    return Reason("not_ssh", text)


def no_http(what: str) -> Reason:
    return Reason("no_http", f"{what}: connected but no HTTP answer")


# -- TLS -------------------------------------------------------------------------------------


def trust_store(ca_file: str | None, exc: BaseException) -> Reason:
    return Reason("trust_store", f"cannot load the trust store {ca_file}: {exc}")


def tls_expired(host: str, message: str, issuer: str, consequence: str) -> Reason:
    """``message``: the verifier's words ("certificate has expired", "... not yet valid")."""
    text = (
        f"TLS to {host}: certificate {message} (issuer: {issuer}); check the router's "
        f"clock (NTP); {consequence}"
    )
    return Reason("tls_expired", text, {"host": host, "issuer": issuer})


def tls_wrong_name(host: str, issuer: str, consequence: str) -> Reason:
    text = (
        f"TLS to {host} presented a certificate for another name (issuer: {issuer}); "
        f"a device on the customer network redirects the traffic; {consequence}"
    )
    return Reason("tls_wrong_name", text, {"host": host, "issuer": issuer})


def tls_intercepted(host: str, issuer: str, consequence: str) -> Reason:
    text = (
        f"TLS to {host} is intercepted by a device on the customer network "
        f"(issuer: {issuer}); {consequence}"
    )
    return Reason("tls_intercepted", text, {"host": host, "issuer": issuer})


def tls_failed(host: str, why: str, consequence: str) -> Reason:
    text = f"TLS to {host} failed ({why}); a firewall may block or alter TLS; {consequence}"
    return Reason("tls_failed", text, {"host": host})


def tls_no_http(host: str) -> Reason:
    text = f"TLS to {host} verified but no HTTP answer came back"
    return Reason("tls_no_http", text, {"host": host})
