"""The MQTT link to the Ferroamp portal (paho-mqtt 1.6.1 and 2.x, TLS 1.2+, mutual certs).

Threading contract: the link runs ONE thread of its own that owns the paho client and the
link's session-counter file (``session.SessionCounter``). That thread never touches daemon
state: every received message, connection change and round-trip result is handed over as a
zero-argument callable through ``post`` (the daemon's event loop runs it). The daemon thread
only calls the ``publish_*`` / ``request_round_trip`` / ``kick`` / ``stop`` methods, which put
work in thread-safe slots and wake the link thread through a pipe; they never call paho, so no
paho lock is ever taken from two threads (paho 1.6 calls ``on_publish`` with its own message
lock held, which deadlocks a naive cross-thread publish).

Fleet rules built in (docs/fleet.md): reconnects are driven here with full-jitter backoff that
resets only after a connection HELD ``backoff_reset_after`` seconds (see ``backoff``); every
connection asks the portal for its desired state (``config/get``) instead of relying on a
cluster-wide retained store; a confirm that needs a fresh connection waits a jittered delay
first; a broker that kicks us right after connecting, again and again, is another site with
our identity and is reported as ``identity_conflict`` once a connection holds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from energyhubd.backoff import Backoff
from energyhubd.config.sections.portal import PortalSettings

from .outbox import Outbox, OutMessage
from .session import SessionCounter
from .topics import (
    Topics,
    birth_payload,
    death_payload,
    desired_request_payload,
    dumps,
    event_payload,
    health_payload,
)

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]

MAX_INFLIGHT = 20  # QoS 1 messages handed to paho but not yet acknowledged
STOP_FLUSH_SECONDS = 2.0
RECONNECT_TO_VERIFY = "reconnecting to verify a new configuration"
IDENTITY_CONFLICT = "identity_conflict"
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our id
UNSUPPORTED_PROTOCOL = (0x01, 0x84)  # CONNACK: 3.1.1 "unacceptable version" / 5 "unsupported"
SHORT_SESSIONS_FOR_CONFLICT = 3  # consecutive broker-closed sessions that did not hold

IDLE_WAIT_MAX = 30.0  # seconds the link thread sleeps at most on a quiet connection
# No answer to config/get (the portal was restarting, a cluster lost it): ask again after
# this, doubling up to DESIRED_RETRY_MAX, so a site is never left without its desired state.
DESIRED_RETRY = 30.0
DESIRED_RETRY_MAX = 960.0
KEEPALIVE_SLACK = 0.05  # wake this much after paho's keepalive deadline, never before it


@dataclass(frozen=True)
class LinkState:
    """A connection change, delivered to the daemon through ``post``."""

    connected: bool
    reason: str = ""
    retry_in: float | None = None  # seconds until the next attempt (when not connected)
    dropped: int = 0  # events lost to the bounded queue, reported once
    session: int | None = None  # the session number of the birth (when connected)
    at: float = field(default_factory=time.monotonic)  # when it happened, on the link thread


class _PinnedNameContext(ssl.SSLContext):
    """SSLContext that checks the certificate against ``pinned_name`` instead of the host we
    dial. paho passes its connect host as ``server_hostname``; a lab (or a site with a pinned
    broker address) dials an IP but must still verify the broker's real name."""

    pinned_name: str = ""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.pinned_name
        return super().wrap_socket(sock, *args, **kwargs)


def make_tls_context(settings: PortalSettings) -> ssl.SSLContext:
    """TLS 1.2 minimum, CA-verified broker certificate matching ``server_name``, client cert."""
    ctx = _PinnedNameContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.pinned_name = settings.server_name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=settings.ca_file)
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx


def _rc_value(rc: object) -> int:
    """paho 1.6 v3 passes ints, v5 and 2.x pass ReasonCode(s) objects with ``.value``."""
    value = getattr(rc, "value", rc)
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1


def connect_failure(exc: BaseException, host: str, port: int) -> str:
    """Name the stage a connection attempt failed in (DNS, TCP, TLS handshake)."""
    if isinstance(exc, socket.gaierror):
        return f"DNS: cannot resolve {host}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake: broker certificate refused: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake: {exc.reason or exc} ({exc})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"TCP: connect to {host}:{port} timed out"
    if isinstance(exc, OSError):
        return f"TCP: connect to {host}:{port}: {exc.strerror or exc}"
    return f"connect: {type(exc).__name__}: {exc}"


def _new_client(client_id: str, version: str) -> mqtt.Client:
    """Create a paho client on either major version."""
    kwargs: dict[str, Any] = {"client_id": client_id}
    if version == "5":
        kwargs["protocol"] = mqtt.MQTTv5
    else:
        kwargs["protocol"] = mqtt.MQTTv311
        kwargs["clean_session"] = True
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:  # paho >= 2.0
        kwargs["callback_api_version"] = api.VERSION2
    return mqtt.Client(**kwargs)


def _properties(packet: str, **values: Any) -> Any:
    """MQTT 5 properties (same module path on paho 1.6 and 2.x)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(getattr(PacketTypes, packet))
    for name, value in values.items():
        setattr(props, name, value)
    return props


class PortalLink:
    """Owns the MQTT connection; see the module docstring for the threading contract.

    Callbacks (all run by the daemon through ``post``):
      ``on_state(LinkState)``, ``on_desired(payload: bytes)``, ``on_round_trip(token: int)``,
      ``on_command(payload: bytes)``.
    ``applied_version`` (and ``applied_epoch``) are called on the link thread at each
    connect; they must only read an immutable snapshot (e.g. an int attribute).
    ``state_dir``: where the session counter persists (``None``: in memory only).
    """

    def __init__(
        self,
        settings: PortalSettings,
        device_id: str,
        post: Post,
        *,
        software_version: str,
        applied_version: Callable[[], int | None],
        applied_epoch: Callable[[], int | None] | None = None,
        on_state: Callable[[LinkState], None] | None = None,
        on_desired: Callable[[bytes], None] | None = None,
        on_round_trip: Callable[[int], None] | None = None,
        on_command: Callable[[bytes], None] | None = None,
        rand: Callable[[], float] | None = None,
        tls_context: Callable[[PortalSettings], ssl.SSLContext] = make_tls_context,
        state_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(device_id)
        self.client_id = device_id
        self._post = post
        self._software = software_version
        self._applied_version = applied_version
        self._applied_epoch = applied_epoch
        self._on_state = on_state
        self._on_desired = on_desired
        self._on_round_trip = on_round_trip
        self._on_command = on_command
        self._tls_context = tls_context
        self._rand = rand or random.random
        self.backoff = Backoff(
            settings.backoff_initial, settings.backoff_max, self._rand, jitter="full"
        )
        self.outbox = Outbox(settings.queue_size)  # events and command results
        self.run_id = secrets.token_hex(4)  # beside every seq: which daemon run counted it
        self.sessions = SessionCounter(state_dir)
        self._event_seq = itertools.count(1)
        self._health_seq = itertools.count(1)
        self._slot_lock = threading.Lock()
        self._reported: bytes | None = None  # config/reported waiting to be sent
        self._reported_last: bytes | None = None  # re-sent on each connect (retained anyway)
        self._health: bytes | None = None  # latest health waiting to be sent (latest only)
        self._health_last: bytes | None = None  # re-sent by a portal "resync"
        self._ping_token: int | None = None
        self._ping_fresh = False  # the ping must travel on a connection made after the request
        self._fresh_at = 0.0  # monotonic time the fresh reconnect may start (jittered)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._connected = False
        self.dropped_total = 0
        # link-thread-only state
        self._inflight: dict[int, OutMessage] = {}
        self._ping_mid: tuple[int, int] | None = None  # (mid, token)
        self._session_ok = False
        self._session_number = 0
        self._connected_at = 0.0
        self._held = False  # the current connection has lasted backoff_reset_after
        self._reconnect_requested = False
        self._refused = ""
        self._taken_over = False
        self._sub_mid: int | None = None
        self._want_desired = False  # send config/get (after the SUBACK)
        self._desired_due: float | None = None  # ask again then, unless an answer came
        self._desired_wait = DESIRED_RETRY
        self._resync: list[Any] = []  # ids of resync commands to answer
        self._short_sessions = 0
        self._takeovers = 0
        self._protocol = settings.mqtt_version  # may fall back to 3.1.1 (broker refused 5)
        self._fallback = ""
        self._selector: selectors.BaseSelector | None = None

    # ---- daemon-thread API -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Last known state (a plain bool read; informative only)."""
        return self._connected

    @property
    def protocol(self) -> str:
        """The MQTT version in use ("5", or "3.1.1" also after a fallback)."""
        return self._protocol

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("PortalLink already started")
        self._thread = threading.Thread(target=self._run, name="portal-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: publish retained ``offline`` if connected, then disconnect."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # keep the pipe open for the straggler; never close fds it may use
        if self._wake_w >= 0:
            # Mark closed first: a later publish must not write into a reused fd number.
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def kick(self) -> None:
        """Reconnect now instead of waiting out the backoff (e.g. right after a WAN change)."""
        self._kick.set()
        self._wake()

    def publish_event(self, kind: str, data: dict[str, Any] | None = None) -> None:
        """QoS 1 event; queued in the bounded event queue, sent oldest first."""
        payload = event_payload(next(self._event_seq), kind, data, run=self.run_id)
        self.outbox.put(OutMessage(self.topics.events, payload, qos=1))
        self._wake()

    def publish_health(self, data: dict[str, Any]) -> None:
        """Health report (QoS 0). Latest only: while offline a newer report replaces the
        older one, so long outages never push events out of their queue."""
        payload = health_payload(next(self._health_seq), data, run=self.run_id)
        with self._slot_lock:
            self._health = self._health_last = payload
        self._wake()

    def publish_command_result(self, doc: dict[str, Any]) -> None:
        """QoS 1 answer on ``command/result``; queued like an event."""
        self.outbox.put(OutMessage(self.topics.command_result, dumps(doc), qos=1))
        self._wake()

    def publish_reported(self, doc: dict[str, Any]) -> None:
        """Retained ``config/reported``; only the latest one matters, so it is a slot."""
        with self._slot_lock:
            self._reported = self._reported_last = dumps(doc)
        self._wake()

    def request_round_trip(self, token: int, fresh: bool = True) -> None:
        """Publish a QoS 1 ping; ``on_round_trip(token)`` is posted when the broker acks it.

        ``fresh=True`` (a change that can alter the path to the portal) proves it over a NEW
        connection: an established TCP flow can survive a firewall or routing change that
        blocks every new one (conntrack), and confirming over it would lock the site out at
        the next reconnect. The link first waits a random delay up to
        ``min(fresh_confirm_delay, confirm_window / 4)`` so a push to a whole fleet does not
        make it reconnect in one second. ``fresh=False`` pings over the live connection.
        While disconnected the request waits for the next connection (which is new anyway);
        only the latest token is kept. No answer means no confirm, as the window needs.
        """
        s = self.settings
        spread = max(0.0, min(s.fresh_confirm_delay, s.confirm_window / 4))
        with self._slot_lock:
            self._ping_token = token
            self._ping_fresh = fresh
            self._fresh_at = time.monotonic() + self._rand() * spread
        self._wake()

    # ---- link thread ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 512):
                pass

    def _emit(self, fn: Callable[[], None]) -> None:
        self._post(fn)

    def _emit_state(self, state: LinkState) -> None:
        self._connected = state.connected
        callback = self._on_state
        if callback is not None:
            self._emit(lambda: callback(state))

    def _run(self) -> None:
        # poll: no descriptor limit and, unlike epoll, no descriptor of its own per link.
        poll = getattr(selectors, "PollSelector", None)
        self._selector = poll() if poll is not None else selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                try:
                    reason = self._session()
                except Exception as exc:  # a bug here must not silently end the portal link
                    log.exception("portal link session failed")
                    self._connected = False
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                if self._stop.is_set():
                    break
                if reason == RECONNECT_TO_VERIFY:
                    self._emit_state(LinkState(False, reason, retry_in=0.0))
                    continue
                delay = self.backoff.next_delay()
                self._emit_state(LinkState(False, reason, retry_in=delay))
                log.info("portal link down (%s); retry in %.1f s", reason, delay)
                self._sleep(delay)
        finally:
            self._selector.close()

    def _wait(self, sock: Any, write: bool, timeout: float) -> tuple[bool, bool]:
        """Wait for the socket (and always the wake pipe); returns (readable, writable).
        ``selectors`` (poll), not ``select.select``: a fleet test runs thousands of links in
        one process, far above select's 1024-descriptor limit."""
        sel = self._selector
        assert sel is not None
        registered = [self._wake_r]
        sel.register(self._wake_r, selectors.EVENT_READ)
        fd = -1
        if sock is not None:
            fd = sock.fileno()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
            sel.register(fd, events)
            registered.append(fd)
        readable = writable = False
        try:
            for key, mask in sel.select(max(0.0, timeout)):
                if key.fd == self._wake_r:
                    self._drain_wake()
                elif key.fd == fd:
                    readable = bool(mask & selectors.EVENT_READ)
                    writable = bool(mask & selectors.EVENT_WRITE)
        finally:
            for each in registered:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(each)
        return readable, writable

    def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds unless stopped or kicked; publishes only wake the wait."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            if self._kick.is_set():
                self._kick.clear()
                self.backoff.reset()
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(OSError, ValueError):
                self._wait(None, False, left)

    def _session(self) -> str:
        """One connection attempt and, if it succeeds, its whole life. Returns why it ended."""
        self._session_ok = False
        self._held = False
        self._reconnect_requested = False
        self._refused = ""
        self._taken_over = False
        self._inflight = {}
        self._ping_mid = None
        self._sub_mid = None
        self._want_desired = False
        self._desired_due = None
        self._desired_wait = DESIRED_RETRY
        protocol = self._protocol
        try:
            client = self._connect(protocol)
        except (OSError, ValueError, ssl.SSLError) as exc:
            return connect_failure(exc, self.settings.host, self.settings.port)
        try:
            reason = self._serve(client)
        except (OSError, ValueError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._end_session(client)
        if self._session_ok:
            self._after_session(reason)
        elif reason != "stopped":
            reason = self._before_connack(reason, protocol)
        return reason

    def _before_connack(self, reason: str, protocol: str) -> str:
        """Name a failure after the transport was up but before CONNACK; fall back to MQTT
        3.1.1 when the broker refused (or silently dropped) our MQTT 5 CONNECT."""
        # Only a refusal or a close BY THE BROKER counts: a CONNACK timeout of a busy broker
        # must not downgrade a site to 3.1.1 (and lose the Will Delay) for the whole run.
        closed = reason.startswith(("read failed", "socket closed"))
        refused_v5 = protocol == "5" and (
            any(f"({code})" in self._refused for code in UNSUPPORTED_PROTOCOL)
            or (closed and not self._refused)
        )
        if refused_v5 and self.settings.mqtt_version == "5":
            self._protocol = "3.1.1"
            self._fallback = reason
            return f"{reason}; trying MQTT 3.1.1 next (the broker may not speak MQTT 5)"
        if protocol == "3.1.1" and self._fallback:
            # 3.1.1 fails the same way: the version was not the problem, go back to 5.
            self._protocol, self._fallback = self.settings.mqtt_version, ""
        if self._refused:
            return reason
        if self.settings.tls:
            return (
                f"no CONNACK: {reason} after the TLS handshake (with TLS 1.3 a client "
                "certificate the broker refuses shows here, see the broker's log)"
            )
        return f"no CONNACK: {reason} after CONNECT"

    def _after_session(self, reason: str) -> None:
        """Backoff and identity-conflict bookkeeping for a session that had its CONNACK."""
        if self._held or reason in (RECONNECT_TO_VERIFY, "stopped"):
            return
        # Ended before the connection held: the backoff is not reset. Closed BY THE BROKER
        # (not a keepalive timeout of a flapping WAN) several times in a row, or MQTT 5
        # "session taken over", means another site uses our identity.
        if not (self._taken_over or reason.startswith(("read failed", "session taken over"))):
            return
        self._short_sessions += 1
        if self._taken_over:
            self._takeovers += 1

    def _check_held(self) -> None:
        """Once a connection has lasted ``backoff_reset_after``: reset the backoff and report a
        twin identity seen before (now that the report can get through)."""
        if self._held or time.monotonic() - self._connected_at < self.settings.backoff_reset_after:
            return
        self._held = True
        self.backoff.reset()
        if self._takeovers or self._short_sessions >= SHORT_SESSIONS_FOR_CONFLICT:
            data = {"takeovers": self._takeovers, "short_sessions": self._short_sessions}
            log.warning("portal link: another client uses our identity? %s", data)
            self.publish_event(IDENTITY_CONFLICT, data)
            self._emit_state(LinkState(True, IDENTITY_CONFLICT, session=self._session_number))
        self._short_sessions = self._takeovers = 0

    def _end_session(self, client: mqtt.Client) -> None:
        # A retained report is never requeued behind newer ones: the slot re-sends the latest.
        self._inflight = {
            mid: m for mid, m in self._inflight.items() if m.topic != self.topics.reported
        }
        if self._inflight:
            # Unacknowledged events go back to the front, to be resent in order.
            self.outbox.requeue(list(self._inflight.values()))
            self._inflight = {}
        if self._ping_mid is not None:
            # The ping was not acknowledged: keep asking on the next connection.
            with self._slot_lock:
                if self._ping_token is None:
                    self._ping_token = self._ping_mid[1]
            self._ping_mid = None
        self._close(client)
        self._connected = False

    @staticmethod
    def _close(client: mqtt.Client) -> None:
        """Send DISCONNECT (so the broker does NOT publish the Will) and close the socket now.

        A socket left to the garbage collector would close at some later moment; the broker
        would then publish the Will ``offline`` over the ``online`` of the next connection."""
        with contextlib.suppress(Exception):
            if client.socket() is not None:
                client.disconnect()
                deadline = time.monotonic() + 1.0
                while client.socket() is not None and client.want_write():
                    if time.monotonic() > deadline or client.loop_write() != 0:
                        break
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _connect(self, protocol: str) -> mqtt.Client:
        s = self.settings
        client = _new_client(self.client_id, protocol)
        self._connected_at = time.monotonic()
        will = death_payload(self.sessions.next, self.run_id, "lost")
        if protocol == "5" and s.will_delay > 0:
            # The broker waits will_delay before announcing us offline, and drops the Will if
            # we are back by then: a takeover or a short blip shows no false offline. The
            # session must outlive the delay for that (MQTT 5 §3.1.3.2.2).
            props = _properties("WILLMESSAGE", WillDelayInterval=s.will_delay)
            client.will_set(self.topics.status, will, qos=1, retain=True, properties=props)
        else:
            client.will_set(self.topics.status, will, qos=1, retain=True)
        if s.tls:
            client.tls_set_context(self._tls_context(s))
        client.on_connect = self._cb_connect
        client.on_message = self._cb_message
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_disconnect = self._cb_disconnect
        if protocol == "5":
            props = _properties("CONNECT", SessionExpiryInterval=s.will_delay)
            client.connect(s.host, s.port, s.keepalive, clean_start=True, properties=props)
        else:
            client.connect(s.host, s.port, s.keepalive)
        return client

    def _serve(self, client: mqtt.Client) -> str:
        connack_deadline = time.monotonic() + max(5.0, float(self.settings.keepalive))
        stop_deadline: float | None = None
        while True:
            if self._refused:
                return self._refused
            if not self._session_ok and time.monotonic() > connack_deadline:
                return "no CONNACK within the keepalive"
            if self._stop.is_set():
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_FLUSH_SECONDS
                    if self._session_ok:
                        death = death_payload(self._session_number, self.run_id, "stopped")
                        client.publish(self.topics.status, death, qos=1, retain=True)
                    else:
                        return "stopped"
                if not client.want_write() or time.monotonic() > stop_deadline:
                    client.disconnect()
                    return "stopped"
            if self._kick.is_set():
                self._kick.clear()  # already connected: nothing to hurry
            if self._session_ok and not self._stop.is_set():
                self._check_held()
                self._pump(client)
                if self._reconnect_requested:
                    client.disconnect()
                    return RECONNECT_TO_VERIFY
            sock = client.socket()
            if sock is None:
                return "socket closed"
            pending = getattr(sock, "pending", None)
            if callable(pending) and pending() > 0:
                readable = True
                writable = client.want_write()
            else:
                readable, writable = self._wait(sock, client.want_write(), self._idle_wait(client))
            if readable:
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    return self._refused or self._lost(f"read failed: {mqtt.error_string(rc)}")
            if writable:
                rc = client.loop_write()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    return f"write failed: {mqtt.error_string(rc)}"
            rc = client.loop_misc()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return self._refused or self._lost(f"keepalive: {mqtt.error_string(rc)}")

    def _lost(self, reason: str) -> str:
        if self._taken_over:
            return "session taken over by another client with our identity"
        return reason

    def _idle_wait(self, client: mqtt.Client | None = None) -> float:
        """How long the link thread may sleep with nothing to read, write or send.

        Everything the daemon hands over wakes it through the pipe, so the timeout only has
        to serve paho's keepalive bookkeeping (``loop_misc``): sleep until paho's own
        deadline (a keepalive after the last packet out or in, read from the client as
        paho 1.6 and 2.x keep it), so an idle link wakes once per keepalive to send the
        PINGREQ and once for the PINGRESP; should that bookkeeping not be readable, a quarter
        of the keepalive. Earlier for the backoff-reset moment, a ``config/get`` retry and a
        jittered fresh-connection confirm. Before CONNACK and while stopping it stays short,
        for the deadlines checked in ``_serve``.
        """
        if not self._session_ok or self._stop.is_set():
            return 1.0
        now = time.monotonic()
        keepalive = float(self.settings.keepalive)
        due = _keepalive_due(client, keepalive)
        if due is None:
            wait = min(IDLE_WAIT_MAX, max(1.0, keepalive / 4))
        else:
            wait = min(keepalive, max(0.0, due - now)) + KEEPALIVE_SLACK
        if not self._held:
            wait = min(wait, self._connected_at + self.settings.backoff_reset_after - now)
        if self._desired_due is not None:
            wait = min(wait, self._desired_due - now)
        with self._slot_lock:
            if self._ping_fresh:
                wait = min(wait, self._fresh_at - now)
        return max(0.05, wait)

    def _pump(self, client: mqtt.Client) -> None:
        """Send slots then the event queue, oldest first, at most MAX_INFLIGHT unacknowledged."""
        with self._slot_lock:
            if self._ping_fresh:
                if time.monotonic() >= self._fresh_at:
                    self._ping_fresh = False
                    self._reconnect_requested = True
                    return
                token = None  # keep it for the fresh connection
            else:
                token, self._ping_token = self._ping_token, None
            reported, self._reported = self._reported, None
            health, self._health = self._health, None
        if reported is not None:
            self._send(client, OutMessage(self.topics.reported, reported, qos=1, retain=True))
        if health is not None:
            self._send(client, OutMessage(self.topics.health, health, qos=0))
        if token is not None:
            info = client.publish(self.topics.ping, dumps({"token": token}), qos=1)
            self._ping_mid = (info.mid, token)
        if self._desired_due is not None and time.monotonic() >= self._desired_due:
            self._want_desired = True
            self._desired_wait = min(DESIRED_RETRY_MAX, self._desired_wait * 2)
        if self._want_desired:
            self._want_desired = False
            self._request_desired(client)
        if self._resync:
            self._do_resync(client)
        dropped = self.outbox.take_dropped()
        if dropped:
            self.dropped_total += dropped
            self._emit_state(LinkState(True, "events dropped", dropped=dropped))
            data = {"dropped": dropped, "dropped_total": self.dropped_total}
            notice = event_payload(next(self._event_seq), "outbox_overflow", data, run=self.run_id)
            self._send(client, OutMessage(self.topics.events, notice, qos=1))
        while len(self._inflight) < MAX_INFLIGHT:
            message = self.outbox.pop()
            if message is None:
                break
            if not self._send(client, message):
                self.outbox.requeue([message])
                break

    def _send(self, client: mqtt.Client, message: OutMessage) -> bool:
        info = client.publish(message.topic, message.payload, message.qos, message.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        if message.qos > 0:
            self._inflight[info.mid] = message
        return True

    def _birth(self, client: mqtt.Client) -> None:
        try:
            applied = self._applied_version()
        except Exception:
            log.exception("applied_version callback failed")
            applied = None
        birth = birth_payload(self._session_number, self.run_id, self._software, applied)
        client.publish(self.topics.status, birth, qos=1, retain=True)

    def _request_desired(self, client: mqtt.Client) -> None:
        """Ask the portal for the desired state (docs/mqtt.md ``config/get``). The answer comes
        on ``config/desired`` (MQTT 5: named as Response Topic, with Correlation Data)."""
        correlation = secrets.token_hex(8)
        # Jittered so the retries of a fleet that lost its portal do not line up.
        self._desired_due = time.monotonic() + self._desired_wait * (0.5 + self._rand() / 2)
        try:
            applied = self._applied_version()
            epoch = self._applied_epoch() if self._applied_epoch is not None else None
        except Exception:
            log.exception("applied version callback failed")
            applied = epoch = None
        payload = desired_request_payload(
            self._session_number, self.run_id, applied, epoch, correlation
        )
        if self._protocol == "5":
            props = _properties(
                "PUBLISH",
                ResponseTopic=self.topics.desired,
                CorrelationData=correlation.encode(),
            )
            client.publish(self.topics.desired_get, payload, qos=1, properties=props)
        else:
            client.publish(self.topics.desired_get, payload, qos=1)

    def _do_resync(self, client: mqtt.Client) -> None:
        """Portal ``resync``: republish birth, reported and health, and ask for desired."""
        ids, self._resync = self._resync, []
        self._birth(client)
        with self._slot_lock:
            reported, health = self._reported_last, self._health_last
        if reported is not None:
            self._send(client, OutMessage(self.topics.reported, reported, qos=1, retain=True))
        if health is not None:
            self._send(client, OutMessage(self.topics.health, health, qos=0))
        self._request_desired(client)
        for ident in ids:
            answer = {"id": ident, "ok": True, "result": {"resync": "sent"}}
            self._send(client, OutMessage(self.topics.command_result, dumps(answer), qos=1))

    # paho callbacks: *args because the signatures differ between 1.6 (v3/v5) and 2.x.

    def _cb_connect(self, client: mqtt.Client, _userdata: object, *args: Any) -> None:
        rc = _rc_value(args[1]) if len(args) >= 2 else -1
        if rc != 0:
            # paho 1.6 on 3.1.1 passes a bare int: name it; ReasonCode objects name themselves.
            text = args[1] if hasattr(args[1], "value") else mqtt.connack_string(rc)
            self._refused = f"CONNACK refused: {text} ({rc})"
            return
        self._session_ok = True
        self._connected_at = time.monotonic()
        self._session_number = self.sessions.commit()
        with self._slot_lock:
            if self._reported is None:
                self._reported = self._reported_last
            self._ping_fresh = False  # this connection is newer than any pending request
        self._birth(client)
        # The desired state is ASKED FOR once the subscription stands (the SUBACK); a
        # retained copy may also arrive and is only a cache (docs/fleet.md).
        result, mid = client.subscribe([(self.topics.desired, 1), (self.topics.command, 1)])
        self._sub_mid = mid if result == mqtt.MQTT_ERR_SUCCESS else None
        self._emit_state(LinkState(True, "connected", session=self._session_number))

    def _cb_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int, *_a: Any) -> None:
        if mid == self._sub_mid:
            self._want_desired = True
            self._wake()

    def _cb_disconnect(self, _client: mqtt.Client, _userdata: object, *args: Any) -> None:
        if any(_rc_value(a) == SESSION_TAKEN_OVER for a in args if not isinstance(a, dict)):
            self._taken_over = True

    def _cb_message(self, _client: mqtt.Client, _userdata: object, msg: Any) -> None:
        if msg.topic == self.topics.desired and self._on_desired is not None:
            self._desired_due = None  # answered (or pushed): no need to ask again
            payload = bytes(msg.payload)
            callback = self._on_desired
            self._emit(lambda: callback(payload))
        elif msg.topic == self.topics.command:
            payload = bytes(msg.payload)
            resync = _resync_id(payload)
            if resync is not None:
                self._resync.append(resync[0])
                self._wake()
            elif self._on_command is not None:
                on_command = self._on_command
                self._emit(lambda: on_command(payload))

    def _cb_publish(self, _client: mqtt.Client, _userdata: object, mid: int, *rest: Any) -> None:
        # paho 2.x passes the PUBACK reason code; >= 0x80 (e.g. not authorized) is a failure.
        if rest and _rc_value(rest[0]) >= 0x80:
            log.warning("broker refused publish mid %s: %s", mid, rest[0])
            self._inflight.pop(mid, None)
            return
        self._inflight.pop(mid, None)
        if self._ping_mid is not None and self._ping_mid[0] == mid:
            token = self._ping_mid[1]
            self._ping_mid = None
            callback = self._on_round_trip
            if callback is not None:
                self._emit(lambda: callback(token))


def _resync_id(payload: bytes) -> tuple[Any] | None:
    """``(id,)`` when the command is ``{"method": "resync"}``, handled by the link itself."""
    if len(payload) > 4096:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(doc, dict) and doc.get("method") == "resync":
        return (doc.get("id"),)
    return None


def _keepalive_due(client: object, keepalive: float) -> float | None:
    """When paho's ``loop_misc`` next acts on the keepalive (monotonic clock), if readable.

    paho 2.x compares ``_last_msg_out`` and ``_last_bytes_received``, 1.6 ``_last_msg_out``
    and ``_last_msg_in``, with ``time.monotonic()``; the first of them plus the keepalive.
    """
    out = getattr(client, "_last_msg_out", None)
    received = getattr(client, "_last_bytes_received", getattr(client, "_last_msg_in", None))
    if not isinstance(out, float) or not isinstance(received, float):
        return None
    return min(out, received) + keepalive
