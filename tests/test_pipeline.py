"""End-to-end runs with real parts: real video files, real ZeroMQ sockets, real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest
import zmq

from conftest import REPO, cli, run_cli
from streamrec.backends import EngineWrapper, create_engine
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.events import EventBus, MemorySink
from streamrec.pipeline import Pipeline

# Thresholds low enough that the untrained-or-trained tiny model starts and ends actions on any clip.
EAGER = ["--set", "postprocess.enter_threshold=0.1", "--set", "postprocess.exit_threshold=0.1",
         "--set", "postprocess.background_labels=[]"]


def run_pipeline(video, engine=None, *overrides):
    config = load_config("slowfast_tiny", ["events.predictions=true", *overrides])
    config = config.replace(streams=(StreamConfig(id="file", source=str(video)),))
    sink = MemorySink()
    Pipeline(config, engine or create_engine(config), load_labels(config), EventBus([sink])).run()
    return sink.events()


def test_offline_file_run_serves_every_hop_deterministically(video_file):
    engine = create_engine(load_config("slowfast_tiny"))
    first = run_pipeline(video_file, engine, "pipeline.hop_frames=8")
    second = run_pipeline(video_file, engine, "pipeline.hop_frames=8")
    predictions = [e for e in first if e["type"] == "prediction"]
    # 120 frames, a 32-frame window, hop 8: views end at frames 31, 39, ..., 119.
    assert len(predictions) == (120 - 32) // 8 + 1
    assert [p["clip_end"] for p in predictions] == pytest.approx([(31 + 8 * k) / 30 for k in range(12)], abs=1e-3)
    assert [p["topk"] for p in predictions] == [p["topk"] for p in second if p["type"] == "prediction"]
    ended = [e for e in first if e["type"] == "status" and e["state"] == "ended"]
    assert ended and ended[-1]["hops_served"] == 12 and ended[-1]["hops_skipped"] == 0


def test_subscriber_on_loopback_receives_gap_free_well_formed_events(video_file, loopback_port, tmp_path):
    address = f"tcp://127.0.0.1:{loopback_port}"
    context = zmq.Context.instance()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    subscriber.connect(address)
    log_path = tmp_path / "events.jsonl"
    try:
        result = run_cli("run", "--source", f"door={video_file}", "--publish", address, "--wait-subscriber", "20",
                         "--predictions", "--quiet", "--event-log", str(log_path), *EAGER)
        assert result.returncode == 0, result.stderr
        received = []
        while subscriber.poll(2000):
            topic, payload = subscriber.recv_multipart()
            received.append((topic.decode(), json.loads(payload)))
    finally:
        subscriber.close(0)
    events = [event for _, event in received]
    assert [e["seq"] for e in events] == list(range(len(events))), "sequence must be gap-free from 0"
    assert all(topic == f"{e['stream']}.{e['type']}" for topic, e in received)
    assert {e["type"] for e in events} >= {"status", "prediction", "action_start", "action_end"}
    for event in events:
        assert event["schema"] == 1 and event["stream"] == "door" and event["time"].endswith("Z")
        if event["type"].startswith("action_"):
            assert {"label", "score", "topk", "clip_start", "clip_end", "latency_ms", "onset"} <= set(event)
            assert event["clip_start"] <= event["clip_end"]
    onsets = {}
    for event in events:  # an end names its start's onset, at or before the clip that raised it
        if event["type"] == "action_start":
            assert event["onset"] <= event["clip_start"]
            onsets[event["label"]] = event["onset"]
        elif event["type"] == "action_end":
            assert event["onset"] == onsets.pop(event["label"])
    starts = sorted(e["label"] for e in events if e["type"] == "action_start")
    ends = sorted(e["label"] for e in events if e["type"] == "action_end")
    assert starts == ends, "every action that starts must end"
    # The durable log holds exactly what was published, in order.
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert logged == events


def test_sigterm_closes_open_actions_and_exits_zero(tmp_path, loopback_port):
    log_path = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        cli("run", "--source", "synthetic:size=160x120,fps=30", "--publish", f"tcp://127.0.0.1:{loopback_port}",
            "--quiet", "--event-log", str(log_path), *EAGER),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log_path.exists() and '"action_start"' in log_path.read_text():
                break
            time.sleep(0.2)
        else:
            pytest.fail("no action started within 60 s")
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=15)
    finally:
        process.kill()
    assert returncode == 0, process.stderr.read()
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events)))
    open_actions = set()
    for event in events:
        if event["type"] == "action_start":
            open_actions.add(event["label"])
        elif event["type"] == "action_end":
            open_actions.discard(event["label"])
    assert not open_actions, f"actions left open after SIGTERM: {open_actions}"
    assert events[-1]["type"] == "status" and events[-1]["state"] == "ended"


@pytest.mark.parametrize("args, message", [
    (["--source", "9"], "no camera at index 9"),
    (["--source", "/nonexistent/clip.mp4"], "video file '/nonexistent/clip.mp4' not found"),
    (["--config", "nope"], "config 'nope' not found"),
    (["--set", "pipeline.hop_frame=4"], "did you mean 'hop_frames'"),
    (["--source", "rtsp://cam:pw@127.0.0.1:1/live", "--set", "reconnect.max_retries=1",
      "--set", "reconnect.initial_delay_s=0.1"], "cannot open rtsp://cam:***@127.0.0.1:1/live; check the URL"),
    (["--set", "model.num_classes=5"], "has 7 names but the model has 5 classes"),
])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(args, message):
    result = run_cli("run", "--publish", "none", "--quiet", *args, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_video_is_refused_clearly(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video")
    result = run_cli("run", "--source", str(bogus), "--publish", "none", "--quiet", timeout=60)
    assert result.returncode == 2 and "cannot decode video file" in result.stderr
    assert "Traceback" not in result.stderr


def test_address_in_use_is_a_clear_error(video_file, loopback_port):
    blocker = zmq.Context.instance().socket(zmq.PUB)
    blocker.bind(f"tcp://127.0.0.1:{loopback_port}")
    try:
        result = run_cli("run", "--source", str(video_file), "--publish", f"tcp://127.0.0.1:{loopback_port}", "--quiet")
    finally:
        blocker.close(0)
    assert result.returncode == 2 and "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_streamrec_checkpoint_brings_its_own_config(tmp_path, video_file):
    """`run --checkpoint FILE` without --config takes the config saved in the checkpoint."""
    from streamrec.checkpoints import load_model, save_checkpoint

    config = load_config("slowfast_tiny", ["checkpoint=null", "postprocess.top_k=2"])
    save_checkpoint(tmp_path / "mine.pt", load_model(config), config)
    result = run_cli("run", "--checkpoint", str(tmp_path / "mine.pt"), "--source", str(video_file),
                     "--publish", "none", "--predictions")
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in result.stdout.splitlines() if '"prediction"' in line]
    assert predictions and all(len(p["topk"]) == 2 for p in predictions)  # the saved postprocess.top_k


class TimedEngine(EngineWrapper):
    """The real engine, noting when each call ran."""

    def __init__(self, engine):
        super().__init__(engine)
        self.calls = []

    def infer(self, inputs):
        start = time.monotonic()
        logits = self.engine.infer(inputs)
        self.calls.append((start, time.monotonic()))
        return logits


def test_results_are_published_while_the_next_batch_runs(video_file):
    """Host work overlaps the engine: a batch's events go out while the following batch is in the engine."""
    config = load_config("slowfast_tiny", ["events.predictions=true", "pipeline.hop_frames=8"])
    config = config.replace(streams=tuple(StreamConfig(id=f"file{i}", source=str(video_file)) for i in range(3)))
    engine, sink = TimedEngine(create_engine(config)), MemorySink({"prediction"})
    Pipeline(config, engine, load_labels(config), EventBus([sink])).run()
    predictions = [{**event.fields, "published_at": event.emitted_at} for event in sink.received]
    assert len(predictions) == 3 * 12  # every hop of every file served
    for stream in ("file0", "file1", "file2"):
        ends = [p["clip_end"] for p in predictions if p["stream"] == stream]
        assert ends == sorted(ends) and len(ends) == 12
    calls = engine.calls[1:]  # after the warm-up call
    during_a_call = [p for p in predictions if any(start < p["published_at"] < end for start, end in calls)]
    assert len(during_a_call) > len(predictions) // 2


class SlowEngine(TimedEngine):
    """A timed engine whose every call takes 30 ms more: the engine is the bottleneck."""

    def infer(self, inputs):
        start = time.monotonic()
        logits = self.engine.infer(inputs)
        time.sleep(0.03)
        self.calls.append((start, time.monotonic()))
        return logits


def test_at_saturation_the_engine_goes_straight_on_to_the_next_batch(video_file, monkeypatch):
    """With full batches due, the next batch is cut while the engine runs and waits in its queue:
    no gap between calls, even when cutting a batch is slow (here 15 ms a batch of 2)."""
    from streamrec.scheduler import StreamSchedule

    def slow_take(self, out=None, take=StreamSchedule.take):
        time.sleep(0.0075)
        return take(self, out)

    monkeypatch.setattr(StreamSchedule, "take", slow_take)
    config = load_config("slowfast_tiny", ["pipeline.hop_frames=4", "pipeline.max_batch=2"])
    config = config.replace(streams=tuple(StreamConfig(id=f"file{i}", source=str(video_file)) for i in range(4)))
    engine = SlowEngine(create_engine(config))
    Pipeline(config, engine, load_labels(config), EventBus([MemorySink()])).run()
    calls = engine.calls[1:]  # after the warm-up call
    gaps = sorted(start - end for (_, end), (start, _) in zip(calls, calls[1:]))
    assert len(calls) >= 40  # 4 files x 23 hops in batches of 2
    assert gaps[len(gaps) // 2] < 0.005  # the median; without the queue each gap is >= 15 ms


def most_at_once(calls) -> int:
    """The most engine calls that were running at the same moment."""
    moments = sorted([(start, 1) for start, _ in calls] + [(end, -1) for _, end in calls])
    running = most = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    return most


def test_parallel_calls_run_side_by_side_and_publish_what_one_at_a_time_does(video_file):
    """engine.parallel_calls: 2 keeps two batches in the engine at once, never three; every hop of
    every file is published, in order per stream, with the results one call at a time gives."""
    served = {}
    for parallel in (1, 2):
        config = load_config("slowfast_tiny", ["events.predictions=true", "pipeline.hop_frames=4",
                                               "pipeline.max_batch=2", "engine.backend=onnxruntime",
                                               f"engine.parallel_calls={parallel}"])
        config = config.replace(streams=tuple(StreamConfig(id=f"file{i}", source=str(video_file)) for i in range(3)))
        engine, sink = SlowEngine(create_engine(config)), MemorySink()
        Pipeline(config, engine, load_labels(config), EventBus([sink])).run()
        assert most_at_once(engine.calls[1:]) == parallel
        served[parallel] = [(e["stream"], e["clip_end"], e["topk"][0][0]) for e in sink.events("prediction")]
    per_stream = {n: sorted(served[n], key=lambda p: p[0]) for n in served}  # stable: each stream's own order
    assert len(served[1]) == 3 * 23 and per_stream[2] == per_stream[1]


def test_a_free_engine_slot_takes_a_view_while_another_call_runs(monkeypatch):
    """Two live cameras whose hops fall due a third of a hop apart, an engine call longer than
    that: with two parallel calls the second camera's view starts at once rather than waiting,
    and the pipeline's thread sleeps until then (it does not poll the scheduler)."""
    from streamrec.scheduler import Scheduler

    asked = []

    def counted_due(self, due=Scheduler.due):
        asked.append(time.monotonic())
        return due(self)

    monkeypatch.setattr(Scheduler, "due", counted_due)
    config = load_config("slowfast_tiny", ["events.predictions=true", "pipeline.hop_frames=8",
                                           "engine.backend=onnxruntime", "engine.parallel_calls=2"])
    config = config.replace(streams=tuple(StreamConfig(id=f"cam{i}", source=f"synthetic:size=160x120,seed={i}")
                                          for i in range(2)))
    engine, sink = VerySlowEngine(create_engine(config)), MemorySink()
    pipeline = Pipeline(config, engine, load_labels(config), EventBus([sink]))
    stopper = threading.Timer(3.0, pipeline.stop)
    stopper.start()
    pipeline.run()
    calls = engine.calls[1:]
    assert most_at_once(calls) == 2 and all(batch == 1 for batch in engine.batches[1:])
    assert len(asked) < 500  # about 200 in 3 s (once or twice a frame); polling asks tens of thousands of times
    for camera in ("cam0", "cam1"):
        ends = [e["clip_end"] for e in sink.events("prediction") if e["stream"] == camera]
        assert len(ends) >= 5 and ends == sorted(ends)


class VerySlowEngine(TimedEngine):
    """A timed engine whose every call takes 200 ms more (and notes its batch size)."""

    def __init__(self, engine):
        super().__init__(engine)
        self.batches = []

    def infer(self, inputs):
        start = time.monotonic()
        logits = self.engine.infer(inputs)
        time.sleep(0.2)
        self.calls.append((start, time.monotonic()))
        self.batches.append(len(logits))
        return logits


def test_an_action_ended_in_the_hop_that_raised_it_lasts_zero_seconds_not_minus_zero():
    """A stop in the same hop as the start: the clip end and the start are the same time, which
    float subtraction can leave a hair below zero (printed "-0.0" before)."""
    import types

    from streamrec.postprocess import ActionChange

    sink = MemorySink()
    pipeline = types.SimpleNamespace(bus=EventBus([sink]))
    runtime = types.SimpleNamespace(config=types.SimpleNamespace(id="cam0"))
    started = 0.1 + 0.2  # 0.30000000000000004
    end = ActionChange("action_end", "waving", 0.9, started_at=started, onset=0.2, reason="stopped")
    Pipeline._emit_action(pipeline, runtime, end, {"clip_start": -0.7, "clip_end": 0.3}, [])
    (event,) = sink.events("action_end")
    assert event["duration_s"] == 0.0 and '"duration_s":-0.0' not in json.dumps(event, separators=(",", ":"))
