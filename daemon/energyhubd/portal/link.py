"""The MQTT link to the Ferroamp portal (paho-mqtt 1.6.1 and 2.x, TLS 1.2+, mutual certs).

Threading contract: the link runs ONE thread of its own that owns the paho client. That thread
never touches daemon state: every received message, connection change and round-trip result
is handed over as a zero-argument callable through ``post`` (the daemon's event loop runs it).
The daemon thread only calls the ``publish_*`` / ``request_round_trip`` / ``kick`` / ``stop``
methods, which put work in thread-safe slots and wake the link thread through a pipe; they never
call paho, so no paho lock is ever taken from two threads (paho 1.6 calls ``on_publish`` with its
own message lock held, which deadlocks a naive cross-thread publish).

Reconnects are driven here, not by paho (paho's reconnect delay has no jitter): see
:mod:`energyhubd.portal.backoff` for the formula.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from energyhubd.config.sections.portal import PortalSettings

from .backoff import Backoff
from .outbox import Outbox, OutMessage
from .topics import Topics, dumps, event_payload, health_payload, status_payload

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]

MAX_INFLIGHT = 20  # QoS 1 messages handed to paho but not yet acknowledged
STOP_FLUSH_SECONDS = 2.0
RECONNECT_TO_VERIFY = "reconnecting to verify a new configuration"


IDLE_WAIT_MAX = 30.0  # seconds the link thread sleeps at most on a quiet connection
KEEPALIVE_SLACK = 0.05  # wake this much after paho's keepalive deadline, never before it


@dataclass(frozen=True)
class LinkState:
    """A connection change, delivered to the daemon through ``post``."""

    connected: bool
    reason: str = ""
    retry_in: float | None = None  # seconds until the next attempt (when not connected)
    dropped: int = 0  # outbox messages lost to overflow, reported once


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


def _new_client(settings: PortalSettings, client_id: str) -> mqtt.Client:
    """Create a paho client on either major version."""
    kwargs: dict[str, Any] = {"client_id": client_id}
    if settings.mqtt_version == "5":
        kwargs["protocol"] = mqtt.MQTTv5
    else:
        kwargs["protocol"] = mqtt.MQTTv311
        kwargs["clean_session"] = True
    api = getattr(mqtt, "CallbackAPIVersion", None)
    if api is not None:  # paho >= 2.0
        kwargs["callback_api_version"] = api.VERSION2
    return mqtt.Client(**kwargs)


class PortalLink:
    """Owns the MQTT connection; see the module docstring for the threading contract.

    Callbacks (all run by the daemon through ``post``):
      ``on_state(LinkState)``, ``on_desired(payload: bytes)``, ``on_round_trip(token: int)``,
      ``on_command(payload: bytes)``.
    ``applied_version`` is called on the link thread at each connect; it must only read an
    immutable snapshot (e.g. return an int attribute), never walk daemon structures.
    """

    def __init__(
        self,
        settings: PortalSettings,
        device_id: str,
        post: Post,
        *,
        software_version: str,
        applied_version: Callable[[], int | None],
        on_state: Callable[[LinkState], None] | None = None,
        on_desired: Callable[[bytes], None] | None = None,
        on_round_trip: Callable[[int], None] | None = None,
        on_command: Callable[[bytes], None] | None = None,
        rand: Callable[[], float] | None = None,
        tls_context: Callable[[PortalSettings], ssl.SSLContext] = make_tls_context,
    ) -> None:
        self.settings = settings
        self.topics = Topics(device_id)
        self.client_id = device_id
        self._post = post
        self._software = software_version
        self._applied_version = applied_version
        self._on_state = on_state
        self._on_desired = on_desired
        self._on_round_trip = on_round_trip
        self._on_command = on_command
        self._tls_context = tls_context
        self.backoff = (
            Backoff(settings.backoff_initial, settings.backoff_max, rand)
            if rand is not None
            else Backoff(settings.backoff_initial, settings.backoff_max)
        )
        self.outbox = Outbox(settings.queue_size)
        self._event_seq = itertools.count(1)
        self._health_seq = itertools.count(1)
        self._slot_lock = threading.Lock()
        self._reported: bytes | None = None  # config/reported waiting to be sent
        self._reported_last: bytes | None = None  # re-sent on each connect (retained anyway)
        self._ping_token: int | None = None
        self._ping_fresh = False  # the ping must travel on a connection made after the request
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._connected = False
        # link-thread-only state
        self._inflight: dict[int, OutMessage] = {}
        self._ping_mid: tuple[int, int] | None = None  # (mid, token)
        self._session_ok = False
        self._reconnect_requested = False
        self._refused = ""

    # ---- daemon-thread API -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Last known state (a plain bool read; informative only)."""
        return self._connected

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
        """QoS 1 event; queued in the bounded outbox, sent oldest first."""
        payload = event_payload(next(self._event_seq), kind, data)
        self.outbox.put(OutMessage(self.topics.events, payload, qos=1))
        self._wake()

    def publish_health(self, data: dict[str, Any]) -> None:
        """Health report (QoS 0); queued like events while the link is down."""
        payload = health_payload(next(self._health_seq), data)
        self.outbox.put(OutMessage(self.topics.health, payload, qos=0))
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

        ``fresh=True`` (use it right after applying a configuration) first drops the current
        connection and dials again, so the proof covers a NEW connection: an established TCP
        flow can survive a firewall or routing change that blocks every new one (conntrack),
        and confirming over it would lock the site out at the next reconnect. While
        disconnected the request waits for the next connection; only the latest token is kept.
        No answer means no confirm, which is exactly what the confirm window needs.
        """
        with self._slot_lock:
            self._ping_token = token
            self._ping_fresh = fresh
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

    def _sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds unless stopped or kicked; publishes only wake the select."""
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
                select.select([self._wake_r], [], [], left)
            self._drain_wake()

    def _session(self) -> str:
        """One connection attempt and, if it succeeds, its whole life. Returns why it ended."""
        self._session_ok = False
        self._reconnect_requested = False
        self._refused = ""
        self._inflight = {}
        self._ping_mid = None
        try:
            client = self._connect()
        except (OSError, ValueError, ssl.SSLError) as exc:
            return f"connect failed: {exc}"
        try:
            reason = self._serve(client)
        except (OSError, ValueError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            self._end_session(client)
        if not self._session_ok and not self._refused and reason != "stopped":
            # With TLS 1.3 the broker verifies our certificate after our side of the handshake
            # has finished, so a refused client certificate shows up as an early close.
            reason = f"closed by broker before CONNACK (client certificate refused?): {reason}"
        return reason

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

    def _connect(self) -> mqtt.Client:
        s = self.settings
        client = _new_client(s, self.client_id)
        client.will_set(
            self.topics.status, status_payload(False, self._software, None), qos=1, retain=True
        )
        if s.tls:
            client.tls_set_context(self._tls_context(s))
        client.on_connect = self._cb_connect
        client.on_message = self._cb_message
        client.on_publish = self._cb_publish
        if s.mqtt_version == "5":
            client.connect(s.host, s.port, s.keepalive, clean_start=True)
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
                return "no CONNACK from broker"
            if self._stop.is_set():
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_FLUSH_SECONDS
                    if self._session_ok:
                        client.publish(
                            self.topics.status,
                            status_payload(False, self._software, None),
                            qos=1,
                            retain=True,
                        )
                    else:
                        return "stopped"
                if not client.want_write() or time.monotonic() > stop_deadline:
                    client.disconnect()
                    return "stopped"
            if self._kick.is_set():
                self._kick.clear()  # already connected: nothing to hurry
            if self._session_ok and not self._stop.is_set():
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
                fd = sock.fileno()
                wait = self._idle_wait(client)
                rlist, wlist, _ = select.select(
                    [fd, self._wake_r], [fd] if client.want_write() else [], [], wait
                )
                readable = fd in rlist
                writable = fd in wlist
                if self._wake_r in rlist:
                    self._drain_wake()
            if readable:
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    return self._refused or f"read failed: {mqtt.error_string(rc)}"
            if writable:
                rc = client.loop_write()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    return f"write failed: {mqtt.error_string(rc)}"
            rc = client.loop_misc()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return self._refused or f"keepalive: {mqtt.error_string(rc)}"

    def _idle_wait(self, client: mqtt.Client | None = None) -> float:
        """How long the link thread may sleep with nothing to read, write or send.

        Everything the daemon hands over wakes it through the pipe, so the timeout only has
        to serve paho's keepalive bookkeeping (``loop_misc``): sleep until paho's own
        deadline (a keepalive after the last packet out or in, read from the client as
        paho 1.6 and 2.x keep it), so an idle link wakes once per keepalive to send the
        PINGREQ and once for the PINGRESP. Should that bookkeeping not be readable, a
        quarter of the keepalive. Before CONNACK and while stopping it stays short, for the
        deadlines checked in ``_serve``.
        """
        if not self._session_ok or self._stop.is_set():
            return 1.0
        keepalive = float(self.settings.keepalive)
        due = _keepalive_due(client, keepalive)
        if due is None:
            return min(IDLE_WAIT_MAX, max(1.0, keepalive / 4))
        return min(keepalive, max(0.0, due - time.monotonic())) + KEEPALIVE_SLACK

    def _pump(self, client: mqtt.Client) -> None:
        """Send slots then the outbox, oldest first, at most MAX_INFLIGHT unacknowledged."""
        with self._slot_lock:
            if self._ping_fresh:
                self._ping_fresh = False
                self._reconnect_requested = True
                return
            reported, self._reported = self._reported, None
            token, self._ping_token = self._ping_token, None
        if reported is not None:
            self._send(client, OutMessage(self.topics.reported, reported, qos=1, retain=True))
        if token is not None:
            info = client.publish(self.topics.ping, dumps({"token": token}), qos=1)
            self._ping_mid = (info.mid, token)
        dropped = self.outbox.take_dropped()
        if dropped:
            self._emit_state(LinkState(True, "outbox overflow", dropped=dropped))
            notice = event_payload(next(self._event_seq), "outbox_overflow", {"dropped": dropped})
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

    # paho callbacks: *args because the signatures differ between 1.6 (v3/v5) and 2.x.

    def _cb_connect(self, client: mqtt.Client, _userdata: object, *args: Any) -> None:
        rc = _rc_value(args[1]) if len(args) >= 2 else -1
        if rc != 0:
            self._refused = f"broker refused connection: {args[1]}"
            return
        self._session_ok = True
        self.backoff.reset()
        with self._slot_lock:
            if self._reported is None:
                self._reported = self._reported_last
            self._ping_fresh = False  # this connection is newer than any pending request
        try:
            applied = self._applied_version()
        except Exception:
            log.exception("applied_version callback failed")
            applied = None
        client.publish(
            self.topics.status,
            status_payload(True, self._software, applied),
            qos=1,
            retain=True,
        )
        # The portal keeps config/desired retained, so every (re)subscribe delivers the full
        # desired document: nothing pushed while we were offline is lost (AWS shadow lesson).
        client.subscribe(self.topics.desired, qos=1)
        if self._on_command is not None:
            client.subscribe(self.topics.command, qos=1)
        self._emit_state(LinkState(True, "connected"))

    def _cb_message(self, _client: mqtt.Client, _userdata: object, msg: Any) -> None:
        if msg.topic == self.topics.desired and self._on_desired is not None:
            payload = bytes(msg.payload)
            callback = self._on_desired
            self._emit(lambda: callback(payload))
        elif msg.topic == self.topics.command and self._on_command is not None:
            payload = bytes(msg.payload)
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
