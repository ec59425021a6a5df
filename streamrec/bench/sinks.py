"""``bench sinks``: how fast events leave through the ZeroMQ proxy and each message-broker sink.

Every target runs on this machine, on loopback: the `EventProxy` in this process, or the
broker's own server (Debian's ``mosquitto``, ``redis-server``, ``nats-server``) as a child
process (`LocalBroker`; the tests start, kill and restart brokers with it too). For each, an
`EventBus` emits synthetic status events into the one sink and a subscriber in this process (a
ZeroMQ SUB socket, a paho-mqtt client, an ``XREAD`` loop, a nats-py subscription) notes when
each arrives, on the same monotonic clock:

- paced: events at a steady rate; latency is emit → arrival (p50, p99), and ``emit`` is the
  time the bus call itself took, which is what the pipeline pays;
- burst: events emitted as fast as the bus takes them; events/s is those received over the
  time from the first emit to the last arrival.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from streamrec.events import EventBus, EventProxy, Sink, ZmqPublisher

TARGETS = ("zeromq", "mqtt", "redis", "nats")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- broker servers


class LocalBroker:
    """A broker's own server as a child process on a loopback port; it can be killed and
    restarted on the same port, keeping its data folder."""

    name: ClassVar[str]
    binary_name: ClassVar[str]
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    # The signal that stops it without losing what it accepted (what a restart test needs).
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @classmethod
    def binary(cls) -> str | None:
        """The server's executable, or None when it is not installed."""
        found = shutil.which(cls.binary_name)
        if found:
            return found
        for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin"):
            path = Path(folder) / cls.binary_name
            if path.is_file():
                return str(path)
        return None

    def command(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def version(cls) -> str | None:
        """The server's version, as it reports it (None if it does not say)."""
        result = subprocess.run([cls.binary(), *cls.version_args], capture_output=True, text=True, timeout=10)
        found = re.search(r"v?=?(\d+\.\d+\.\d+)", result.stdout + result.stderr)
        return found.group(1) if found else None

    def start(self, timeout_s: float = 15.0) -> "LocalBroker":
        """Start it and wait until its port takes connections."""
        with open(self.folder / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not listen on port {self.port} within {timeout_s:g} s: {self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        self.kill(self.stop_signal)

    def log_tail(self) -> str:
        path = self.folder / f"{self.name}.log"
        return " ".join(path.read_text(errors="replace").split()[-40:]) if path.is_file() else ""

    def url(self, path: str = "", **options) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"{self.name}://127.0.0.1:{self.port}/{path}" + (f"?{query}" if query else "")


class Mosquitto(LocalBroker):
    """Eclipse Mosquitto, keeping subscribers' persistent sessions and their queued messages
    across a restart (its persistence file is written when it stops)."""

    name, binary_name = "mqtt", "mosquitto"
    version_args = ("-h",)

    def command(self) -> list[str]:
        config = self.folder / "mosquitto.conf"
        owner = pwd.getpwuid(os.geteuid()).pw_name  # as root it would switch to user mosquitto, who cannot write here
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {owner}\npersistence true\n"
                          f"persistence_location {self.folder}/\nmax_queued_messages 1000000\n")
        return [self.binary(), "-c", str(config)]


class RedisServer(LocalBroker):
    """Redis without persistence: a restart starts empty."""

    name, binary_name = "redis", "redis-server"
    stop_signal = signal.SIGKILL

    def command(self) -> list[str]:
        return [self.binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.folder)]


class NatsServer(LocalBroker):
    """nats-server with JetStream on, its store in the data folder (streams outlive a restart)."""

    name, binary_name = "nats", "nats-server"

    def command(self) -> list[str]:
        return [self.binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.folder / "jetstream")]


BROKERS: dict[str, type[LocalBroker]] = {"mqtt": Mosquitto, "redis": RedisServer, "nats": NatsServer}


# --------------------------------------------------------------------------- subscribers


class Received:
    """What a subscriber got: each event's fields and when it arrived (``time.monotonic``)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.arrived: list[float] = []
        self._changed = threading.Condition()

    def add(self, payload: bytes | str) -> None:
        now = time.monotonic()
        event = json.loads(payload)
        with self._changed:
            self.events.append(event)
            self.arrived.append(now)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Whether ``count`` events have arrived within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def seqs(self) -> list[int]:
        with self._changed:
            return [e["seq"] for e in self.events]


class Subscriber:
    """A subscriber on its own thread, filling `received` until `stop`."""

    def __init__(self) -> None:
        self.received = Received()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name=type(self).__name__)

    def start(self, timeout_s: float = 10.0) -> "Subscriber":
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error:
            raise RuntimeError(f"{type(self).__name__} did not subscribe: {self._error}")
        return self

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # reported by start(), or ends the subscription
            self._error = exc
            self._ready.set()

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class ZmqSubscriber(Subscriber):
    def __init__(self, address: str):
        super().__init__()
        self.address = address

    def run(self) -> None:
        import zmq

        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.address)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sub.poll(100):
                    self.received.add(sub.recv_multipart()[1])
        finally:
            sub.close(0)


class MqttSubscriber(Subscriber):
    """A QoS 1 subscription; ``client_id`` makes it a persistent session the broker keeps
    (with queued messages) while this client is away."""

    def __init__(self, port: int, topic: str, client_id: str | None = None):
        super().__init__()
        self.port, self.topic, self.client_id = port, topic, client_id

    def run(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id or "",
                             clean_session=self.client_id is None)
        client.reconnect_delay_set(0.05, 0.5)
        subscribed = threading.Event()
        client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda c, u, message: self.received.add(message.payload)
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        try:
            if subscribed.wait(10):
                self._ready.set()
            self._stop.wait()
        finally:
            client.disconnect()
            client.loop_stop()


class RedisSubscriber(Subscriber):
    def __init__(self, port: int, key: str):
        super().__init__()
        self.port, self.key = port, key

    def run(self) -> None:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=5)
        last = "0-0"
        self._ready.set()
        while not self._stop.is_set():
            for _key, entries in client.xread({self.key: last}, count=1000, block=100) or []:
                for entry_id, fields in entries:
                    self.received.add(fields[b"event"])
                    last = entry_id
        client.close()


class NatsSubscriber(Subscriber):
    def __init__(self, port: int, subject: str):
        super().__init__()
        self.port, self.subject = port, subject

    def run(self) -> None:
        asyncio.run(self._subscribe())

    async def _subscribe(self) -> None:
        import nats

        connection = await nats.connect(f"nats://127.0.0.1:{self.port}")

        async def arrived(message) -> None:
            self.received.add(message.data)

        await connection.subscribe(self.subject, cb=arrived)
        await connection.flush()
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await connection.drain()


# --------------------------------------------------------------------------- the measurement


@dataclasses.dataclass(frozen=True)
class SinksPlan:
    burst: int = 20_000  # events emitted as fast as possible
    paced: int = 1_000  # events emitted at `rate` for the latency figures
    rate: float = 500.0  # events per second, paced
    timeout_s: float = 60.0  # the most a phase waits for its events to arrive


def check_plan(plan: SinksPlan) -> None:
    from streamrec.errors import StreamrecError

    if not (1 <= plan.burst <= 10_000_000 and 1 <= plan.paced <= 10_000_000 and 1 <= plan.rate <= 1_000_000):
        raise StreamrecError("bench sinks needs --burst and --paced of 1 to 10000000 events and --rate of 1 to "
                             "1000000 events/s")


def measure(target: str, sink: Sink, subscriber: Subscriber, plan: SinksPlan,
            ready: Callable[[], bool] = lambda: True) -> dict:
    """Paced, then burst, events from a bus into ``sink``, as ``subscriber`` receives them."""
    bus = EventBus([sink])
    emitted: list[float] = []
    emit_s: list[float] = []

    def emit(index: int, phase: str) -> None:
        start = time.monotonic()
        bus.emit("status", f"cam{index % 8}", state="live", detail=f"{phase} {index}")
        emit_s.append(time.monotonic() - start)
        emitted.append(start)

    try:
        if not ready():
            raise RuntimeError("the subscription did not reach the publisher")
        period, next_at = 1.0 / plan.rate, time.monotonic()
        for index in range(plan.paced):
            next_at += period
            emit(index, "paced")
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        subscriber.received.wait_for(plan.paced, plan.timeout_s)
        paced_emit_s = list(emit_s)
        burst_from = len(emitted)
        first = time.monotonic()
        for index in range(plan.burst):
            emit(index, "burst")
        subscriber.received.wait_for(plan.paced + plan.burst, plan.timeout_s)
    finally:
        bus.close()
    subscriber.stop()
    received = subscriber.received
    by_seq = {}
    for event, arrived in zip(received.events, received.arrived):
        by_seq.setdefault(event["seq"], arrived)
    latencies = [by_seq[seq] - emitted[seq] for seq in range(plan.paced) if seq in by_seq]
    burst_arrivals = [by_seq[seq] for seq in range(burst_from, burst_from + plan.burst) if seq in by_seq]
    stats = sink.stats() if hasattr(sink, "stats") else None
    row = {
        "target": target,
        "burst_events": plan.burst,
        "burst_received": len(burst_arrivals),
        "events_per_s": (round(len(burst_arrivals) / (max(burst_arrivals) - first), 1) if burst_arrivals else None),
        "paced_events": plan.paced,
        "paced_received": len(latencies),
        "latency_ms_p50": _percentile_ms(latencies, 50),
        "latency_ms_p99": _percentile_ms(latencies, 99),
        "emit_us_p99": round(float(np.percentile(paced_emit_s, 99)) * 1e6, 1),
        "repeated": len(received.events) - len(by_seq),
        "dropped_by_sink": stats.dropped if stats else getattr(sink, "dropped", None),  # ZeroMQ: past its HWM
    }
    return row


def _percentile_ms(seconds: list[float], q: float) -> float | None:
    return round(float(np.percentile(seconds, q)) * 1000, 2) if seconds else None


def run_target(target: str, plan: SinksPlan, folder: Path) -> dict:
    """One target measured, its server started and stopped around it."""
    if target == "zeromq":
        proxy = EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", hwm=2 * (plan.burst + plan.paced)).start()
        try:
            subscriber = ZmqSubscriber(proxy.backend_address).start()
            publisher = ZmqPublisher("connect:" + proxy.frontend_address, send_hwm=2 * (plan.burst + plan.paced))
            return measure(target, publisher, subscriber, plan, lambda: publisher.wait_for_subscriber(10))
        finally:
            proxy.stop()
    from streamrec.sinks import create_sink

    server = BROKERS[target](folder / target).start()
    try:
        buffer = plan.burst + plan.paced
        if target == "mqtt":
            subscriber, url = MqttSubscriber(server.port, "bench/#").start(), server.url("bench", buffer=buffer)
        elif target == "redis":
            subscriber, url = RedisSubscriber(server.port, "bench").start(), server.url("0", stream="bench",
                                                                                        buffer=buffer)
        else:
            subscriber, url = NatsSubscriber(server.port, "bench.>").start(), server.url("bench", buffer=buffer)
        return measure(target, create_sink(url), subscriber, plan)
    finally:
        server.kill()


CLIENTS = {"zeromq": "pyzmq", "mqtt": "paho-mqtt", "redis": "redis", "nats": "nats-py"}


def software(targets: list[str]) -> dict[str, str]:
    """The servers' and client libraries' versions the measured targets ran on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for target in targets:
        if target in BROKERS:
            found[BROKERS[target].binary_name] = BROKERS[target].version() or "unknown"
        try:
            found[CLIENTS[target]] = version(CLIENTS[target])
        except PackageNotFoundError:
            pass
    return found


def unavailable(target: str) -> str | None:
    """Why ``target`` cannot run here, or None."""
    if target == "zeromq":
        return None
    from streamrec.sinks import installed, sink_kinds

    kind = sink_kinds()[target]
    if not installed(kind.library):
        return f"{kind.package} is not installed (pip install 'streamrec[brokers]')"
    if BROKERS[target].binary() is None:
        return f"{BROKERS[target].binary_name} is not installed (apt-get install {BROKERS[target].binary_name})"
    return None


# --------------------------------------------------------------------------- the table


def summary_text(document: dict, markdown: bool = False) -> str:
    from streamrec.bench.report import Column, table

    plan = document["plan"]
    columns = [
        Column("target", "target"),
        Column("events/s (burst)", "events_per_s", 0),
        Column("burst received", lambda r: f"{r['burst_received']}/{r['burst_events']}"),
        Column("p50 ms", "latency_ms_p50", 2),
        Column("p99 ms", "latency_ms_p99", 2),
        Column("emit p99 µs", "emit_us_p99", 1),
        Column("repeated", "repeated"),
        Column("dropped by sink", "dropped_by_sink"),
    ]
    lines = [table(document["results"], columns, markdown=markdown), "",
             f"Burst: {plan['burst']} status events emitted as fast as the bus takes them; events/s counts those "
             "received, over first emit to last arrival. Latency: emit to arrival of "
             f"{plan['paced']} events paced at {plan['rate']:g}/s, one process, loopback. 'emit' is the time the bus "
             "call took (what the pipeline pays). ZeroMQ goes through the broker proxy; the others through their "
             "--sink into the broker's own server."]
    if document.get("software"):
        lines.append("Servers and clients: " + ", ".join(f"{k} {v}" for k, v in document["software"].items()) + ".")
    for skipped in document.get("skipped", []):
        lines.append(f"{'- ' if markdown else ''}not measured: {skipped['target']}: {skipped['reason']}")
    return "\n".join(lines)
