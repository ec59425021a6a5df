"""Events out: a gap-free sequence, written to a durable log first, then ZeroMQ, brokers, stdout.

Every event is a JSON object with ``schema``, ``type``, ``stream``, ``seq`` (gap-free from 0),
``time`` (ISO 8601 UTC), ``publisher`` (an id drawn afresh by every `EventBus`, so new at each
process start) and ``event_id`` (``<publisher>:<seq>``, unique and stable: what a consumer
de-duplicates by); docs/events.md documents the rest. A subscriber tells a restarted publisher
(a new id from seq 0) from a start it missed (an id first heard after seq 0) and checks gaps
per publisher (`SequenceCheck`).

On ZeroMQ an event is a two-frame message ``[topic, json]`` with topic ``<stream>.<type>``, so
subscribers can filter by prefix (``lobby.`` or ``lobby.action_start``). The publisher is an
XPUB socket: like PUB it never blocks (a subscriber that falls behind its high-water mark loses
messages, the pipeline does not wait), and it also sees subscriptions arrive, so a run can wait
for its first subscriber before starting. It binds, or connects to an `EventProxy` (``run
--publish connect:tcp://...``), the one place where many pipelines' events meet.

A sink is anything with ``write(event)`` and ``close()`` (the `Sink` protocol): the bus hands
every sink the same `Event`, its JSON text made once. The message-broker sinks are one module
each in `streamrec.sinks`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

import zmq

from streamrec.errors import StreamrecError, check_output_path

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Event:
    """One event as every sink receives it."""

    topic: str  # ``<stream>.<type>``: the ZeroMQ topic, for prefix filtering
    payload: str  # the JSON text, as logged and published
    fields: dict[str, Any]  # the same event as data (read-only by convention: sinks share it)
    emitted_at: float  # time.monotonic() when it was emitted


class Sink(Protocol):
    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps events in memory (of the given types, or all): for tests, evaluation and benchmarks."""

    def __init__(self, types: set[str] | None = None):
        self.types = types
        self.received: list[Event] = []

    def write(self, event: Event) -> None:
        if self.types is None or event.fields["type"] in self.types:
            self.received.append(event)

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """The events' fields, in order (of one type, if given)."""
        return [e.fields for e in self.received if type is None or e.fields["type"] == type]

    def close(self) -> None:
        pass


def new_publisher_id() -> str:
    """A random id for one sequence of events: 12 hex digits, never reused in practice."""
    return secrets.token_hex(6)


class EventBus:
    """Stamps events and hands them to every sink, in order. Safe to call from several threads.

    ``publisher`` names this bus's sequence; leave it out to draw a new one (two buses must
    never share one, or their sequences would look like one with repeats).
    """

    def __init__(self, sinks: list[Sink], publisher: str | None = None):
        self.sinks = sinks  # the durable log, if any, comes first: an event is logged before it is published
        self.publisher = publisher or new_publisher_id()
        self.seq = 0
        self._lock = threading.Lock()

    def emit(self, type: str, stream: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            event = {
                "schema": SCHEMA_VERSION,
                "type": type,
                "stream": stream,
                "seq": self.seq,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "publisher": self.publisher,
                "event_id": f"{self.publisher}:{self.seq}",
                **fields,
            }
            self.seq += 1
            record = Event(f"{stream}.{type}", json.dumps(event, separators=(",", ":")), event, time.monotonic())
            for sink in self.sinks:
                sink.write(record)
        return event

    def close(self) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.close()


@dataclasses.dataclass
class PublisherRecord:
    """What one subscriber has seen of one publisher's sequence."""

    first_seq: int
    next_seq: int
    received: int = 0
    lost: int = 0  # events missing in gaps after the first one received


class SequenceCheck:
    """Checks events as they arrive, per publisher: a missed start, gaps, repeats.

    ZeroMQ keeps each publisher's order (through a proxy too) but drops what was published
    before a subscriber joined and what overflows a high-water mark; a broker sink may deliver
    an event twice across a reconnect. Events without a ``publisher`` (older producers) count as
    one publisher. Only meaningful for the whole sequence: with a topic filter, other topics'
    numbers are expected gaps.
    """

    def __init__(self) -> None:
        self.publishers: dict[str, PublisherRecord] = {}
        self.lost = 0
        self.missed_start = 0  # events published before this subscriber's first one, all publishers
        self.repeated = 0

    def check(self, event: dict[str, Any]) -> list[str]:
        """What this event reveals, as lines for the user (none when it is the one expected)."""
        seq, publisher = event.get("seq"), event.get("publisher") or ""
        if not isinstance(seq, int):
            return []
        named = f" from publisher {publisher}" if publisher else ""
        record = self.publishers.get(publisher)
        if record is None:
            self.publishers[publisher] = PublisherRecord(first_seq=seq, next_seq=seq + 1, received=1)
            if seq == 0:
                return [f"publisher {publisher} started"] if publisher else []
            self.missed_start += seq
            return [f"missed start{named}: its first event here is seq {seq}; events 0..{seq - 1} were published "
                    "before this subscriber joined (the event log has them)"]
        record.received += 1
        if seq < record.next_seq:
            self.repeated += 1
            return [f"repeat: event {seq}{named} again (de-duplicate by event_id)"]
        notes = []
        if seq > record.next_seq:
            missing = seq - record.next_seq
            record.lost += missing
            self.lost += missing
            notes.append(f"gap: events {record.next_seq}..{seq - 1} missing{named} ({self.lost} lost so far)")
        record.next_seq = seq + 1
        return notes


CONNECT_PREFIX = "connect:"  # ``--publish connect:tcp://HOST:PORT``: connect to a broker instead of binding


def publish_target(address: str) -> tuple[str, str]:
    """(``bind`` or ``connect``, the ZeroMQ endpoint) of an ``events.publish`` address."""
    if address.startswith(CONNECT_PREFIX):
        return "connect", address[len(CONNECT_PREFIX):]
    return "bind", address.removeprefix("bind:")


class ZmqPublisher:
    """The pipeline's XPUB socket: bound for subscribers to connect to, or connected to an
    `EventProxy`'s frontend (``connect:tcp://...``), where subscriptions arrive through the proxy.

    With CURVE, a bound publisher is the server (``curve_allowed_clients`` lists who may
    subscribe); a connected one is a client of the proxy, whose public key is ``curve_server_key``.
    """

    def __init__(self, address: str, send_hwm: int, curve_secret_key: str | None = None,
                 curve_allowed_clients: str | None = None, curve_server_key: str | None = None):
        self.address = address
        self.mode, endpoint = publish_target(address)
        self.context = zmq.Context.instance()
        self.authenticator = None
        self.socket = self.context.socket(zmq.XPUB)
        self.curve = bool(curve_secret_key)
        try:
            if curve_secret_key and self.mode == "connect":
                make_curve_client(self.socket, curve_secret_key, curve_server_key,
                                  "events.curve_server_key (--curve-server-key)")
            elif curve_secret_key:
                self.authenticator = start_curve_server(self.context, self.socket, curve_secret_key,
                                                        curve_allowed_clients)
            elif curve_server_key:
                raise StreamrecError("events.curve_server_key needs events.curve_secret_key (--curve-secret-key): "
                                     "this publisher's own .key_secret, made by `run_stream.py keys`")
        except StreamrecError:
            self.socket.close(0)
            raise
        self.socket.setsockopt(zmq.SNDHWM, send_hwm)
        self.socket.setsockopt(zmq.LINGER, 1000)  # at shutdown, give queued events 1 s to leave
        self.socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # see every subscription, also repeated ones
        self.dropped = 0
        self.subscriptions = 0
        try:
            if self.mode == "connect":
                self.socket.connect(endpoint)
            else:
                self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close(linger=0)
            if self.mode == "connect":
                raise StreamrecError(f"cannot connect to a broker at {endpoint}: {zmq.strerror(exc.errno)}; use an "
                                     "address like connect:tcp://HOST:5559 (the broker's --frontend)") from None
            if exc.errno == zmq.EADDRINUSE:
                raise StreamrecError(f"cannot publish on {endpoint}: address already in use; stop the other "
                                     "process or pass another --publish (e.g. tcp://127.0.0.1:5556)") from None
            raise StreamrecError(f"cannot publish on {endpoint}: {exc.strerror}; use an address like "
                                 "tcp://127.0.0.1:5555") from None
        self.endpoint = endpoint if self.mode == "connect" else self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def write(self, event: Event) -> None:
        self._drain_subscriptions()
        try:
            self.socket.send_multipart([event.topic.encode(), event.payload.encode()], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.subscriptions == 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000)):
                return False
            self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                message = self.socket.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if message[:1] == b"\x01":
                self.subscriptions += 1

    def close(self, linger: int | None = None) -> None:
        self.socket.close(linger)
        if self.authenticator:
            self.authenticator.stop()


class EventProxy:
    """A ZeroMQ XSUB/XPUB proxy (`zmq.proxy`): the one place to subscribe to many pipelines.

    Publishers connect to ``frontend``, subscribers to ``backend``; subscriptions travel up to
    every publisher and events down to every subscriber that asked, each publisher's order
    kept. It stores nothing: what a subscriber misses is gone, as with a direct connection.
    With ``curve_secret_key``, each side whose folder of allowed public keys is given
    (``allowed_publishers``, ``allowed_subscribers``) is a CURVE server with that key pair.
    """

    def __init__(self, frontend: str, backend: str, *, hwm: int = 10000, curve_secret_key: str | None = None,
                 allowed_publishers: str | None = None, allowed_subscribers: str | None = None):
        self.frontend_address, self.backend_address = frontend, backend
        self.hwm = hwm
        self.curve_secret_key = curve_secret_key
        self.allowed = {"publishers": allowed_publishers, "subscribers": allowed_subscribers}
        if any(self.allowed.values()) and not curve_secret_key:
            raise StreamrecError("a folder of allowed keys needs the broker's own --curve-secret-key (a .key_secret "
                                 "made by `run_stream.py keys`)")
        if curve_secret_key and not any(self.allowed.values()):
            raise StreamrecError("CURVE needs --curve-allowed-publishers and/or --curve-allowed-subscribers: folders of "
                                 "the public *.key files let in on each side (make them with `run_stream.py keys`)")
        self.context = zmq.Context()  # its own, so its CURVE handler never meets an in-process publisher's
        self.authenticator = None
        self.frontend = self.backend = None
        self._thread: threading.Thread | None = None
        self._command = None

    @property
    def curve_sides(self) -> list[str]:
        return [side for side, folder in self.allowed.items() if folder]

    def start(self) -> "EventProxy":
        """Bind both sides and forward in a thread of its own until `stop`."""
        try:
            self.frontend = self._socket(zmq.XSUB, self.frontend_address, "publishers", "--frontend")
            self.backend = self._socket(zmq.XPUB, self.backend_address, "subscribers", "--backend")
        except BaseException:
            self.stop()
            raise
        self.frontend_address = self.frontend.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend_address = self.backend.getsockopt_string(zmq.LAST_ENDPOINT)
        control_address = f"inproc://streamrec-proxy-{id(self)}"
        control = self.context.socket(zmq.PAIR)
        control.bind(control_address)
        self._command = self.context.socket(zmq.PAIR)
        self._command.connect(control_address)
        frontend, backend = self.frontend, self.backend
        self._thread = threading.Thread(target=self._forward, args=(frontend, backend, control), name="event-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def _socket(self, kind: int, address: str, side: str, flag: str) -> zmq.Socket:
        socket = self.context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, self.hwm)
        socket.setsockopt(zmq.RCVHWM, self.hwm)
        if self.allowed[side]:
            try:
                folder = allowed_keys_folder(self.allowed[side], f"--curve-allowed-{side}", side)
                make_curve_server(socket, self.curve_secret_key, domain=side)
            except StreamrecError:
                socket.close(0)
                raise
            if self.authenticator is None:
                from zmq.auth.thread import ThreadAuthenticator

                self.authenticator = ThreadAuthenticator(self.context)
                self.authenticator.start()
            self.authenticator.configure_curve(domain=side, location=folder)
        try:
            socket.bind(address)
        except zmq.ZMQError as exc:
            socket.close(0)
            hint = "address already in use; stop the other process or pick another port" \
                if exc.errno == zmq.EADDRINUSE else f"{exc.strerror}; use an address like tcp://0.0.0.0:5559"
            raise StreamrecError(f"cannot bind the broker's {flag} {address}: {hint}") from None
        return socket

    @staticmethod
    def _forward(frontend: zmq.Socket, backend: zmq.Socket, control: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(frontend, backend, None, control)
        except zmq.ZMQError:
            pass  # the context was terminated under it: stopping all the same
        finally:
            control.close(0)

    def stop(self) -> None:
        if self._thread is not None:
            self._command.send(b"TERMINATE")
            self._thread.join(5)
            self._command.close(0)
            self._thread = None
        for socket in (self.frontend, self.backend):
            if socket is not None:
                socket.close(0)
        self.frontend = self.backend = None
        if self.authenticator:
            self.authenticator.stop()
            self.authenticator = None
        if not self.context.closed:
            self.context.term()


def load_curve_key(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) from a key file made by `run_stream.py keys` (ZeroMQ's certificate format)."""
    import zmq.auth

    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise StreamrecError(f"cannot read CURVE key file {path} ({exc}); make keys with `run_stream.py keys`") from None
    if secret and secret_key is None:
        raise StreamrecError(f"{path} holds only a public key; pass the .key_secret file made by `run_stream.py keys`")
    return public, secret_key


def allowed_keys_folder(folder: str | None, setting: str, who: str) -> str:
    """``folder`` when it is a folder of public keys, else the one-line error naming ``setting``."""
    if not folder or not Path(folder).is_dir():
        raise StreamrecError(f"CURVE needs {setting}: a folder of the {who}' public *.key files (make them with "
                             "`run_stream.py keys`)")
    return str(folder)


def make_curve_server(socket: zmq.Socket, secret_key_file: str, domain: str = "*") -> None:
    """Make ``socket`` a CURVE server with this key pair; the ZAP handler checks its clients
    against the keys configured for ``domain``."""
    public, secret = load_curve_key(secret_key_file, secret=True)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    if domain != "*":
        socket.zap_domain = domain.encode()
    socket.curve_server = True


def make_curve_client(socket: zmq.Socket, secret_key_file: str, server_key_file: str | None, setting: str) -> None:
    """Make ``socket`` a CURVE client with its own key pair, trusting the server's public key."""
    if not server_key_file:
        raise StreamrecError(f"CURVE to a broker needs {setting}: the broker's public .key file")
    socket.curve_serverkey, _ = load_curve_key(server_key_file, secret=False)
    socket.curve_publickey, socket.curve_secretkey = load_curve_key(secret_key_file, secret=True)


def start_curve_server(context: zmq.Context, socket: zmq.Socket, secret_key_file: str, allowed_clients: str | None):
    """Make ``socket`` a CURVE server that admits only the public keys found in ``allowed_clients``."""
    from zmq.auth.thread import ThreadAuthenticator

    folder = allowed_keys_folder(allowed_clients, "events.curve_allowed_clients", "subscribers")
    make_curve_server(socket, secret_key_file)
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=folder)
    return authenticator


class StdoutSink:
    def __init__(self, stream: TextIO = sys.stdout):
        self.stream = stream

    def write(self, event: Event) -> None:
        self.stream.write(event.payload + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class JsonlLog:
    """Append-only JSON-lines log, rotated by size: ``events.jsonl`` is written, ``events.jsonl.1``
    is the part before it, ``.2`` the one before that ...

    Rotation renames, it never deletes: every part is kept unless ``keep`` caps the rotated
    parts, when the oldest beyond ``keep`` are deleted (``events.event_log_keep``).

    Rotation only ever renames regular files: a part name taken by anything else (a folder
    ``events.jsonl.1``, a device, a FIFO) is refused at start in one line (`check_event_log`), since
    renaming it along would move or delete what the user put there and failing mid-run would
    lose events. One that appears during the run stops rotation instead: the log grows past
    ``max_bytes`` (a warning says so, once) and no event is lost.
    """

    def __init__(self, path: str | Path, max_bytes: int, keep: int | None = None):
        self.path = check_event_log(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotation_stopped = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise StreamrecError(f"cannot write event log {path}: {exc.strerror}; choose a writable --event-log path") from None

    def write(self, event: Event) -> None:
        self.file.write(event.payload + "\n")
        self.file.flush()
        if self.file.tell() >= self.max_bytes and not self.rotation_stopped:
            self._rotate()

    def part(self, index: int) -> Path:
        """The rotated part ``index`` (1: the newest)."""
        return part_path(self.path, index)

    def _rotate(self) -> None:
        parts = 0
        while self.part(parts + 1).exists():
            parts += 1
        if not all(self.part(index).is_file() for index in range(1, parts + 1)):
            self.rotation_stopped = True
            log.warning("event log %s: a rotated part's name is taken by something that is not a file (%s); "
                        "rotation stops for this run and the log grows past its size limit, losing no event",
                        self.path, ", ".join(str(self.part(i)) for i in range(1, parts + 1) if not self.part(i).is_file()))
            return
        self.file.close()
        if self.keep is not None:
            for index in range(parts, self.keep - 1, -1):  # the parts that would be shifted past the cap
                self.part(index).unlink()
            parts = min(parts, self.keep - 1)
        for index in range(parts, 0, -1):  # oldest first, so no rename overwrites a part
            os.replace(self.part(index), self.part(index + 1))
        os.replace(self.path, self.part(1))
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def part_path(path: Path, index: int) -> Path:
    """The event log's rotated part ``index`` (1: the newest): ``events.jsonl.1``."""
    return path.with_name(f"{path.name}.{index}")


def check_event_log(path: str | Path, flag: str = "--event-log") -> Path:
    """The event log's path, or the one-line error: a URL, a folder or a device is no place for it
    (`check_output_path`), nor is a log whose rotated part names (``events.jsonl.1``, ``.2``, ...)
    are taken by anything but regular files, which rotation would rename or delete. Creates
    nothing; call it before the engine is built to fail before anything starts."""
    path = check_output_path(path, flag)
    try:
        names = os.listdir(path.parent if str(path.parent) else ".")
    except OSError:  # no folder yet (none to check), or one that cannot be read: opening the log says why
        return path
    prefix = f"{path.name}."
    for name in sorted(names):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            part = path.with_name(name)
            if not part.is_file():
                what = "a folder" if part.is_dir() else "not a regular file"
                raise StreamrecError(f"{flag} {path}: its rotated part {part} is {what}, which rotation would rename; "
                                     f"move it away or choose another {flag} path")
    return path
