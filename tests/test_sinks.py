"""Message-broker sinks: the URL registry, the buffer that never blocks the pipeline, and real
brokers (Debian's mosquitto, redis-server, nats-server on loopback) killed and restarted under
a running sink: what was emitted while a broker was down arrives once it is back, counted."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, run_cli
from streamrec.bench.sinks import BROKERS, MqttSubscriber, unavailable
from streamrec.errors import StreamrecError
from streamrec.events import EventBus
from streamrec.sinks import SinkURL, check_sink_url, create_sink, parse_sink_url, sink_kinds
from streamrec.sinks.buffered import BrokerSink


def wait_until(predicate, timeout_s=20.0, what="the condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- URLs and the registry


def test_sink_schemes_come_from_the_registry():
    assert list(sink_kinds()) == ["mqtt", "redis", "nats"]
    kind, url = parse_sink_url("redis://:pw@10.0.0.9/3?stream=cams&maxlen=500&buffer=7")
    assert kind.scheme == "redis" and (url.host, url.port, url.path, url.password) == ("10.0.0.9", 6379, "3", "pw")
    assert dict(url.options) == {"buffer": 7, "flush_s": 5.0, "stream": "cams", "maxlen": 500}
    assert parse_sink_url("mqtt://broker/site/cams")[1].port == 1883


@pytest.mark.parametrize("url, message", [
    ("kafka://host:9092/t", "sink kafka://host:9092/t: a sink is one of mqtt://HOST:1883/PREFIX, "
                            "redis://HOST:6379/DB?stream=NAME, nats://HOST:4222/SUBJECT"),
    ("mqtt:///prefix", "a sink is one of"),
    ("redis://h/0?stram=x", "unknown option 'stram'; did you mean 'stream'?"),
    ("mqtt://h/p?qos=3", "qos=3 must be 0 to 2"),
    ("redis://h/0?buffer=0", "buffer=0 must be 1 to 10000000"),
    ("redis://h/0?maxlen=many", "maxlen=many must be an int"),
    ("redis://h:99999/0", "is not a valid URL"),
])
def test_a_bad_sink_url_is_one_line(url, message):
    with pytest.raises(StreamrecError) as err:
        check_sink_url(url)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_client_library_says_what_to_install():
    """The check runs before the engine is built: with paho-mqtt hidden, `run --sink mqtt://...`
    is one line naming the package and the extra."""
    script = ("import sys; sys.modules['paho'] = None; from streamrec.cli import main; "
              "sys.exit(main(['run', '--sink', 'mqtt://user:s3cret@127.0.0.1:1883/x', '--publish', 'none']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: sink mqtt://user:***@127.0.0.1:1883/x needs the paho-mqtt package: pip install 'streamrec[brokers]'")
    assert "s3cret" not in result.stderr


# --------------------------------------------------------------------------- the buffer, with a broker the test controls


class GatedBroker(BrokerSink):
    """A broker that is up or down at the test's word, and can hang a connect; it keeps what it accepted."""

    def __init__(self, buffer: int, flush_s: float = 5.0):
        self.up = threading.Event()
        self.connects = threading.Event()  # cleared: a connect hangs until it is set
        self.connects.set()
        self.accepted: list[int] = []
        super().__init__(SinkURL("gated://h/x", "gated", "h", 1, "x", None, None,
                                 {"buffer": buffer, "flush_s": flush_s}))

    def connect(self) -> None:
        self.connects.wait()
        if not self.up.is_set():
            raise ConnectionRefusedError("refused")

    def send(self, batch) -> int:
        if not self.up.is_set():
            raise ConnectionResetError("reset")
        self.accepted.extend(e.fields["seq"] for e in batch)
        return len(batch)


def emit(bus, count):
    for index in range(count):
        bus.emit("status", f"cam{index % 3}", state="live")


def test_a_hung_broker_never_blocks_the_pipeline_and_drops_are_counted():
    sink = GatedBroker(buffer=10)
    sink.connects.clear()  # the sender thread hangs in its first connect
    bus = EventBus([sink])
    writer = threading.Thread(target=emit, args=(bus, 1000))
    writer.start()
    writer.join(20)
    assert not writer.is_alive(), "emitting waited for the broker"
    stats = sink.stats()
    assert (stats.dropped, stats.waiting, stats.delivered) == (990, 10, 0)
    sink.up.set()
    sink.connects.set()
    wait_until(lambda: sink.stats().delivered == 10, what="the held events")
    bus.close()
    assert sink.accepted == list(range(990, 1000))  # the newest ones were held
    assert sink.stats().dropped == 990


def test_events_emitted_while_the_broker_is_down_go_once_it_is_back():
    sink = GatedBroker(buffer=100)
    sink.up.set()
    bus = EventBus([sink])
    emit(bus, 5)
    wait_until(lambda: sink.stats().delivered == 5)
    sink.up.clear()
    emit(bus, 1)
    wait_until(lambda: not sink.stats().connected, what="the sink to notice")
    emit(bus, 6)
    assert sink.stats().waiting == 7
    sink.up.set()
    wait_until(lambda: sink.stats().delivered == 12, what="the held events")
    bus.close()
    stats = sink.stats()
    assert sink.accepted == list(range(12)) and (stats.dropped, stats.reconnects) == (0, 1)


def test_at_the_end_events_for_a_broker_still_down_are_counted_and_reported(caplog):
    sink = GatedBroker(buffer=100, flush_s=0.3)
    bus = EventBus([sink])
    emit(bus, 4)
    with caplog.at_level(logging.INFO, logger="streamrec.sinks"):
        bus.close()
    assert sink.stats().dropped == 4 and sink.accepted == []
    assert "sink gated://h/x: 0 events delivered, 4 dropped" in caplog.text
    assert "cannot reach the broker (refused); holding up to 100 events and retrying" in caplog.text


# --------------------------------------------------------------------------- real brokers


def require_broker(kind):
    """Skip without the broker's server or client library; in CI (STREAMREC_REQUIRE_BROKERS) fail."""
    missing = unavailable(kind)
    if missing:
        if os.environ.get("STREAMREC_REQUIRE_BROKERS"):
            pytest.fail(f"the {kind} broker is required (CI installs it: see .ci/run): {missing}")
        pytest.skip(missing)


def start_broker(kind, tmp_path):
    require_broker(kind)
    return BROKERS[kind](tmp_path / kind).start()


def redis_entries(port, key):
    import redis

    client = redis.Redis(port=port)
    try:
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(key)]
    finally:
        client.close()


def jetstream(port, action):
    """Run ``action(js)`` against the server's JetStream, in an event loop of its own."""
    import nats

    async def run():
        connection = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            return await action(connection.jetstream())
        finally:
            await connection.close()

    return asyncio.run(run())


async def stored_events(js):
    info = await js.stream_info("EVENTS")
    return [json.loads((await js.get_msg("EVENTS", seq)).data) for seq in
            range(info.state.first_seq, info.state.last_seq + 1)] if info.state.messages else []


class Watcher:
    """How the test sees what reached a broker: its own subscriber (MQTT, a persistent session the
    broker keeps across its restart), the Redis stream itself, or a JetStream stream (NATS)."""

    def __init__(self, kind, server):
        self.kind, self.server = kind, server
        self.before_restart: list[int] = []
        if kind == "mqtt":
            self.subscriber = MqttSubscriber(server.port, "test/#", client_id="restart-watcher").start()
        if kind == "nats":
            jetstream(server.port, lambda js: js.add_stream(name="EVENTS", subjects=["test.>"]))

    def url(self, **options):
        return self.server.url("0" if self.kind == "redis" else "test", **options,
                               **({"stream": "test"} if self.kind == "redis" else {}))

    def seqs(self):
        if self.kind == "mqtt":
            return self.subscriber.received.seqs()
        if self.kind == "redis":  # a restarted Redis starts empty: what it held before is kept here
            return self.before_restart + [json.loads(e["event"])["seq"] for e in redis_entries(self.server.port, "test")]
        return [e["seq"] for e in jetstream(self.server.port, stored_events)]

    def broker_stops(self):
        if self.kind == "redis":
            self.before_restart = self.seqs()
        self.server.stop()

    def close(self):
        if self.kind == "mqtt":
            self.subscriber.stop()


@pytest.mark.parametrize("kind", ["mqtt", "redis", "nats"])
def test_a_broker_sink_survives_its_broker_restart(kind, tmp_path, caplog):
    server = start_broker(kind, tmp_path)
    watcher = Watcher(kind, server)
    sink = create_sink(watcher.url())
    bus = EventBus([sink])
    try:
        with caplog.at_level(logging.INFO, logger="streamrec.sinks"):
            emit(bus, 20)
            wait_until(lambda: sink.stats().delivered == 20, what="the first events")
            wait_until(lambda: len(set(watcher.seqs())) == 20, what="the first events to reach the watcher")
            watcher.broker_stops()
            emit(bus, 1)
            wait_until(lambda: not sink.stats().connected, what="the sink to notice the broker is gone")
            emit(bus, 29)
            assert sink.stats().waiting == 30
            server.start()
            emit(bus, 20)
            wait_until(lambda: sink.stats().delivered == 70, 30, "the held events")
            wait_until(lambda: len(set(watcher.seqs())) == 70, 30, "every event at the watcher")
            bus.close()
        seqs = watcher.seqs()
    finally:
        watcher.close()
        server.kill()
    assert sorted(set(seqs)) == list(range(70))
    assert [s for i, s in enumerate(seqs) if s not in seqs[:i]] == list(range(70))  # in order, repeats aside
    stats = sink.stats()
    assert (stats.delivered, stats.dropped) == (70, 0) and stats.reconnects >= 1
    assert "lost the broker" in caplog.text and "events waiting" in caplog.text


def test_mqtt_status_is_retained_per_stream(tmp_path):
    server = start_broker("mqtt", tmp_path)
    try:
        bus = EventBus([create_sink(server.url("site"))])
        bus.emit("status", "gate", state="live")
        bus.emit("status", "lobby", state="live")
        bus.emit("action_start", "gate", label="waving")
        bus.emit("status", "gate", state="stalled")
        bus.close()
        late = MqttSubscriber(server.port, "site/#").start()  # joins after every event was published
        late.received.wait_for(2, 10)
        time.sleep(0.3)  # anything beyond the two retained messages would come with them
        late.stop()
    finally:
        server.kill()
    got = {(e["stream"], e["type"]): e.get("state") for e in late.received.events}
    assert got == {("gate", "status"): "stalled", ("lobby", "status"): "live"}


def test_an_overflowing_buffer_keeps_the_newest_and_counts_the_rest(tmp_path, caplog):
    server = start_broker("redis", tmp_path)
    sink = create_sink(server.url("0", stream="test", buffer=5))
    bus = EventBus([sink])
    try:
        with caplog.at_level(logging.INFO, logger="streamrec.sinks"):
            emit(bus, 3)
            wait_until(lambda: sink.stats().delivered == 3)
            server.stop()
            emit(bus, 1)
            wait_until(lambda: not sink.stats().connected, what="the sink to notice the broker is gone")
            emit(bus, 11)
            server.start()
            wait_until(lambda: sink.stats().delivered == 8, 30, "the held events")
            bus.close()
        after = [json.loads(e["event"])["seq"] for e in redis_entries(server.port, "test")]
    finally:
        server.kill()
    assert after == [10, 11, 12, 13, 14]  # the newest five of the outage
    assert sink.stats().dropped == 7
    assert "5 events waiting for the broker, the most it holds (?buffer=); dropping the oldest" in caplog.text
    assert "8 events delivered, 7 dropped" in caplog.text


def test_run_with_a_redis_sink_puts_every_logged_event_in_the_stream(tmp_path, video_file):
    server = start_broker("redis", tmp_path)
    try:
        log_path = tmp_path / "events.jsonl"
        result = run_cli("run", "--source", f"door={video_file}", "--publish", "none", "--quiet", "--event-log",
                         str(log_path), "--set", "pipeline.hop_frames=16",
                         "--sink", server.url("0", stream="cams", maxlen=1000))
        assert result.returncode == 0, result.stderr
        entries = redis_entries(server.port, "cams")
    finally:
        server.kill()
    logged = log_path.read_text().splitlines()
    assert [e["event"] for e in entries] == logged
    assert [(e["stream"], e["type"], e["event_id"]) for e in entries] == [
        (e["stream"], e["type"], e["event_id"]) for e in map(json.loads, logged)]
    assert f"sink redis://127.0.0.1:{server.port}/0?stream=***&maxlen=***: {len(logged)} events delivered" \
        in result.stderr


def test_a_broker_password_as_typed_reaches_a_real_redis_and_no_message(tmp_path, caplog):
    """A password holding '/', '@' and '#', typed into the sink URL unencoded (as a camera's or a
    broker's web UI lets users choose them): the sink logs in with it and every line masks it."""
    from streamrec.bench.sinks import RedisServer

    password = "Kx/9q@1#z"

    class PasswordRedis(RedisServer):
        def command(self) -> list[str]:
            return [*super().command(), "--requirepass", password]

    require_broker("redis")
    server = PasswordRedis(tmp_path / "redis").start()
    try:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0?stream=cams"
        caplog.set_level(logging.INFO)
        sink = create_sink(url)
        bus = EventBus([sink])
        for index in range(3):
            bus.emit("status", "door", state="live", detail=f"event {index}")
        bus.close()
        import redis

        client = redis.Redis(port=server.port, password=password)
        try:
            assert [json.loads(fields[b"event"])["detail"] for _, fields in client.xrange("cams")] == [
                f"event {index}" for index in range(3)]
        finally:
            client.close()
    finally:
        server.kill()
    with pytest.raises(StreamrecError) as err:  # a bad port after such a password: the line shows none of it
        check_sink_url(f"redis://admin:{password}@127.0.0.1:63x9/0")
    assert "Kx" not in str(err.value) and "9q" not in str(err.value)
    assert password not in caplog.text and "Kx/" not in caplog.text


def test_bench_sinks_measures_every_target_it_can_run(tmp_path):
    for kind in ("mqtt", "redis", "nats"):
        require_broker(kind)
    result = run_cli("bench", "sinks", "--burst", "300", "--paced", "50", "--rate", "200", "--json",
                     str(tmp_path / "sinks.json"), "--markdown", str(tmp_path / "BENCH.md"))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "sinks.json").read_text())
    rows = {row["target"]: row for row in document["results"]}
    assert list(rows) == ["zeromq", "mqtt", "redis", "nats"] and document["skipped"] == []
    for row in rows.values():
        assert (row["burst_received"], row["paced_received"], row["repeated"]) == (300, 50, 0)
        assert row["events_per_s"] > 0 and 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert set(document["software"]) >= {"mosquitto", "redis-server", "nats-server", "pyzmq", "paho-mqtt"}
    section = (tmp_path / "BENCH.md").read_text()
    assert "## sinks: brokers on loopback" in section and "| nats |" in section
