"""One place to subscribe: the ZeroMQ proxy (`run_stream.py broker`) serves every subscriber
from several publishers, each publisher's sequence intact, with CURVE on both of its sides."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
import zmq
import zmq.auth

from conftest import REPO, cli, free_port, run_cli
from streamrec.bench.sinks import ZmqSubscriber
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, EventProxy, SequenceCheck, ZmqPublisher


@pytest.fixture
def proxy():
    proxy = EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    yield proxy
    proxy.stop()


def wait_until(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def publisher_through(proxy, **curve) -> tuple[EventBus, ZmqPublisher]:
    publisher = ZmqPublisher("connect:" + proxy.frontend_address, 100_000, **curve)
    return EventBus([publisher]), publisher


def test_one_proxy_serves_several_publishers_to_several_subscribers(proxy):
    subscribers = [ZmqSubscriber(proxy.backend_address).start() for _ in range(2)]
    # A probe publisher emits until every subscriber hears it: then every subscription has reached the proxy.
    probe, probe_socket = publisher_through(proxy)
    assert probe_socket.wait_for_subscriber(10)
    for _ in range(500):
        probe.emit("status", "probe", state="live")
        if all(s.received.wait_for(1, 0.02) for s in subscribers):
            break
    buses = [publisher_through(proxy) for _ in range(3)]
    assert all(socket.wait_for_subscriber(10) for _, socket in buses), "a subscription did not reach a publisher"
    for index in range(300):
        for bus, _ in buses:
            bus.emit("status", f"cam{index % 4}", state="live", detail=str(index))
    ids = {bus.publisher for bus, _ in buses}
    for subscriber in subscribers:  # the checks below say what was missing, if anything
        wait_until(lambda: sum(e["publisher"] in ids for e in list(subscriber.received.events)) >= 900, 20)
    for bus, _ in [*buses, (probe, probe_socket)]:
        bus.close()
    for subscriber in subscribers:
        subscriber.stop()
        events = [e for e in subscriber.received.events if e["publisher"] in ids]
        check = SequenceCheck()
        notes = [note for e in events for note in check.check(e)]
        assert len(events) == 900
        assert sorted(notes) == sorted(f"publisher {p} started" for p in ids)  # no gap, no missed start
        assert {p: record.next_seq for p, record in check.publishers.items()} == {p: 300 for p in ids}


def make_keys(folder, *names):
    folder.mkdir(exist_ok=True)
    return {name: zmq.auth.create_certificates(str(folder), name) for name in names}  # (public, secret) files


def curve_subscriber(address, server_public, own_secret):
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    if server_public:
        socket.curve_serverkey, _ = zmq.auth.load_certificate(server_public)
        socket.curve_publickey, socket.curve_secretkey = zmq.auth.load_certificate(own_secret)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(address)
    return socket


def drain(socket, wait_ms):
    messages = []
    while socket.poll(wait_ms):
        messages.append(json.loads(socket.recv_multipart()[1]))
    return messages


def test_curve_on_both_sides_of_the_proxy_lets_in_only_the_allowed(tmp_path):
    keys = make_keys(tmp_path / "keys", "broker", "camera", "intruder", "dashboard", "snoop")
    allowed_publishers, allowed_subscribers = tmp_path / "publishers", tmp_path / "subscribers"
    for folder, name in ((allowed_publishers, "camera"), (allowed_subscribers, "dashboard")):
        folder.mkdir()
        (folder / f"{name}.key").write_bytes(open(keys[name][0], "rb").read())
    proxy = EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve_secret_key=keys["broker"][1],
                       allowed_publishers=str(allowed_publishers), allowed_subscribers=str(allowed_subscribers)).start()
    broker_public = keys["broker"][0]
    dashboard = curve_subscriber(proxy.backend_address, broker_public, keys["dashboard"][1])
    snoop = curve_subscriber(proxy.backend_address, broker_public, keys["snoop"][1])  # valid keys, not allowed
    plain = curve_subscriber(proxy.backend_address, None, None)  # no encryption at all
    camera, camera_socket = publisher_through(proxy, curve_secret_key=keys["camera"][1], curve_server_key=broker_public)
    intruder, intruder_socket = publisher_through(proxy, curve_secret_key=keys["intruder"][1],
                                                  curve_server_key=broker_public)
    try:
        assert camera_socket.wait_for_subscriber(10), "the allowed subscriber's subscription did not come through"
        assert not intruder_socket.wait_for_subscriber(1)  # the proxy never lets it in, so nothing reaches it
        for index in range(50):
            camera.emit("status", "gate", state="live", detail=str(index))
            intruder.emit("status", "gate", state="live", detail=f"forged {index}")
        got = drain(dashboard, 2000)
        assert [e["seq"] for e in got] == list(range(50))
        assert {e["publisher"] for e in got} == {camera.publisher}
        assert drain(snoop, 300) == [] and drain(plain, 300) == []
    finally:
        for bus in (camera, intruder):
            bus.close()
        for socket in (dashboard, snoop, plain):
            socket.close(0)
        proxy.stop()


def test_proxy_settings_are_checked(tmp_path):
    with pytest.raises(StreamrecError, match="CURVE needs --curve-allowed-publishers and/or"):
        EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve_secret_key="broker.key_secret")
    with pytest.raises(StreamrecError, match="needs the broker's own --curve-secret-key"):
        EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", allowed_subscribers=str(tmp_path))
    keys = make_keys(tmp_path / "keys", "broker")
    proxy = EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", curve_secret_key=keys["broker"][1],
                       allowed_subscribers=str(tmp_path / "missing"))
    with pytest.raises(StreamrecError, match="CURVE needs --curve-allowed-subscribers: a folder"):
        proxy.start()
    with pytest.raises(StreamrecError, match="CURVE to a broker needs events.curve_server_key"):
        ZmqPublisher("connect:tcp://127.0.0.1:1", 10, curve_secret_key=keys["broker"][1])
    busy = EventProxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        with pytest.raises(StreamrecError, match="cannot bind the broker's --frontend .*address already in use"):
            EventProxy(busy.frontend_address, "tcp://127.0.0.1:*").start()
    finally:
        busy.stop()


def test_broker_command_carries_a_run_to_a_subscriber(tmp_path, video_file):
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = subprocess.Popen(cli("broker", "--frontend", frontend, "--backend", backend), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    subscriber, lines = None, []
    try:
        assert broker.stdout.readline().startswith("broker ready"), broker.stderr.read()
        subscriber = subprocess.Popen(cli("subscribe", "--connect", backend, "--timeout", "120", "--expect-events"),
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: lines.extend(subscriber.stdout), daemon=True)
        reader.start()
        log_path = tmp_path / "events.jsonl"
        result = run_cli("run", "--source", str(video_file), "--publish", f"connect:{frontend}", "--wait-subscriber",
                         "30", "--quiet", "--event-log", str(log_path), "--set", "pipeline.hop_frames=16")
        assert result.returncode == 0, result.stderr
        assert f"publishing events to the broker at {frontend}" in result.stderr
        logged = [json.loads(line) for line in log_path.read_text().splitlines()]
        wait_until(lambda: len(lines) >= len(logged), 20)
        subscriber.send_signal(signal.SIGINT)  # a clean stop: the summary, and the exit status of --expect-events
        subscriber.wait(60)
        reader.join(10)
        stderr = subscriber.stderr.read()
        broker.terminate()
        assert broker.wait(timeout=20) == 0, broker.stderr.read()
    finally:
        for process in (broker, subscriber):
            if process is not None:
                process.kill()
    received = [json.loads(line) for line in lines]
    assert subscriber.returncode == 0, stderr
    assert [e["event_id"] for e in received] == [e["event_id"] for e in logged]  # every event, none twice
    assert f"{len(logged)} events received from 1 publisher, 0 lost" in stderr


def test_publish_connect_to_a_malformed_address_is_one_line(video_file):
    result = run_cli("run", "--source", str(video_file), "--publish", "connect:nowhere", "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'nowhere' is not a ZeroMQ address" in lines[0]
