"""Nobody let in: CURVE keeps unknown subscribers out; credentials never reach events, logs or metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import zmq
import zmq.auth

from conftest import REPO, cli, free_port, run_cli
from test_rtsp import read_events, wait_for


def make_keys(folder, *names):
    for name in names:
        result = run_cli("keys", name, "--dir", str(folder))
        assert result.returncode == 0, result.stderr
    return {name: (folder / f"{name}.key", folder / f"{name}.key_secret") for name in names}


def curve_subscriber(address, server_public_file, own_secret_file):
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.curve_serverkey, _ = zmq.auth.load_certificate(str(server_public_file))
    socket.curve_publickey, socket.curve_secretkey = zmq.auth.load_certificate(str(own_secret_file))
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(address)
    return socket


def drain(socket, wait_ms=1000):
    messages = []
    while socket.poll(wait_ms):
        messages.append(json.loads(socket.recv_multipart()[1]))
    return messages


def test_curve_lets_in_only_allowed_subscribers(tmp_path, video_file, loopback_port):
    keys = make_keys(tmp_path / "keys", "server", "alice", "mallory")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "alice.key").write_bytes(keys["alice"][0].read_bytes())
    address = f"tcp://127.0.0.1:{loopback_port}"
    context = zmq.Context.instance()

    alice = curve_subscriber(address, keys["server"][0], keys["alice"][1])
    mallory = curve_subscriber(address, keys["server"][0], keys["mallory"][1])  # valid keys, not allowed
    plain = context.socket(zmq.SUB)  # no encryption at all
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    plain.connect(address)
    try:
        result = run_cli("run", "--source", str(video_file), "--publish", address, "--quiet", "--predictions",
                         "--wait-subscriber", "20", "--curve-secret-key", str(keys["server"][1]),
                         "--curve-allowed-clients", str(allowed))
        assert result.returncode == 0, result.stderr
        alice_got, mallory_got, plain_got = drain(alice), drain(mallory, 200), drain(plain, 200)
    finally:
        for socket in (alice, mallory, plain):
            socket.close(0)
    assert len(alice_got) > 10 and [e["seq"] for e in alice_got] == list(range(len(alice_got)))
    assert mallory_got == [] and plain_got == []


def test_subscribe_command_speaks_curve(tmp_path, video_file, loopback_port):
    keys = make_keys(tmp_path / "keys", "server", "viewer")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "viewer.key").write_bytes(keys["viewer"][0].read_bytes())
    address = f"tcp://127.0.0.1:{loopback_port}"
    subscriber = subprocess.Popen(
        cli("subscribe", "--connect", address, "--count", "3", "--timeout", "60",
            "--curve-server-key", str(keys["server"][0]), "--curve-key", str(keys["viewer"][1])),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = run_cli("run", "--source", str(video_file), "--publish", address, "--quiet", "--predictions",
                         "--wait-subscriber", "20", "--curve-secret-key", str(keys["server"][1]),
                         "--curve-allowed-clients", str(allowed))
        stdout, stderr = subscriber.communicate(timeout=60)
    finally:
        subscriber.kill()
    assert result.returncode == 0, result.stderr
    assert subscriber.returncode == 0, stderr
    assert [json.loads(line)["seq"] for line in stdout.splitlines()] == [0, 1, 2]


def test_credentials_never_reach_events_logs_or_metrics(tmp_path, loopback_port):
    """An unreachable camera with a password in its URL, retried forever beside a working stream."""
    log_path = tmp_path / "events.jsonl"
    metrics_port = free_port()
    secret_url = "rtsp://admin:hunter2-pw@127.0.0.1:1/stream?token=tok-9f8e7d"
    process = subprocess.Popen(
        cli("run", "--source", f"door={secret_url}", "--source", "yard=synthetic:size=160x120,fps=30",
            "--publish", f"tcp://127.0.0.1:{loopback_port}", "--event-log", str(log_path),
            "--metrics", f"127.0.0.1:{metrics_port}", "--set", "reconnect.max_retries=-1",
            "--set", "reconnect.initial_delay_s=0.2", "--set", "reconnect.max_delay_s=0.5",
            "--set", "pipeline.status_interval_s=1"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(log_path, lambda ev: sum(e.get("state") == "reconnecting" for e in ev) >= 3
                 and any(e["type"] == "status" and e["detail"] == "periodic" for e in ev), 60,
                 "reconnect attempts and periodic status")
        deadline = time.monotonic() + 20
        while True:
            try:
                metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert 'streamrec_stream_state{state="reconnecting",stream="door"} 1.0' in metrics
    assert 'streamrec_hops_served_total{stream="yard"}' in metrics
    everything = log_path.read_text() + stdout + stderr + metrics
    assert "hunter2-pw" not in everything and "tok-9f8e7d" not in everything
    door_status = [e for e in read_events(log_path) if e["stream"] == "door" and e["type"] == "status"]
    assert door_status[0]["source"] == "rtsp://admin:***@127.0.0.1:1/stream?token=***"


def test_sink_urls_show_masked_wherever_a_sink_shows_them(caplog):
    """Broker sinks name their URL in log lines (unreachable, summary), in errors and in their repr."""
    import logging

    import pytest

    from streamrec.errors import StreamrecError
    from streamrec.events import EventBus
    from streamrec.sinks import create_sink, installed, sink_kinds

    missing = [kind.package for kind in sink_kinds().values() if not installed(kind.library)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install 'streamrec[brokers]')")
    port = free_port()  # nothing listens there
    urls = [f"redis://admin:hunter2-pw@127.0.0.1:{port}/0?stream=cams&flush_s=0.3",
            f"mqtt://cam:hunter2-pw@127.0.0.1:{port}/site?flush_s=0.3",
            f"nats://natstoken-42@127.0.0.1:{port}/site?flush_s=0.3"]
    with caplog.at_level(logging.INFO, logger="streamrec.sinks"):
        sinks = [create_sink(url) for url in urls]
        bus = EventBus(sinks)
        bus.emit("status", "door", state="live")
        deadline = time.monotonic() + 20
        while caplog.text.count("cannot reach the broker") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        bus.close()
    errors = []
    for bad in ("redis://admin:hunter2-pw@h/0?stream=x&buffr=1", "mqtt://cam:hunter2-pw@h/site?qos=9",
                "nats://natstoken-42@h/a*b"):
        with pytest.raises(StreamrecError) as err:
            create_sink(bad)
        errors.append(str(err.value))
    shown = caplog.text + "\n".join(errors) + "".join(map(repr, sinks))
    assert caplog.text.count("cannot reach the broker") == 3 and caplog.text.count("1 dropped") == 3
    assert "hunter2-pw" not in shown and "natstoken-42" not in shown
    assert f"redis://admin:***@127.0.0.1:{port}/0" in caplog.text and f"nats://***@127.0.0.1:{port}/site" in caplog.text
    assert all("sink " in error for error in errors)


# --------------------------------------------------------------------------- every channel masks (issue 16)
