"""Soak: several streams of every kind, subscribers coming and going, an RTSP restart half way.

Bounded: ``STREAMREC_SOAK_S`` seconds (60 by default, as CI runs it; set it higher for a
longer soak). ``STREAMREC_SOAK_REPORT=FILE`` writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import psutil
import zmq

from conftest import REPO, cli, write_video
from test_rtsp import RECONNECT_FAST, read_events

DURATION_S = float(os.environ.get("STREAMREC_SOAK_S", "60"))
WARM_UP_FRACTION = 0.3  # growth is measured from the end of warm-up
RSS_GROWTH_BOUND_MB = 40.0
THREAD_GROWTH_BOUND = 4  # FFmpeg's reader threads come and go with reconnects


def churn_subscribers(address: str, stop: threading.Event, received: list[int]) -> None:
    """Subscribers that connect, read for a while, and leave, over and over."""
    context = zmq.Context.instance()
    while not stop.is_set():
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(address)
        until = time.monotonic() + 1.5
        while time.monotonic() < until and not stop.is_set():
            if socket.poll(100):
                socket.recv_multipart()
                received[0] += 1
        socket.close(0)


def test_soak(rtsp_server, tmp_path, loopback_port):
    video = write_video(tmp_path / "long.mp4", frames=int(30 * DURATION_S * 0.6), size=(160, 120))
    log_path = tmp_path / "events.jsonl"
    address = f"tcp://127.0.0.1:{loopback_port}"
    process = subprocess.Popen(
        cli("run", "--source", "a=synthetic:size=160x120,fps=30", "--source", "b=synthetic:size=320x240,fps=15",
            "--source", f"file={video}", "--source", f"rtsp={rtsp_server.url()}", "--realtime",
            "--publish", address, "--quiet", "--event-log", str(log_path), *RECONNECT_FAST,
            "--set", "pipeline.status_interval_s=2", "--set", "postprocess.enter_threshold=0.1",
            "--set", "postprocess.exit_threshold=0.1"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop, received = threading.Event(), [0]
    churn = threading.Thread(target=churn_subscribers, args=(address, stop, received), daemon=True)
    churn.start()
    samples = []  # (seconds, rss MiB, threads)
    restarted = False
    try:
        watched = psutil.Process(process.pid)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < DURATION_S:
            assert process.poll() is None, process.stderr.read()
            samples.append((elapsed, watched.memory_info().rss / 2**20, watched.num_threads()))
            if not restarted and elapsed > DURATION_S / 2:
                rtsp_server.stop()
                time.sleep(1.0)
                rtsp_server.start()
                restarted = True
            time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
        stderr = process.stderr.read()
    finally:
        stop.set()
        process.kill()
    churn.join(5)

    events = read_events(log_path)
    warm = [s for s in samples if s[0] >= DURATION_S * WARM_UP_FRACTION]
    report = {
        "duration_s": DURATION_S,
        "events": len(events),
        "events_seen_by_churning_subscribers": received[0],
        "rss_mb_after_warm_up": round(warm[0][1], 1),
        "rss_mb_max_after_warm_up": round(max(s[1] for s in warm), 1),
        "rss_mb_end": round(samples[-1][1], 1),
        "threads_after_warm_up": warm[0][2],
        "threads_max_after_warm_up": max(s[2] for s in warm),
        "reconnects": sum(e.get("state") == "reconnecting" for e in events),
    }
    if os.environ.get("STREAMREC_SOAK_REPORT"):
        with open(os.environ["STREAMREC_SOAK_REPORT"], "w") as f:
            json.dump(report, f, indent=2)
    print("soak:", json.dumps(report))

    assert returncode == 0, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    assert [e["seq"] for e in events] == list(range(len(events))), "no event may be missing from the log"
    assert report["reconnects"] >= 1 and received[0] > 0
    for stream in ("a", "b", "rtsp"):
        served = [e for e in events if e["stream"] == stream and e["type"] == "status"][-1]["hops_served"]
        assert served > 0, f"stream {stream} was never served"
    assert report["rss_mb_max_after_warm_up"] - report["rss_mb_after_warm_up"] < RSS_GROWTH_BOUND_MB
    assert report["threads_max_after_warm_up"] - report["threads_after_warm_up"] <= THREAD_GROWTH_BOUND
