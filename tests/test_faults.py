"""Faults survived, with real parts: RTSP servers that die, hang and come back at another
resolution, truncated and corrupt files, an engine that fails once, subscribers that never read."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess

import numpy as np
import pytest
import zmq

from conftest import REPO, cli, run_cli, write_video
from streamrec.backends import EngineWrapper, create_engine
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.events import EventBus, JsonlLog, MemorySink
from streamrec.pipeline import Pipeline
from test_rtsp import RECONNECT_FAST, read_events, wait_for


def statuses(events, stream):
    return [e for e in events if e["type"] == "status" and e["stream"] == stream]


def predictions(events, stream):
    return [e for e in events if e["type"] == "prediction" and e["stream"] == stream]


def start_run(log_path, port, *args):
    return subprocess.Popen(cli("run", "--publish", f"tcp://127.0.0.1:{port}", "--quiet", "--predictions",
                                "--event-log", str(log_path), *RECONNECT_FAST, *args),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_run(process):
    process.send_signal(signal.SIGTERM)
    try:
        returncode = process.wait(timeout=20)
    finally:
        process.kill()
    return returncode, process.communicate()[1]


def test_restart_at_new_resolution_and_stall_leave_other_streams_undisturbed(rtsp_server, tmp_path, loopback_port):
    log_path = tmp_path / "events.jsonl"
    process = start_run(log_path, loopback_port, "--source", f"gate={rtsp_server.url()}",
                        "--source", "yard=synthetic:size=160x120,fps=30", "--set", "reconnect.open_timeout_s=2")
    try:
        wait_for(log_path, lambda ev: len(predictions(ev, "gate")) >= 2 and len(predictions(ev, "yard")) >= 2, 60,
                 "predictions from both streams")

        # The camera comes back at another resolution.
        rtsp_server.stop()
        rtsp_server.start(size="640x360")
        events = wait_for(log_path, lambda ev: any("resolution changed from 320x240 to 640x360" in e["detail"]
                                                   for e in statuses(ev, "gate")), 60, "a resolution-change status")

        # The camera hangs without closing its connection: reported stalled, then reopened.
        rtsp_server.pause()
        stalled = wait_for(log_path, lambda ev: any(e["state"] == "stalled" for e in statuses(ev, "gate")[-3:]),
                           30, "a 'stalled' status")
        yard_before = len(predictions(stalled, "yard"))
        wait_for(log_path, lambda ev: any(e["state"] == "reconnecting" for e in statuses(ev, "gate")[-3:]), 30,
                 "a reopen attempt of the hung stream")
        # The other stream kept being served while the gate camera hung.
        assert len(predictions(read_events(log_path), "yard")) > yard_before
        rtsp_server.resume()
        gate_before = len(predictions(read_events(log_path), "gate"))
        wait_for(log_path, lambda ev: len(predictions(ev, "gate")) >= gate_before + 2, 60, "the hung stream to come back")
        returncode, stderr = stop_run(process)
    finally:
        process.kill()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    events = read_events(log_path)
    assert [e["seq"] for e in events] == list(range(len(events)))


def gst_video(path, size, frames):
    width, height = size
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}", "pattern=ball", "!",
                    f"video/x-raw,width={width},height={height},framerate=30/1", "!", "x264enc",
                    "speed-preset=ultrafast", "key-int-max=15", "!", "video/x-h264,stream-format=byte-stream", "!",
                    "filesink", f"location={path}"], check=True, timeout=60)
    return path


@pytest.mark.skipif(not shutil.which("gst-launch-1.0"), reason="needs gst-launch-1.0 (gstreamer1.0-tools)")
def test_resolution_change_inside_a_file_and_truncated_files_end_cleanly(tmp_path, loopback_port):
    # An H.264 stream whose resolution changes half way (two encodes back to back).
    mixed = tmp_path / "mixed.h264"
    mixed.write_bytes(gst_video(tmp_path / "a.h264", (320, 240), 60).read_bytes()
                      + gst_video(tmp_path / "b.h264", (640, 360), 60).read_bytes())
    truncated = tmp_path / "truncated.h264"
    truncated.write_bytes(mixed.read_bytes()[: mixed.stat().st_size // 3])
    corrupt_mp4 = tmp_path / "corrupt.mp4"  # an MP4 cut before its index: not decodable at all
    corrupt_mp4.write_bytes(write_video(tmp_path / "whole.mp4", 60).read_bytes()[:4000])
    log_path = tmp_path / "events.jsonl"
    result = run_cli("run", "--source", f"mixed={mixed}", "--source", f"cut={truncated}", "--source",
                     f"broken={corrupt_mp4}", "--publish", "none", "--quiet", "--predictions",
                     "--event-log", str(log_path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    events = read_events(log_path)
    # Every frame of the mixed file was read (OpenCV scales the second half to the first size) ...
    assert statuses(events, "mixed")[-1]["frames_captured"] == 120
    assert statuses(events, "mixed")[-1]["state"] == "ended"
    # ... the truncated one ended early but cleanly, and the undecodable one was reported, not fatal.
    assert statuses(events, "cut")[-1]["state"] == "ended" and statuses(events, "cut")[-1]["frames_captured"] > 0
    broken = statuses(events, "broken")
    assert broken[-1]["state"] == "ended" and "cannot decode video file" in " ".join(e["detail"] for e in broken)
    assert "stream broken: cannot decode video file" in result.stderr


class FailingOnce(EngineWrapper):
    """An engine that raises on its second batch: a fault injected around the real engine."""

    name = "failing-once"

    def __init__(self, engine):
        super().__init__(engine)
        self.calls = 0

    def infer(self, inputs):
        self.calls += 1
        if self.calls == 3:  # the first call is the warm-up
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.engine.infer(inputs)


def test_engine_exception_drops_one_batch_and_the_pipeline_goes_on(video_file, caplog):
    config = load_config("slowfast_tiny", ["events.predictions=true"])
    config = config.replace(streams=(StreamConfig(id="door", source=str(video_file)),))
    sink = MemorySink()
    with caplog.at_level(logging.ERROR):
        Pipeline(config, FailingOnce(create_engine(config)), load_labels(config), EventBus([sink])).run()
    served = sink.events("prediction")
    assert len(served) == 12 - 1  # one of the 12 hops was lost with its batch, the rest served
    assert any("engine failed" in r.message and "door" in r.message for r in caplog.records)


def test_subscribers_that_never_read_or_join_late_never_block_the_pipeline(video_file, tmp_path, loopback_port):
    address = f"tcp://127.0.0.1:{loopback_port}"
    context = zmq.Context.instance()
    stuck = context.socket(zmq.SUB)  # subscribes, then never reads
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(address)
    log_path = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        cli("run", "--source", str(video_file), "--source", f"again={video_file}", "--publish", address,
            "--wait-subscriber", "20", "--predictions", "--quiet", "--event-log", str(log_path),
            "--set", "events.send_hwm=2", "--set", "pipeline.hop_frames=1"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    late = context.socket(zmq.SUB)
    try:
        wait_for(log_path, lambda ev: len(ev) >= 20, 60, "the first events")
        late.setsockopt(zmq.SUBSCRIBE, b"")
        late.connect(address)
        returncode = process.wait(timeout=120)  # finishes although one subscriber never read a message
        received = []
        while late.poll(1000):
            received.append(json.loads(late.recv_multipart()[1]))
    finally:
        process.kill()
        stuck.close(0)
        late.close(0)
    assert returncode == 0, process.stderr.read()
    events = read_events(log_path)
    assert [e["seq"] for e in events] == list(range(len(events)))  # the durable log has every event
    assert len(predictions(events, "cam0")) == len(predictions(events, "again")) == 120 - 32 + 1
    # The late joiner saw a later part of the sequence (its high-water mark may drop some under load).
    assert received and received[0]["seq"] > 0 and np.all(np.diff([e["seq"] for e in received]) > 0)


def test_subscribe_reports_gaps_in_the_sequence(loopback_port):
    address = f"tcp://127.0.0.1:{loopback_port}"
    publisher = zmq.Context.instance().socket(zmq.XPUB)  # like PUB, and it sees subscriptions arrive
    publisher.bind(address)
    process = subprocess.Popen(cli("subscribe", "--connect", address, "--count", "3", "--timeout", "20"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Once the subscription has reached the publisher, what it sends goes to the subscriber.
        assert publisher.poll(20_000) and publisher.recv()[:1] == b"\x01", "no subscription came"
        for seq in (0, 1, 4):
            event = {"schema": 1, "type": "status", "stream": "s", "seq": seq, "time": "2026-01-01T00:00:00Z"}
            publisher.send_multipart([b"s.status", json.dumps(event).encode()])
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        publisher.close(0)
    assert process.returncode == 0
    assert [json.loads(line)["seq"] for line in stdout.splitlines()] == [0, 1, 4]
    assert "gap: events 2..3 missing (2 lost so far)" in stderr


def test_event_log_rotates_by_size_and_keeps_every_event(tmp_path):
    path = tmp_path / "events.jsonl"
    bus = EventBus([JsonlLog(path, max_bytes=2000, keep=50)])
    for index in range(100):
        bus.emit("status", "cam0", state="live", detail=f"event {index}")
    bus.close()
    files = sorted(tmp_path.glob("events.jsonl*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    assert len(files) > 3
    assert all(f.stat().st_size < 2000 + 300 for f in files)
    seqs = [json.loads(line)["seq"] for f in files for line in f.read_text().splitlines()]
    assert seqs == list(range(100))
