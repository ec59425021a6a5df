"""A streaming config end to end (issue 21): each hop's new frames on the unit grid, the state
carried per stream in the pipeline, reset at breaks, predictions from the warm-up on, stamped
with the window they describe; the same logits as the streaming network run offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_runs_without_torch, run_cli, write_video
from test_streaming_tensorrt import OnnxRuntimeTensorRT
from test_tensorrt import FakeDevice
from streamrec.backends import EngineWrapper, create_engine
from streamrec.checkpoints import load_model
from streamrec.config import ClipConfig, StreamConfig, load_config, load_labels
from streamrec.errors import StreamrecError
from streamrec.events import EventBus, MemorySink
from streamrec.export import export_streaming
from streamrec.models.streaming import streaming_network
from streamrec.pipeline import Pipeline
from streamrec.postprocess import softmax
from streamrec.ringbuffer import RingBuffer
from streamrec.scheduler import Scheduler, StepSchedule
from streamrec.sources import create_source as real_create_source
from streamrec.transforms import fit_clip_frame

CONFIG = "slowfast_tiny_streaming"
FPS = 30.0
HOP, UNIT, WARMUP, DELAY, CLIP_UNITS = 8, 8, 8, 4, 4  # slowfast_tiny's streaming form (docs/streaming.md)
EAGER = ["postprocess.enter_threshold=0.1", "postprocess.exit_threshold=0.1", "postprocess.background_labels=[]"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def engines(tmp_path_factory):
    """One engine cache for the module: each backend's engine is made once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMREC_ENGINE_DIR", str(tmp_path_factory.mktemp("engines")))
        yield


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """Eight seconds at 30 fps: 30 hops of 8 frames."""
    return write_video(tmp_path_factory.mktemp("video") / "long.mp4", frames=240, seed=3)


class GapAt:
    """A file source whose timestamps jump by ``jump_s`` from frame ``index`` on: the capture
    sees an outage there (frames missing for far longer than pipeline.max_gap_frames)."""

    def __init__(self, source, index: int, jump_s: float):
        self.source, self.index, self.jump_s, self.read_count = source, index, jump_s, 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read(self):
        item = self.source.read()
        if item is None:
            return None
        frame, _ = item
        timestamp = self.read_count / FPS + (self.jump_s if self.read_count >= self.index else 0.0)
        self.read_count += 1
        return frame, timestamp


def run(video, backend: str, monkeypatch=None, gap_at: int | None = None):
    """The streaming pipeline over ``video``: its hop results, events and the model's input frames."""
    device = "cpu"
    if backend == "tensorrt":  # TensorRT's call layer stood in for by ONNX Runtime (test_streaming_tensorrt)
        stand_in = OnnxRuntimeTensorRT(FakeDevice())
        monkeypatch.setattr("streamrec.backends.trt_api.load_tensorrt", lambda: stand_in)
        monkeypatch.setattr("streamrec.backends.cuda_memory.open_device", lambda index: stand_in.device)
        device = "cuda"
    config = load_config(CONFIG, ["events.predictions=true", f"engine.backend={backend}", f"engine.device={device}",
                                  *EAGER])
    config = config.replace(streams=(StreamConfig(id="file", source=str(video)),))
    if gap_at is not None:
        monkeypatch.setattr("streamrec.pipeline.create_source",
                            lambda spec, **kw: GapAt(real_create_source(spec, **kw), gap_at, 5.0))
    frames = {}
    hops, sink = [], MemorySink()
    tap = lambda stream, index, timestamp, frame: frames.__setitem__(index, fit_clip_frame(frame, config.clip))
    Pipeline(config, create_engine(config), load_labels(config), EventBus([sink]), observers=[hops.append],
             frame_taps=[tap]).run()
    return config, hops, sink.events(), np.stack([frames[i] for i in range(len(frames))])


def offline_probabilities(config, frames: np.ndarray, starts: list[int]) -> list[np.ndarray]:
    """The streaming network itself (PyTorch, no pipeline) over the frames, from a zero state at
    each of ``starts``: per hop, the softmax of its logits (None during warm-up)."""
    network = streaming_network(load_model(config), config.clip)
    out = []
    for first, last in zip(starts, [*starts[1:], len(frames)]):
        state = network.zero_state(1)
        for hop, begin in enumerate(range(first, last - HOP + 1, HOP)):
            fast = torch.from_numpy(frames[begin:begin + HOP:config.clip.sampling_rate][None])
            with torch.no_grad():
                logits, state = network(fast[:, ::config.clip.alpha], fast, state)
            out.append(softmax(logits.numpy())[0] if hop + 1 >= WARMUP else None)
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "tensorrt"])
def test_the_pipeline_streams_the_same_logits_as_the_network_offline(backend, long_video, monkeypatch):
    config, hops, events, frames = run(long_video, backend, monkeypatch)
    expected = [p for p in offline_probabilities(config, frames, [0]) if p is not None]
    assert len(frames) == 240 and len(hops) == len(expected) == 30 - WARMUP + 1
    for hop, probabilities in zip(hops, expected):
        assert np.abs(hop.probabilities - probabilities).max() <= 1e-5
    # warm-up: the first prediction comes once 8 units (64 frames) have arrived
    assert hops[0].view.end_index == WARMUP * UNIT - 1
    assert not any(h.view.restarts for h in hops)  # only the stream's first view (hop 0) restarted the state
    # each result is stamped with the window its logits describe: 4 units long, 4 units before the hop's end
    for k, hop in enumerate(hops):
        last_fast = (WARMUP + k) * UNIT - 2  # the hop's last Fast frame
        assert hop.view.clip_end == pytest.approx((last_fast - DELAY * UNIT) / FPS, abs=1e-6)
        assert hop.view.clip_start == pytest.approx((last_fast - DELAY * UNIT - (CLIP_UNITS * UNIT - 2)) / FPS,
                                                    abs=1e-6)
    predictions = [e for e in events if e["type"] == "prediction"]
    assert [(p["clip_start"], p["clip_end"]) for p in predictions] == [
        (round(h.view.clip_start, 3), round(h.view.clip_end, 3)) for h in hops]
    assert any(e["type"] == "action_start" for e in events)
    ended = [e for e in events if e["type"] == "status" and e["state"] == "ended"]
    assert ended[-1]["hops_served"] == 30 and ended[-1]["hops_skipped"] == 0


def test_eval_scores_a_streaming_form_s_detections_when_its_frames_told_them(long_video):
    from streamrec.evaluation import run_pipeline

    config = load_config(CONFIG, ["engine.backend=onnxruntime", "engine.threads=1", "pipeline.realtime=false",
                                  "events.publish=null", "events.stdout=false", *EAGER])
    record = run_pipeline(config, [long_video])[long_video]
    assert record.known_after_s == pytest.approx(DELAY * UNIT / FPS)  # the window ends 32 frames before its hop
    # the last hop's window plus that delay is the newest Fast frame the call saw: when its events were known
    assert record.hops[-1].clip_end + record.known_after_s == pytest.approx(238 / FPS, abs=1e-6)
    assert any(e["type"] == "action_start" for e in record.events)


def test_the_state_starts_again_after_a_gap(long_video, monkeypatch):
    config, hops, events, frames = run(long_video, "onnxruntime", monkeypatch, gap_at=120)
    expected = offline_probabilities(config, frames, [0, 120])
    warm = [p for p in expected if p is not None]
    assert len(hops) == len(warm) == 2 * (15 - WARMUP + 1)
    for hop, probabilities in zip(hops, warm):
        assert np.abs(hop.probabilities - probabilities).max() <= 1e-5
    # carrying the state over the gap would give other logits after it
    carried = offline_probabilities(config, frames, [0])[15 + WARMUP - 1:]
    assert np.abs(hops[15 - WARMUP + 1].probabilities - carried[0]).max() > 1e-3
    after = hops[15 - WARMUP + 1]  # the first result after the gap: a whole warm-up after it
    assert after.view.end_index == 120 + WARMUP * UNIT - 1
    assert after.view.clip_start >= 120 / FPS + 5.0 - 1e-6  # its window lies wholly after the gap
    lost = [e for e in events if e["type"] == "action_end" and e["reason"] == "stream_lost"]
    assert lost and all(e["clip_end"] <= 119 / FPS + 1e-3 for e in lost)
    statuses = [e for e in events if e["type"] == "status"]  # the state's restarts and warm-up, as users see them
    assert (statuses[0]["state_restarts"], statuses[0]["warming_up"]) == (0, True)  # opened: nothing carried yet
    assert (statuses[-1]["state_restarts"], statuses[-1]["warming_up"]) == (1, False)  # the gap: one restart


def test_the_state_s_restarts_and_warm_up_are_metrics_of_a_streaming_stream_only():
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from streamrec.metrics import PipelineCollector
    from streamrec.pipeline import StreamStats

    figures = dict(source="synthetic", state="live", source_fps=30.0, offline=False, frames_captured=9,
                   frames_dropped=0, last_frame_time=0.0, hops_due=1, hops_served=1, hops_skipped=0,
                   latency_ms_p50=None, latency_ms_p99=None, error=None)

    class Running:  # what the collector reads of a pipeline
        bus = type("Bus", (), {"seq": 3})()

        def __init__(self, streaming: bool):
            extra = {"state_restarts": 2, "warming_up": True} if streaming else {}
            self.figures = {"cam0": StreamStats(stream="cam0", **figures, **extra)}

        def stats(self):
            return self.figures

    for streaming in (True, False):
        registry = CollectorRegistry()
        registry.register(PipelineCollector(Running(streaming)))
        text = generate_latest(registry).decode()
        assert 'streamrec_hops_served_total{stream="cam0"} 1.0' in text
        assert ('streamrec_state_restarts_total{stream="cam0"} 2.0' in text) is streaming
        assert ('streamrec_warming_up{stream="cam0"} 1.0' in text) is streaming


def test_views_are_the_hops_new_frames_on_the_unit_grid_at_any_frame_rate():
    """At 20 fps a hop of 8 frames at 30 fps wants Fast frames at (8h + 2k) / 30 s: each takes the
    latest frame at or before it, frame floor((16h + 4k) / 3); Slow the first of each unit."""
    clip = ClipConfig(num_frames=16, sampling_rate=2, alpha=4, short_side=4, crop_size=4)
    ring = RingBuffer(64, 4, 4)
    schedule = StepSchedule("s", ring, clip, fps=20.0, step_hop=8, offline=True, live_clock=False)
    views = []
    for i in range(40):
        ring.write(np.full((4, 4, 3), i, np.uint8), 1000.0 + i / 20, i / 20, new_segment=(i == 0))
        while (view := schedule.take()) is not None:
            views.append(view)
            schedule.awaiting_result = False  # the engine returned this view's state
    assert [v.end_index for v in views] == [5, 10, 15, 21, 26, 31, 37]  # a hop is 16/3 source frames at 20 fps
    for h, view in enumerate(views):
        assert list(view.inputs["fast"][:, 0, 0, 0]) == [(16 * h + 4 * k) // 3 for k in range(4)]
        assert list(view.inputs["slow"][:, 0, 0, 0]) == [(16 * h) // 3]
    assert views[0].restarts and not any(v.restarts for v in views[1:])


@pytest.mark.parametrize("fps", [20.0, 25.0, 30.0, 29.97])
def test_hops_due_count_the_grid_s_hops_at_any_frame_rate(fps):
    """Served offline, every hop due is cut and none is skipped: the count the bench's missed hops
    are reckoned from agrees with the views at every frame rate (it drifted at 20 and 25 fps,
    where a hop is a fractional number of source frames)."""
    clip = ClipConfig(num_frames=16, sampling_rate=2, alpha=4, short_side=4, crop_size=4)
    ring = RingBuffer(64, 4, 4)
    schedule = StepSchedule("s", ring, clip, fps=fps, step_hop=8, offline=True, live_clock=False)
    schedule.stagger(3)
    views = 0
    for i in range(600):
        ring.write(np.full((4, 4, 3), i % 256, np.uint8), 1000.0 + i / fps, i / fps, new_segment=(i == 0))
        while schedule.take() is not None:
            views += 1
            schedule.awaiting_result = False
        assert schedule.hops_due(i + 1) == views
    assert schedule.hops_skipped == 0 and views == int(600 * 30 / fps / 8) - 1  # the stagger leaves the last hop short


def test_a_late_streaming_stream_is_fed_the_hops_it_missed_while_their_frames_last():
    clip = ClipConfig(num_frames=16, sampling_rate=2, alpha=4, short_side=4, crop_size=4)
    ring = RingBuffer(24, 4, 4)
    scheduler = Scheduler(max_batch=4, max_wait_s=0.0)
    schedule = StepSchedule("cam", ring, clip, fps=30.0, step_hop=8, offline=False, live_clock=True)
    scheduler.add(schedule)
    write = lambda frames: [ring.write(np.full((4, 4, 3), i, np.uint8), 1000.0 + i / 30, i / 30,
                                       new_segment=(i == 0)) for i in frames]

    def cut_one():
        batch = scheduler.cut()
        scheduler.release(batch)  # the engine returned its state
        (view,) = batch.views
        return view

    write(range(8))
    first = scheduler.cut()
    assert [v.end_index for v in first.views] == [7] and first.views[0].restarts
    write(range(8, 16))
    assert scheduler.due() == 0  # hop 8..15 has arrived, but the state it needs is still in the engine
    scheduler.release(first)
    assert cut_one().end_index == 15
    write(range(16, 32))  # two hops arrive while nobody asks: both are fed, in order
    caught_up = [cut_one() for _ in range(2)]
    assert [v.end_index for v in caught_up] == [23, 31] and not any(v.restarts or v.hops_skipped for v in caught_up)
    write(range(32, 64))  # four hops arrive, and the first three are overwritten before anyone asks
    view = cut_one()
    assert view.end_index == 63 and view.hops_skipped == 3 and view.restarts
    assert list(view.inputs["fast"][:, 0, 0, 0]) == [56, 58, 60, 62]
    assert schedule.hops_skipped == 3


@pytest.mark.parametrize("overrides", [[], ["streaming.form=causal", "streaming.average_units=2"]],
                         ids=["delayed-exact", "causal averaging 2 units"])
def test_the_torch_engine_steps_as_the_onnxruntime_engine(overrides):
    rng = np.random.default_rng(0)
    engines = [create_engine(load_config(CONFIG, [f"engine.backend={b}", "engine.device=cpu", *overrides]))
               for b in ("onnxruntime", "torch")]
    assert engines[0].streaming == engines[1].streaming and engines[0].state == engines[1].state
    states = [e.state.zeros(3) for e in engines]
    for _ in range(WARMUP + 1):
        frames = {"slow": rng.integers(0, 256, (3, 1, 96, 96, 3), np.uint8),
                  "fast": rng.integers(0, 256, (3, 4, 96, 96, 3), np.uint8)}
        (onnx_logits, states[0]), (torch_logits, states[1]) = [e.step({**frames, "state": s})
                                                               for e, s in zip(engines, states)]
        assert np.abs(onnx_logits - torch_logits).max() <= 1e-4
    assert np.abs(states[0] - states[1]).max() <= 1e-3
    with pytest.raises(StreamrecError, match="step"):
        engines[1].infer(frames)


def test_the_cache_key_holds_the_form_the_hop_the_average_and_the_streaming_format(monkeypatch):
    import streamrec.export
    from streamrec.backends.engine_cache import export_path

    paths = {export_path(load_config(CONFIG, overrides), "fp32") for overrides in
             ([], ["streaming.form=causal"], ["pipeline.hop_frames=16"],
              ["streaming.form=causal", "streaming.average_units=2"])}
    assert len(paths) == 4
    assert export_path(load_config(CONFIG, ["pipeline.hop_seconds=0.26667"]), "fp32") == \
        export_path(load_config(CONFIG), "fp32")
    clip = export_path(load_config("slowfast_tiny"), "fp32")
    monkeypatch.setattr(streamrec.export, "STREAMING_EXPORT_FORMAT", streamrec.export.STREAMING_EXPORT_FORMAT + 1)
    assert export_path(load_config(CONFIG), "fp32") not in paths  # a new streaming graph is exported anew
    assert export_path(load_config("slowfast_tiny"), "fp32") == clip  # the clip model's stays


@pytest.mark.parametrize("args, message", [
    (["--config", CONFIG, "--hop", "4"], "--hop: pipeline.hop_frames 4 is not a whole number of units"),
    (["--config", CONFIG, "--set", "streaming.form=casual"], "did you mean 'causal'"),
    (["--config", "x3d_xs", "--set", "streaming.form=causal"], "model x3d has no streaming form"),
])
def test_bad_streaming_input_is_one_clear_line(args, message, video_file):
    result = run_cli("run", "--source", str(video_file), "--publish", "none", "--quiet", *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_streams_a_video_from_the_command_line(video_file, tmp_path):
    log = tmp_path / "events.jsonl"
    result = run_cli("run", "--config", CONFIG, "--source", f"door={video_file}", "--publish", "none", "--quiet",
                     "--predictions", "--event-log", str(log), "--backend", "onnxruntime",
                     timeout=120)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    predictions = [e for e in events if e["type"] == "prediction"]
    assert len(predictions) == 120 // HOP - WARMUP + 1
    assert predictions[0]["clip_start"] == 0.0 and predictions[0]["clip_end"] == pytest.approx(30 / FPS, abs=1e-3)


def test_the_onnxruntime_streaming_run_path_never_imports_torch(video_file, tmp_path):
    graph = export_streaming(load_config(CONFIG), tmp_path / "stream.onnx", hop_frames=HOP)
    script = f"""
from streamrec.backends import EngineWrapper, create_engine
from streamrec.config import StreamConfig, load_config, load_labels
from streamrec.events import EventBus, MemorySink
from streamrec.export import export_streaming
from streamrec.pipeline import Pipeline
config = load_config("{CONFIG}", ["engine.backend=auto", "engine.engine_file={graph}", "engine.device=cpu",
                                  "events.predictions=true"])
config = config.replace(streams=(StreamConfig(id="file", source="{video_file}"),))
sink = MemorySink()
Pipeline(config, create_engine(config), load_labels(config), EventBus([sink])).run()
assert len([e for e in sink.events() if e["type"] == "prediction"]) == {120 // HOP - WARMUP + 1}
"""
    assert_runs_without_torch(script)


def test_bench_pipeline_runs_a_streaming_config(tmp_path):
    """The streaming engine's calls are metered and its engine-only reference is stepped."""
    out = tmp_path / "bench.json"
    result = run_cli("bench", "pipeline", "--config", CONFIG, "--backend", "onnxruntime", "--streams", "2",
                     "--duration", "4", "--engine-iters", "2", "--engine-seconds", "0", "--json", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    (trial,) = json.loads(out.read_text())["results"]
    assert trial["hops_served"] > 0 and trial["clips_per_s"] > 0  # clips: streaming calls' rows, metered
    reference = next(r for r in trial["engine_only"] if r["batch"] == 4)
    assert reference["clips_per_s"] > 0 and len(reference["durations_ms"]) == 4


@pytest.mark.parametrize("overrides, message", [
    (["pipeline.hop_seconds=0.3"], "pipeline.hop_seconds 0.3 (9 frames at clip.train_fps 30) is not a whole number"),
    (["streams=[{id: a, source: x.mp4, hop_frames: 16}]"], "one hop for every stream (8 frames), but streams ask for 16"),
    (["detection={}"], "per-person mode (detection:)"),
    (["model.nonlocal_blocks=[[], [1], [], []]"], "no streaming form"),
    (["streaming.average_units=2"], "streaming.average_units shortens the causal form's running average"),
    (["streaming.form=causal", "streaming.average_units=0"], "streaming.average_units must be from 1 to 1000"),
])
def test_streaming_config_mistakes_are_one_line(overrides, message):
    with pytest.raises(StreamrecError) as err:
        load_config(CONFIG, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_hop_in_seconds_that_rounds_to_whole_units_is_taken():
    assert load_config(CONFIG, ["pipeline.hop_seconds=0.5334"]).pipeline.hop_seconds == 0.5334  # 16 frames


class FailsOnce(EngineWrapper):
    """Raises on one step call (0: the pipeline's warm-up call)."""

    def __init__(self, engine, call: int):
        super().__init__(engine)
        self.calls, self.failing = 0, call

    def step(self, inputs):
        self.calls += 1
        if self.calls - 1 == self.failing:
            raise RuntimeError("engine fault")
        return self.engine.step(inputs)


class OverflowsOnce(FailsOnce):
    """Returns a state that is not finite (an fp16 overflow) from one step call."""

    def step(self, inputs):
        self.calls += 1
        logits, new_state = self.engine.step(inputs)
        if self.calls - 1 == self.failing:
            new_state = new_state.copy()
            new_state[:, 1] = np.inf
        return logits, new_state


@pytest.mark.parametrize("fault", [FailsOnce, OverflowsOnce])
def test_a_failed_call_starts_its_streams_again(long_video, fault):
    """The call of hop 10 fails, or returns a state that is not finite: its state is lost, so
    hop 11 starts from zeros and the stream is warm again at hop 18; nothing is published for
    hops 10 to 17."""
    config = load_config(CONFIG, ["engine.backend=onnxruntime", "engine.device=cpu"])
    config = config.replace(streams=(StreamConfig(id="file", source=str(long_video)),))
    frames, hops = {}, []
    tap = lambda stream, index, timestamp, frame: frames.__setitem__(index, fit_clip_frame(frame, config.clip))
    Pipeline(config, fault(create_engine(config), 1 + 10), load_labels(config), EventBus([MemorySink()]),
             observers=[hops.append], frame_taps=[tap]).run()
    frames = np.stack([frames[i] for i in range(len(frames))])
    before, after = offline_probabilities(config, frames, [0, 11 * HOP])[:10], \
        offline_probabilities(config, frames[11 * HOP:], [0])
    expected = [p for p in before + after if p is not None]
    assert [h.view.end_index // HOP for h in hops] == [7, 8, 9, *range(18, 30)]
    for hop, probabilities in zip(hops, expected, strict=True):
        assert np.abs(hop.probabilities - probabilities).max() <= 1e-5


def test_bench_engine_points_a_streaming_config_elsewhere_in_one_line():
    result = run_cli("bench", "engine", "--config", CONFIG, "--backend", "onnxruntime", "--batch", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bench engine times whole-clip engines") and "is `bench streaming`" in last


def test_a_graph_averaging_fewer_units_than_the_config_asks_is_refused_in_one_line(tmp_path):
    """An engine file of the causal form that averages 2 units, run by a causal config that averages
    a clip (and the other way round): another function than the config describes."""
    causal = ["streaming.form=causal", "engine.backend=onnxruntime", "engine.device=cpu"]
    short = export_streaming(load_config(CONFIG, causal), tmp_path / "short.onnx", form="causal", hop_frames=HOP,
                             average_units=2)
    with pytest.raises(StreamrecError, match="streams causal at a hop of 8 frames, averaging 2 units, the config "
                                             "asks for causal at a hop of 8 frames; export it") as err:
        create_engine(load_config(CONFIG, [*causal, f"engine.engine_file={short}"]))
    assert "\n" not in str(err.value)
    engine = create_engine(load_config(CONFIG, [*causal, "streaming.average_units=2", f"engine.engine_file={short}"]))
    assert engine.streaming.average_units == 2


def test_the_streaming_bench_stamps_its_hops_as_the_pipeline_does(long_video, tmp_path):
    """`bench streaming` scores a form on frames it steps itself: each hop must describe the same
    window with the same scores as the pipeline's, so its event F1 and delays are `eval`'s (its
    hops were stamped one source frame late, at the hop's last frame rather than its last Fast one)."""
    from streamrec.bench.streaming import StreamingVariant
    from streamrec.export import folded_model
    from streamrec.models.streaming import DELAYED_EXACT

    config, hops, _, frames = run(long_video, "onnxruntime")
    variant = StreamingVariant(folded_model(config), config, DELAYED_EXACT, HOP, 1, tmp_path)
    stepped, _ = variant.run(frames)
    assert len(stepped) == len(hops) == 30 - WARMUP + 1
    for ours, pipeline in zip(stepped, hops):
        assert (ours.clip_start, ours.clip_end) == pytest.approx((pipeline.view.clip_start, pipeline.view.clip_end),
                                                                 abs=1e-6)
        assert np.abs(ours.probabilities - pipeline.probabilities).max() <= 1e-5
