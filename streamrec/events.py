"""Events out: a gap-free sequence, written to a durable log first, then ZeroMQ, then stdout.

Every event is a JSON object with ``schema``, ``type``, ``stream``, ``seq`` (per publisher,
gap-free from 0) and ``time`` (ISO 8601 UTC); docs/events.md documents the rest. On ZeroMQ an event
is a two-frame message ``[topic, json]`` with topic ``<stream>.<type>``, so subscribers can
filter by prefix (``lobby.`` or ``lobby.action_start``).

The publisher is an XPUB socket: like PUB it never blocks (a subscriber that falls behind its
high-water mark loses messages, the pipeline does not wait), and it also sees subscriptions
arrive, so a run can wait for its first subscriber before starting.

A sink is anything with ``write(event)`` and ``close()`` (the `Sink` protocol): the bus hands
every sink the same `Event`, its JSON text made once. Adding a destination (a broker, say) is
one class in one file, given to the bus with the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

import zmq

from streamrec.errors import StreamrecError

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


class EventBus:
    """Stamps events and hands them to every sink, in order. Safe to call from several threads."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks  # the durable log, if any, comes first: an event is logged before it is published
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


class ZmqPublisher:
    def __init__(self, address: str, send_hwm: int, curve_secret_key: str | None = None,
                 curve_allowed_clients: str | None = None):
        self.address = address
        self.context = zmq.Context.instance()
        self.authenticator = None
        self.socket = self.context.socket(zmq.XPUB)
        if curve_secret_key:
            self.authenticator = start_curve_server(self.context, self.socket, curve_secret_key, curve_allowed_clients)
        self.socket.setsockopt(zmq.SNDHWM, send_hwm)
        self.socket.setsockopt(zmq.LINGER, 1000)  # at shutdown, give queued events 1 s to leave
        self.socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # see every subscription, also repeated ones
        self.dropped = 0
        self.subscriptions = 0
        try:
            self.socket.bind(address)
        except zmq.ZMQError as exc:
            self.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                raise StreamrecError(f"cannot publish on {address}: address already in use; stop the other "
                                     "process or pass another --publish (e.g. tcp://127.0.0.1:5556)") from None
            raise StreamrecError(f"cannot publish on {address}: {exc.strerror}; use an address like "
                                 "tcp://127.0.0.1:5555") from None
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

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


def start_curve_server(context: zmq.Context, socket: zmq.Socket, secret_key_file: str, allowed_clients: str | None):
    """Make ``socket`` a CURVE server that admits only the public keys found in ``allowed_clients``."""
    from pathlib import Path

    from zmq.auth.thread import ThreadAuthenticator

    if not allowed_clients or not Path(allowed_clients).is_dir():
        raise StreamrecError("CURVE needs events.curve_allowed_clients: a folder of the subscribers' public "
                             "*.key files (make them with `run_stream.py keys`)")
    public, secret = load_curve_key(secret_key_file, secret=True)
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(allowed_clients))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
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
    """Append-only JSON-lines log, rotated by size (``events.jsonl`` → ``events.jsonl.1`` ...)."""

    def __init__(self, path: str | Path, max_bytes: int, keep: int = 5):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise StreamrecError(f"cannot write event log {path}: {exc.strerror}; choose a writable --event-log path") from None

    def write(self, event: Event) -> None:
        self.file.write(event.payload + "\n")
        self.file.flush()
        if self.file.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self.file.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
