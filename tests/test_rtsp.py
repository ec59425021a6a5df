"""A real RTSP server (GStreamer) is read, killed and restarted; the stream comes back."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from conftest import REPO, cli

RECONNECT_FAST = ["--set", "reconnect.initial_delay_s=0.2", "--set", "reconnect.max_delay_s=1.0",
                  "--set", "reconnect.max_retries=-1", "--set", "pipeline.stall_timeout_s=2"]


def read_events(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(path, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(path)
        if predicate(events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last events: {read_events(path)[-5:]}")


def test_rtsp_stream_survives_server_restart(rtsp_server, tmp_path, loopback_port):
    log_path = tmp_path / "events.jsonl"
    url = rtsp_server.url(credentials="viewer:s3cret-pw@")
    process = subprocess.Popen(
        cli("run", "--source", f"gate={url}", "--publish", f"tcp://127.0.0.1:{loopback_port}",
            "--predictions", "--event-log", str(log_path), *RECONNECT_FAST),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        predictions = lambda events: [e for e in events if e["type"] == "prediction"]  # noqa: E731
        wait_for(log_path, lambda ev: len(predictions(ev)) >= 3, 60, "predictions from the RTSP stream")

        rtsp_server.stop()
        events = wait_for(log_path, lambda ev: any(e.get("state") == "reconnecting" for e in ev), 30,
                          "a 'reconnecting' status after the server was killed")
        served_before = len(predictions(events))

        rtsp_server.start()
        events = wait_for(log_path, lambda ev: [e.get("state") for e in ev if e["type"] == "status"][-1:] == ["live"]
                          and len(predictions(ev)) >= served_before + 3, 60, "the stream to come back live")
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
        stdout, stderr = process.communicate()
    finally:
        process.kill()
    assert returncode == 0, stderr
    states = [e["state"] for e in read_events(log_path) if e["type"] == "status"]
    reconnect_at = states.index("reconnecting")
    assert "live" in states[:reconnect_at] and "live" in states[reconnect_at:]
    assert states[-1] == "ended"
    seqs = [e["seq"] for e in read_events(log_path)]
    assert seqs == list(range(len(seqs)))
    everything = log_path.read_text() + stdout + stderr
    assert "s3cret-pw" not in everything, "the password leaked into events or logs"
    assert "viewer:***@" in everything
