"""Nobody let in: CURVE keeps unknown subscribers out; credentials never reach events, logs, metrics,
error lines or benchmark documents; key files are private and never committed."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
import urllib.request

import pytest
import zmq
import zmq.auth

from conftest import REPO, cli, free_port, run_cli, write_video
from test_rtsp import read_events, wait_for

# Query keys that carry secrets in real URLs (cloud storage signatures, OAuth, JWT, sessions, passwords).
SECRET_KEYS = ("api_key", "access_token", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "token",
               "sig", "signature", "password", "key", "secret", "auth", "jwt", "session", "client_secret")


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
    assert f"publishing events on {address} (CURVE)" in result.stderr  # the log says CURVE is on


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


def with_secrets(base: str) -> tuple[str, list[str]]:
    """``base`` (SCHEME://HOST:PORT/PATH) with user-info and every secret key; the URL and its secret values."""
    values = [f"{key.upper().replace('-', '')}VALUE{index}" for index, key in enumerate(SECRET_KEYS)]
    scheme, rest = base.split("://")
    query = "&".join(f"{key}={value}" for key, value in zip(SECRET_KEYS, values))
    return f"{scheme}://viewer:USERINFOPW@{rest}?{query}", ["USERINFOPW", *values]


def masked(url: str) -> str:
    """What every channel must show instead: independent of the code under test."""
    scheme, rest = url.split("://")
    host_path = rest.split("@", 1)[1].split("?")[0]
    keys = [item.split("=")[0] for item in rest.split("?")[1].split("&")]
    return f"{scheme}://viewer:***@{host_path}?" + "&".join(f"{key}=***" for key in keys)


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


class VideoServer(http.server.ThreadingHTTPServer):
    """A real HTTP server with one video at every path, byte ranges served (FFmpeg seeks in an MP4)."""

    def __init__(self, video: bytes):
        super().__init__(("127.0.0.1", 0), VideoRequest)
        self.video = video
        self.requests: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/cams/door.mp4"


class VideoRequest(http.server.BaseHTTPRequestHandler):
    server: VideoServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        data, start = self.server.video, 0
        end = len(data) - 1
        self.server.requests.append(self.path)
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and wanted.group(1):
            start, end = int(wanted.group(1)), min(int(wanted.group(2) or end), end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        try:
            self.wfile.write(data[start:end + 1])
        except (BrokenPipeError, ConnectionResetError):
            pass  # FFmpeg closes a connection once it has read what it needs

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def video_server(tmp_path):
    server = VideoServer(write_video(tmp_path / "door.mp4", frames=60).read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_secrets_in_a_source_url_reach_no_output_channel(tmp_path, video_server, loopback_port):
    """A real video over real HTTP, its URL full of real-world secret names: the run gets as far as
    playing it; the event log, stdout's events, stderr's log lines, the metrics endpoint and a
    subscriber all show the URL masked, while the server got the secrets it needed."""
    url, secrets = with_secrets(video_server.base)
    log_path, metrics_port = tmp_path / "events.jsonl", free_port()
    address = f"tcp://127.0.0.1:{loopback_port}"
    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    subscriber.connect(address)
    stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(stdout_path, "w") as stdout_file, open(stderr_path, "w") as stderr_file:  # never a full pipe
        process = subprocess.Popen(
            cli("run", "--source", f"door={url}", "--source", "yard=synthetic:size=160x120,fps=30", "--publish",
                address, "--event-log", str(log_path), "--metrics", f"127.0.0.1:{metrics_port}", "--predictions",
                "--set", "reconnect.max_retries=-1", "--set", "reconnect.initial_delay_s=0.2",
                "--set", "pipeline.status_interval_s=1"),
            cwd=REPO, stdout=stdout_file, stderr=stderr_file, text=True)
    try:
        wait_for(log_path, lambda ev: any(e["stream"] == "door" and e["type"] == "prediction" for e in ev)
                 and any(e["stream"] == "door" and e.get("state") == "ended" for e in ev)
                 and any(e.get("detail") == "periodic" for e in ev), 120, "door's predictions, its end (a file "
                 "served over HTTP is played once), and periodic status")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        published = []
        while subscriber.poll(500):
            published.append(subscriber.recv_multipart()[1].decode())
    finally:
        process.kill()
        subscriber.close(0)
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    assert process.returncode == 0, stderr
    channels = {"event log": log_path.read_text(), "stdout events": stdout, "stderr": stderr, "metrics": metrics,
                "published": "\n".join(published)}
    assert {name: leaks(text, secrets) for name, text in channels.items()} == {name: [] for name in channels}
    door = [e for e in read_events(log_path) if e["stream"] == "door" and e["type"] == "status"]
    assert {e["source"] for e in door} == {masked(url)}
    assert any(masked(url) in e["detail"] for e in door if e["state"] == "live")  # the details show it too
    assert f"stream door: {masked(url)} at 30.0 fps" in stderr  # the log line of the open
    assert any(json.loads(line)["stream"] == "door" for line in stdout.splitlines())
    assert 'streamrec_frames_captured_total{stream="door"}' in metrics
    assert any(json.loads(event).get("source") == masked(url) for event in published)
    assert any(request.endswith(url.split("/cams/door.mp4")[1]) for request in video_server.requests)


def test_an_error_line_masks_the_url(tmp_path):
    url, secrets = with_secrets(f"https://127.0.0.1:{free_port()}/v.mp4")
    result = run_cli("run", "--source", f"door={url}", "--publish", "none", "--set", "reconnect.max_retries=0",
                     timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: stream door: cannot open {masked(url)}; check the URL, "
                                                       "credentials and that the server is reachable")
    assert leaks(result.stdout + result.stderr, secrets) == []


def test_a_benchmark_document_masks_the_url(tmp_path, video_server):
    url, secrets = with_secrets(video_server.base)
    json_path = tmp_path / "bench.json"
    result = run_cli("bench", "pipeline", "--config", "slowfast_tiny", "--backend", "torch", "--source", url,
                     "--streams", "1", "--duration", "2", "--engine-iters", "2", "--engine-seconds", "0",
                     "--json", str(json_path), "--markdown", str(tmp_path / "BENCHMARKS.md"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(json_path.read_text())
    outputs = {"json": json_path.read_text(), "markdown": (tmp_path / "BENCHMARKS.md").read_text(),
               "stdout": result.stdout, "stderr": result.stderr}
    assert {name: leaks(text, secrets) for name, text in outputs.items()} == {name: [] for name in outputs}
    assert masked(url) in document["command"] and document["setup"]["sources"] == [masked(url)]
    (trial,) = document["results"]
    assert trial["per_stream"][0]["source"] == masked(url)


# --------------------------------------------------------------------------- key files


def test_keys_are_private_and_never_committed(tmp_path):
    keys = make_keys(tmp_path / "keys", "server")
    public, secret = keys["server"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644 & ~umask
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "keys/server.key_secret", "keys/server.key",
                              "allowed/viewer.key", "deploy/cam.key_secret"], cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == ["keys/server.key_secret", "keys/server.key", "allowed/viewer.key",
                                      "deploy/cam.key_secret"]


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/x", "a/b", "", ".hidden", "x" * 65, "name with space"])
def test_a_key_name_is_a_name_not_a_path(tmp_path, name):
    result = run_cli("keys", name, "--dir", str(tmp_path / "d"), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: key name {name!r} must be a plain name of letters, digits, "
                                                  "'_', '-' and '.' (at most 64, e.g. 'server'); choose the folder "
                                                  "with --dir"]
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- passwords as users type them


@pytest.mark.parametrize("password", ["Kx/9q", "Kx#9q", "Kx?9q", "Kx/9q?#z"])
def test_a_typed_password_that_ends_the_host_for_ffmpeg_is_refused_masked(password):
    """'/', '?' and '#' end a URL's host part for FFmpeg (and urlsplit, whose port error quoted the
    password's start): refused in one line that shows the URL masked and says to percent-encode."""
    from streamrec.errors import StreamrecError
    from streamrec.sources import parse_source

    for host in ("cam/live", "[::1", "10.0.0.7:554/live?token=t0k3n"):
        with pytest.raises(StreamrecError) as error:
            parse_source(f"rtsp://admin:{password}@{host}")
        message = str(error.value)
        assert message.startswith(f"source rtsp://admin:***@{host.replace('t0k3n', '***')}: its user name or password "
                                  "holds '/', '?' or '#'")
        assert "percent-encode" in message and "Kx" not in message and "9q" not in message and "t0k3n" not in message


@pytest.mark.parametrize("password", ["p ss", "it's", "b@c", "pa%2Fss"])
def test_a_typed_password_ffmpeg_can_read_is_opened_as_given_and_shown_masked(password):
    from streamrec.errors import StreamrecError
    from streamrec.sources import parse_source

    url = f"rtsp://admin:{password}@10.0.0.7:554/live"
    spec = parse_source(url)
    assert spec.target == url and spec.display == "rtsp://admin:***@10.0.0.7:554/live"
    with pytest.raises(StreamrecError) as error:  # a bad port: urlsplit's message, about the host part only
        parse_source(f"rtsp://admin:{password}@cam:x/live")
    assert str(error.value).startswith("source rtsp://admin:***@cam:x/live is not a valid URL (Port could not be cast")
    assert password not in str(error.value)


@pytest.mark.parametrize("source, line", [
    ("rtsp://admin:pa/ss@[::1", "error: --source: stream 'cam0': source rtsp://admin:***@[::1: its user name or "
                                "password holds '/', '?' or '#'"),
    ("rtsp://admin:pa ss@127.0.0.1:1/live", "error: stream cam0: cannot open rtsp://admin:***@127.0.0.1:1/live; check "
                                           "the URL, credentials and that the server is reachable"),
])
def test_a_typed_password_reaches_no_output_of_a_run(source, line):
    result = run_cli("run", "--publish", "none", "--quiet", "--set", "reconnect.max_retries=0", "--source", source,
                     timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(line)
    assert "pa/ss" not in result.stdout + result.stderr and "pa ss" not in result.stdout + result.stderr


class AuthFiles(http.server.BaseHTTPRequestHandler):
    """A model server that wants HTTP basic auth (viewer:right) and has no file for anyone else."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="models"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_checkpoint_urls_refused_password_is_one_masked_line():
    """It was an http.client.InvalidURL traceback (the password read as the port) or a DNS error
    for the host 'viewer:pw@127.0.0.1'; now the password goes as basic auth and the server's 401 is
    one line that shows it masked."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AuthFiles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://viewer:wr/ong pw@127.0.0.1:{server.server_address[1]}/zoo/x.pyth"
        result = run_cli("run", "--publish", "none", "--quiet", "--source", "synthetic:frames=3", "--checkpoint", url,
                         timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: download of http://viewer:***@127.0.0.1:{server.server_address[1]}/zoo/x.pyth failed: HTTP 401 "
        "Unauthorized; check the user name and password in it")
    assert "wr/ong" not in result.stdout + result.stderr
