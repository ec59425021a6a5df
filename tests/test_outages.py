"""Outages tell the truth: a frozen camera is reopened, no clip spans an outage, open actions end
at the last frame before it, a stop is clean from the first instant, and a capture thread that
dies fails the run. With real parts: GStreamer's RTSP server behind a fault proxy, real files,
real signals."""

from __future__ import annotations

import signal
import subprocess
import time
from fractions import Fraction

import pytest

from conftest import REPO, cli
from streamrec.backends import create_engine
from streamrec.bench import reliability
from streamrec.bench.faults import rtsp_server_available
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, MemorySink
from streamrec.pipeline import Pipeline
from test_rtsp import read_events

FAULT_REPORT: list[str] = []  # printed at the end of the test session (conftest's terminal summary)
EAGER = ["postprocess.enter_threshold=0.1", "postprocess.exit_threshold=0.1", "postprocess.background_labels=[]"]


@pytest.mark.parametrize("config", ["slowfast_tiny", "slowfast_tiny_causal"])
def test_every_fault_is_survived_and_no_event_is_lost(tmp_path, config):
    """The proxy freezes, drops, throttles and delays the camera's TCP stream; the camera is frozen
    (SIGSTOP) and restarted. The one pipeline serving it comes back after each, loses no event,
    never cuts a clip across an outage (a streaming model's window never spans one: its state
    starts again), and reports a frozen camera stalled once, then reopens it."""
    if not rtsp_server_available():
        pytest.skip("GStreamer RTSP server not installed")  # CI installs it (STREAMREC_REQUIRE_RTSP)
    FAULT_REPORT.append(f"config {config}:")
    run = reliability.run_faults(workdir=tmp_path, progress=FAULT_REPORT.append, config=config)
    for result in run.results:
        FAULT_REPORT.append(f"{result.name}: {'survived' if result.survived else 'NOT survived'}, back after "
                            f"{result.back_after_s} s, states {result.states}")
    FAULT_REPORT.append(f"faults injected {len(run.results)}, survived {sum(r.survived for r in run.results)}, "
                        f"events {run.events}, lost {run.events_lost} ({run.sequence_gaps} gaps in the log, "
                        f"{run.not_received} not received {run.not_received_types}, {run.actions_never_ended} actions never ended), clips "
                        f"spanning an outage {run.clips_spanning_an_outage}, action ends by reason {run.end_reasons}")
    assert [r.name for r in run.results if not r.survived] == []
    assert run.events_lost == 0 and run.sequence_gaps == 0 and run.not_received == 0
    assert run.clips_spanning_an_outage == 0
    assert run.returncode == 0 and not run.traceback
    by_name = {r.name: r for r in run.results}
    for frozen in ("freeze", "camera frozen"):  # longer than the stall timeout: stalled once, then reopened
        states = by_name[frozen].states
        assert states.count("stalled") == 1, states
        stalled = states.index("stalled")
        assert "reconnecting" in states[stalled:], states
        assert "live" not in states[stalled:states.index("reconnecting", stalled)], "a stray frame made it live"
    assert "reconnecting" in by_name["drop"].states and "reconnecting" in by_name["camera restart"].states
    assert "stalled" not in by_name["delay"].states  # 0.3 s late is not an outage
    assert run.end_reasons.get("stream_lost", 0) >= 1  # actions open at an outage ended there
    reopened = sum("reconnecting" in r.states for r in run.results)
    assert reopened >= 4  # freeze, drop, camera frozen, camera restart
    # a streaming model starts its state again at least once for every reopen; a clip model carries none
    assert (run.state_restarts >= reopened) if config == "slowfast_tiny_causal" else run.state_restarts is None


def jumping_video(path, frames_before: int, jump_s: float, frames_after: int, fps: int = 30):
    """A real MP4 whose timestamps jump ``jump_s`` seconds after ``frames_before`` frames (as a
    recorder that lost its input for a while writes it), made with PyAV (FFmpeg)."""
    av = pytest.importorskip("av")
    from streamrec.sources import SyntheticSource

    source = SyntheticSource(width=160, height=120, fps=fps, seed=3)
    source.open()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for index in range(frames_before + frames_after):
            frame = av.VideoFrame.from_ndarray(source.render(index), format="rgb24")
            seconds = index / fps + (jump_s if index >= frames_before else 0.0)
            frame.pts, frame.time_base = round(seconds * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_a_file_whose_timestamps_jump_is_cut_on_either_side_of_the_jump(tmp_path):
    video = jumping_video(tmp_path / "jump.mp4", frames_before=90, jump_s=5.0, frames_after=90)
    config = load_config("slowfast_tiny", ["events.predictions=true", "pipeline.hop_frames=8", *EAGER])
    config = config.replace(streams=(StreamConfig(id="file", source=str(video)),))
    sink = MemorySink()
    Pipeline(config, create_engine(config), load_labels(config), EventBus([sink])).run()
    predictions = sink.events("prediction")
    # No clip spans the jump (frame 89 at 2.967 s, then frame 90 at 8.0 s): each lies on one side.
    before = [p for p in predictions if p["clip_end"] < 3.0]
    after = [p for p in predictions if p["clip_start"] >= 8.0 - 1e-3]
    assert len(before) + len(after) == len(predictions) and before and after
    # After the jump a whole window refills first: the first clip after it starts at its first
    # frame and spans as much as every clip before it.
    assert after[0]["clip_start"] == pytest.approx(8.0, abs=1e-3)
    assert after[0]["clip_end"] - after[0]["clip_start"] == pytest.approx(before[0]["clip_end"] - before[0]["clip_start"],
                                                                          abs=1e-3)
    # What was open before the jump ended at the last frame before it, and says why.
    lost = [e for e in sink.events("action_end") if e["reason"] == "stream_lost"]
    assert lost and all(e["clip_end"] == pytest.approx(89 / 30, abs=0.01) for e in lost)
    last_before = max(p["clip_end"] for p in before)
    for end in lost:  # nothing was carried over: each ended before any clip after the jump was scored
        assert end["seq"] < min(p["seq"] for p in after) and end["clip_end"] >= last_before
    starts = sink.events("action_start")
    assert all(s["clip_end"] < 3.0 or s["clip_end"] > 5.0 for s in starts)


@pytest.mark.parametrize("after_s", [0.2, 0.5, 1.0, 3.0])
def test_ctrl_c_at_any_moment_stops_cleanly(tmp_path, after_s):
    """SIGINT during the imports, the model loading or the run: exit 0, no traceback, and what
    the event log holds (if it was opened yet) is whole, every action ended."""
    log_path = tmp_path / "events.jsonl"
    process = subprocess.Popen(cli("run", "--source", "synthetic:size=160x120", "--publish", "none", "--quiet",
                                   "--event-log", str(log_path)), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=60)
    finally:
        process.kill()
    stderr = process.stderr.read()
    assert returncode == 0 and "Traceback" not in stderr, stderr
    events = read_events(log_path)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len([e for e in events if e["type"] == "action_start"]) == len([e for e in events
                                                                           if e["type"] == "action_end"])
    if events:
        assert events[-1]["type"] == "status" and events[-1]["state"] == "ended"


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("argv", [
    ("train", "--epochs", "50", "--clips-per-epoch", "100000"),  # hours of training
    ("bench", "pipeline", "--streams", "1", "--duration", "600", "--engine-seconds", "0.2", "--engine-iters", "2"),
], ids=["train", "bench-pipeline"])
def test_one_signal_ends_a_command_with_no_clean_stop(tmp_path, argv, signal_number):
    """A command that never asks whether a stop was requested (training, a benchmark) is ended by
    the first Ctrl-C or SIGTERM, in one line and status 130: one signal used to do nothing."""
    argv = [*argv, "--out" if argv[0] == "train" else "--json", str(tmp_path / "out")]
    process = subprocess.Popen(cli(*argv), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8.0)  # into the work: the model is loaded and the loop or trial running
    assert process.poll() is None, process.communicate()
    process.send_signal(signal_number)
    try:
        returncode = process.wait(timeout=30)
    finally:
        process.kill()
    stderr = process.stderr.read()
    assert returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "streamrec: interrupted" and "Traceback" not in stderr, stderr


def test_sigterm_while_waiting_for_a_subscriber_stops_cleanly(tmp_path, loopback_port):
    """The run is up and waits for its first subscriber; SIGTERM ends the wait and the run, cleanly:
    exit 0, and the log says each stream ended."""
    log_path = tmp_path / "events.jsonl"
    process = subprocess.Popen(cli("run", "--source", "cam=synthetic:size=160x120", "--publish",
                                   f"tcp://127.0.0.1:{loopback_port}", "--wait-subscriber", "60", "--quiet",
                                   "--event-log", str(log_path)), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:  # the log line before the wait
            lines.append(line)
            if "publishing events on" in line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        process.kill()
    stderr = "".join(lines) + process.stderr.read()
    assert returncode == 0 and "Traceback" not in stderr, stderr
    events = read_events(log_path)
    assert [(e["type"], e["stream"], e["state"]) for e in events] == [("status", "cam", "ended")]


class FailingTap:
    """A frame tap that raises inside one stream's capture thread: an internal error there."""

    def __init__(self, stream: str, after: int):
        self.stream, self.after, self.seen = stream, after, 0

    def __call__(self, stream_id, index, media_time, frame):
        if stream_id == self.stream:
            self.seen += 1
            if self.seen > self.after:
                raise ZeroDivisionError("division by zero")


def test_a_capture_thread_that_fails_fails_the_run_and_the_others_are_served(video_file):
    config = load_config("slowfast_tiny", ["events.predictions=true", "pipeline.hop_frames=8"])
    config = config.replace(streams=(StreamConfig(id="good", source=str(video_file)),
                                     StreamConfig(id="bad", source=str(video_file))))
    sink = MemorySink()
    pipeline = Pipeline(config, create_engine(config), load_labels(config), EventBus([sink]),
                        frame_taps=[FailingTap("bad", after=40)])
    with pytest.raises(StreamrecError, match=r"1 of 2 stream\(s\) stopped on an internal error \(stream bad: "
                                             r"ZeroDivisionError: division by zero\)"):
        pipeline.run()
    assert len([p for p in sink.events("prediction") if p["stream"] == "good"]) == 12  # every hop of the good one
    bad_end = [e for e in sink.events("status") if e["stream"] == "bad"][-1]
    assert bad_end["state"] == "ended" and bad_end["detail"].startswith("error: ZeroDivisionError")
    assert pipeline.stats()["bad"].error == "ZeroDivisionError: division by zero"


def test_the_reliability_bench_reports_bad_inputs_alone_when_faults_are_skipped():
    """`bench reliability --skip-faults`: the document and the summary hold the bad inputs, and
    no faults (it ended in a traceback reading the faults it had not run)."""
    bad = [reliability.BadInputResult("a missing file", ["run", "--source", "nope.mp4"], 2,
                                      "error: video file 'nope.mp4' not found", True)]
    document = reliability.as_document(None, bad)
    assert document["faults"] is None and document["run"] is None and document["bad_inputs"][0]["ok"] is True
    text = reliability.summary_text(document)
    assert "Bad inputs tried: 1" in text and "Faults injected" not in text
