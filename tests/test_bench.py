"""Smoke tests of the benchmarks: each runs briefly on the tiny model and writes every field.

Benchmarks are scripts, not timed tests: nothing here checks a speed, only that each
benchmark runs end to end through the CLI, that its JSON holds every figure the issue asks
for, that the plot is a PNG and that the Markdown section is written (and replaced, not
duplicated, on the next run). The search, hop accounting and FLOP counting are checked
in-process on small inputs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from streamrec.bench.pipeline import engine_speed_drift, latency_breakdown, search_max_streams
from streamrec.bench.report import update_markdown
from conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MACHINE_FIELDS = {"cpu_model", "cpu_cores_physical", "cpu_cores_logical", "cpu_features", "memory_gib", "gpus", "os",
                  "python", "libraries", "load_average"}
DOCUMENT_FIELDS = {"benchmark", "config", "command", "started_at", "finished_at", "machine", "load_average_after",
                   "cpu_use", "results"}
ENGINE_FIELDS = {"backend", "precision", "batch", "parallel_calls", "device", "iterations", "warmup", "rounds",
                 "threads", "clips_per_s", "ms_per_clip", "latency_ms_p50", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
                 "latency_ms_mean", "latency_ms_max", "frames_per_s", "streams_at_fps", "hop_frames", "stream_fps",
                 "host_rss_peak_mib", "engine_load_rss_mib", "device_memory_peak_mib", "device_memory_source",
                 "gflops_per_clip", "achieved_gflops_per_s", "peak_gflops_per_s", "peak_fraction",
                 "speedup_vs_eager_batch1", "speedup_vs_eager_same_batch"}
TRIAL_FIELDS = {"streams", "duration_s", "window_s", "hops_due", "hops_served", "hops_skipped", "hops_missed",
                "frames_captured", "frames_dropped", "clips_per_s", "engine_busy_fraction", "batch_histogram",
                "modal_batch", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "process_cpu_percent_mean",
                "system_cpu_percent_mean", "host_rss_peak_mib", "resources", "latency_timeline", "per_stream",
                "realtime", "not_realtime_because", "before_engine_ms_p50", "before_engine_ms_p99",
                "in_engine_ms_p50", "in_engine_ms_p99", "after_engine_ms_p50", "after_engine_ms_p99",
                "engine_only_batch", "engine_only_clips_per_s",
                "engine_only_latency_ms_p99", "e2e_over_engine_clips", "p99_minus_engine_p99_ms"}
STREAM_FIELDS = {"stream", "source", "source_fps", "capture_fps", "frames_captured", "frames_dropped",
                 "last_frame_age_s", "hops_due",
                 "hops_served", "hops_skipped", "hops_missed", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                 "error"}
SIDE_FIELDS = {"side", "device", "backend", "precision", "batch", "clips", "frames", "wall_s", "clips_per_s",
               "frames_per_s", "video_fps", "realtime_factor", "hop_frames", "predictions_per_video_s",
               "latency_ms_p50", "latency_ms_p99", "infer_s"}


def run_bench(tmp_path: Path, *args: str, timeout: float = 300) -> dict:
    """Run a benchmark through the CLI with every output; returns its JSON after checking the files."""
    outputs = {"json": tmp_path / "bench.json", "plot": tmp_path / "bench.png", "markdown": tmp_path / "BENCHMARKS.md"}
    flags = [item for name, path in outputs.items() for item in (f"--{name}", str(path))]
    result = run_cli("bench", *args, *flags, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs["plot"].read_bytes().startswith(PNG_MAGIC)
    document = json.loads(outputs["json"].read_text())
    assert DOCUMENT_FIELDS <= set(document), DOCUMENT_FIELDS - set(document)
    assert MACHINE_FIELDS <= set(document["machine"]), MACHINE_FIELDS - set(document["machine"])
    assert document["command"].startswith("python run_stream.py bench ")
    markdown = outputs["markdown"].read_text()
    assert markdown.startswith("# Benchmarks") and document["command"] in markdown
    return document


def test_engine_benchmark_reports_every_figure_per_backend_and_batch(tmp_path):
    backends = ("eager", "torch", "onnxruntime", "onnxruntime-plain")
    document = run_bench(tmp_path, "engine", "--config", "slowfast_tiny", "--backend", ",".join(backends),
                         "--precision", "fp32,bf16", "--batch", "1,2", "--parallel-calls", "1,2", "--iters", "2",
                         "--warmup", "1", "--rounds", "2")
    results = document["results"]
    assert {(r["backend"], r["batch"], r["parallel_calls"]) for r in results} == \
        {(b, n, c) for b in backends for n in (1, 2) for c in (1, 2) if b != "eager" or c == 1}
    for result in results:
        assert ENGINE_FIELDS <= set(result), ENGINE_FIELDS - set(result)
        assert result["clips_per_s"] > 0 and result["latency_ms_p50"] <= result["latency_ms_p99"]
        assert result["iterations"] == 2  # one timed call in each of two rounds
        assert result["gflops_per_clip"] > 0 and 0 < result["peak_fraction"]
        if result["parallel_calls"] == 2:  # each call on half the cores
            assert result["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    # bf16 is not served on the CPU, nor the eager baseline two calls at once: skipped with the reason, not a crash
    skipped = {(s["backend"], s["precision"], s["parallel_calls"]) for s in document["skipped"]}
    assert skipped == {(b, "bf16", c) for b in backends for c in (1, 2) if b != "eager" or c == 1} | \
        {("eager", p, 2) for p in ("fp32", "bf16")}
    assert document["flops"]["method"].startswith("FLOPs = 2 x multiply-accumulates")
    assert document["peaks"]["cpu"]["source"].startswith("measured: float32")


def test_pipeline_benchmark_reports_streams_hops_latency_and_resources(tmp_path):
    document = run_bench(tmp_path, "pipeline", "--config", "slowfast_tiny", "--backend", "onnxruntime",
                         "--streams", "2", "--duration", "3", "--engine-iters", "2", "--engine-seconds", "0")
    (trial,) = document["results"]
    assert TRIAL_FIELDS <= set(trial), TRIAL_FIELDS - set(trial)
    assert trial["streams"] == 2 and len(trial["per_stream"]) == 2
    for stream in trial["per_stream"]:
        assert STREAM_FIELDS <= set(stream), STREAM_FIELDS - set(stream)
        assert stream["frames_captured"] > 0
    assert trial["hops_served"] > 0 and trial["resources"]
    reference = next(r for r in trial["engine_only"] if r["batch"] == document["setup"]["max_batch"])
    # timed before and after the trial, pooled: 2 calls each side
    assert reference["clips_per_s_before"] > 0 and reference["clips_per_s_after"] > 0
    assert len(reference["durations_ms"]) == reference["iterations"] == 4


@pytest.mark.parametrize("config", ["slowfast_tiny", "slowfast_tiny_causal"])
def test_pipeline_without_an_engine_serves_every_hop_and_says_so(tmp_path, config):
    document = run_bench(tmp_path, "pipeline", "--config", config, "--backend", "onnxruntime", "--no-engine",
                         "--streams", "2", "--duration", "3", "--engine-iters", "2", "--engine-seconds", "0")
    (trial,) = document["results"]
    assert document["setup"]["engine"] == "none"
    assert trial["hops_served"] > 0 and trial["hops_missed"] == 0
    # hop 8 at 30 fps (a streaming config's on its unit grid): the cameras' starts spread over it
    assert document["setup"]["camera_spread_s"] == pytest.approx(8 / 30, abs=1e-4)
    assert [s["source"].partition(",start=")[2] for s in trial["per_stream"]] == ["", "0.1648"]
    streaming = config == "slowfast_tiny_causal"  # its state never started again: no gap, no hop lost
    assert [s["state_restarts"] for s in trial["per_stream"]] == ([0, 0] if streaming else [None, None])
    # the calls cost next to nothing: far under the tiny model's few milliseconds a call
    assert trial["in_engine_ms_p99"] < 1.0, trial["in_engine_ms_p99"]


def test_bench_cameras_start_spread_over_one_hop_so_their_hops_fall_due_apart():
    from streamrec.bench.pipeline import PipelinePlan
    from streamrec.sources import parse_source

    plan = PipelinePlan(sources=("synthetic", "clip.mp4"), camera_spread_s=0.5)
    sources = plan.stream_sources(40)
    assert sources[1] == "clip.mp4" and sources[0] == "synthetic:size=320x240,fps=30,seed=0"  # files keep their own
    starts = sorted(float(s.partition(",start=")[2] or 0) for s in sources[::2])
    assert 0 <= starts[0] and starts[-1] < 0.5
    assert max(np.diff([*starts, 0.5])) < 0.5 / 20 * 2.5  # 20 cameras, none more than 2.5 even shares apart
    for source in sources[::2]:
        parse_source(source)  # each a valid source
    assert PipelinePlan(sources=("synthetic",)).stream_sources(3)[2] == "synthetic:size=320x240,fps=30,seed=2"


def test_pipeline_without_an_engine_refuses_a_load_in_one_line():
    done = run_cli("bench", "pipeline", "--config", "slowfast_tiny", "--no-engine", "--load", "0.5")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --load sizes the streams from the engine's speed, and "
                                                "--no-engine runs none: give --streams N or --max-streams instead"]


def test_repeated_pipeline_trials_report_median_ratios(tmp_path):
    document = run_bench(tmp_path, "pipeline", "--config", "slowfast_tiny", "--backend", "onnxruntime",
                         "--streams", "1", "--duration", "2", "--engine-iters", "2", "--engine-seconds", "0",
                         "--repeat", "2", "--parallel-calls", "2")
    trials = document["results"]
    assert len(trials) == 2 and all(t["engine_only"] for t in trials)  # each against its own reference
    assert document["setup"]["parallel_calls"] == 2
    assert all(r["parallel_calls"] == 2 for t in trials for r in t["engine_only"])  # timed as the pipeline calls it
    ratios = sorted(t["e2e_over_engine_clips"] for t in trials)
    assert document["median"]["trials"] == 2
    assert document["median"]["e2e_over_engine_clips"] == pytest.approx(sum(ratios) / 2, abs=1e-3)


def test_pipeline_benchmark_searches_for_the_most_realtime_streams(tmp_path):
    document = run_bench(tmp_path, "pipeline", "--config", "slowfast_tiny", "--backend", "onnxruntime",
                         "--max-streams", "--max-streams-limit", "2", "--duration", "2", "--engine-iters", "2",
                         "--engine-seconds", "0")
    assert document["max_realtime_streams"] in (0, 1, 2)
    assert [t["streams"] for t in document["results"]][0] == 1


def test_compare_runs_both_sides_on_one_file(tmp_path, video_file):
    document = run_bench(tmp_path, "compare", "--config", "slowfast_tiny", "--backend", "onnxruntime",
                         "--input", str(video_file), "--frames", "64")
    project, baseline = document["results"]
    for side in (project, baseline):
        assert SIDE_FIELDS <= set(side), SIDE_FIELDS - set(side)
        assert side["frames"] == 64 and side["clips"] > 0
    assert baseline["hop_frames"] == 32 and baseline["clips"] == 2  # 64 frames: two 32-frame demo windows
    assert project["clips"] == (64 - 32) // 8 + 1  # every hop of 8 frames once the first window is full
    assert set(document["ratios"]) >= {"clips_per_s", "frames_per_s", "predictions_per_video_s"}
    assert document["same_model"]["same_top1"]  # both sides run the config's one set of weights


@pytest.mark.parametrize("flags, message", [
    (["--backend", "tensorflow"], "--backend 'tensorflow': unknown tensorflow"),
    (["--batch", "0,2"], "--batch '0,2' must be a comma-separated list of positive integers"),
    (["--batch", "four"], "--batch 'four' must be a comma-separated list of positive integers"),
    (["--precision", "fp8"], "--precision 'fp8': unknown fp8"),
])
def test_user_mistakes_are_one_line_errors(flags, message):
    result = run_cli("bench", "engine", "--config", "slowfast_tiny", *flags, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in result.stderr


def test_markdown_sections_are_replaced_by_key_and_others_kept(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    update_markdown(path, "engine:tiny:cpu", "## first\nold figures")
    update_markdown(path, "pipeline:tiny:cpu", "## other\nkept")
    update_markdown(path, "engine:tiny:cpu", "## first\nnew figures")
    text = path.read_text()
    assert "new figures" in text and "old figures" not in text and "kept" in text
    assert text.count("<!-- bench:engine:tiny:cpu -->") == 1


def test_latency_is_split_at_the_engine_call_that_computed_each_hop():
    calls = [(10.0, 0.020, 2), (10.030, 0.010, 1)]  # (start, seconds, batch)
    events = [(10.021, 35.0), (10.0215, 30.0), (10.041, 25.0)]  # (published, capture→event ms)
    parts = latency_breakdown(calls, events)
    assert parts["in_engine_ms_p50"] == pytest.approx(20.0)
    assert parts["before_engine_ms_p99"] == pytest.approx(14.0, abs=0.1)  # 35 ms before 10.021: captured at 9.986
    assert parts["after_engine_ms_p99"] == pytest.approx(1.5, abs=0.05)


def test_stream_search_doubles_then_bisects():
    tried = []

    def trial(streams: int) -> dict:
        tried.append(streams)
        ok = streams <= 11
        return {"streams": streams, "realtime": ok, "not_realtime_because": [] if ok else ["slow"]}

    best, trials = search_max_streams(trial, start=1, limit=100)
    assert best == 11 and tried == [1, 2, 4, 8, 16, 12, 10, 11]
    assert len(trials) == len(tried)
    assert search_max_streams(trial, start=1, limit=6)[0] == 6  # every count up to the limit passes


def test_onnx_flop_count_matches_the_torch_count(tmp_path):
    from streamrec.bench.flops import count_onnx_flops, count_torch_flops
    from streamrec.config import load_config
    from streamrec.export import export_config

    config = load_config("slowfast_tiny")
    onnx_file = export_config(config, tmp_path / "tiny.onnx")
    assert count_onnx_flops(onnx_file) == pytest.approx(count_torch_flops(config), rel=1e-6)


def test_the_plain_graph_has_no_int8_twin_to_time():
    from streamrec.bench.engine import open_engine
    from streamrec.config import load_config
    from streamrec.errors import StreamrecError

    with pytest.raises(StreamrecError, match="an int8 graph never has them, so onnxruntime int8 is the one to time"):
        open_engine(load_config("slowfast_tiny"), "onnxruntime-plain", "int8", max_batch=1)


def test_engine_speed_drift_is_reported_only_past_the_threshold():
    steady = [{"batch": 8, "clips_per_s_before": 150.0, "clips_per_s_after": 140.0}]
    assert engine_speed_drift(steady) is None
    drifted = [{"batch": 1, "clips_per_s_after": 90.0}, {"batch": 8, "clips_per_s_before": 150.0,
                                                         "clips_per_s_after": 110.0}]
    assert "150 clips/s (batch 8) just before the trial and 110 after" in engine_speed_drift(drifted)


class SleepingEngine:
    """Calls that take 50 ms of wall clock and no CPU, from any number of threads at once."""

    name, max_batch = "sleeping", 4

    def __init__(self, parallel_calls: int, fail: bool = False):
        self.parallel_calls, self.fail = parallel_calls, fail

    def infer(self, inputs):
        if self.fail:
            raise RuntimeError("engine broke")
        time.sleep(0.05)
        return np.zeros((1, 2), np.float32)


class FakeClock:
    """``time.perf_counter`` for `streamrec.bench.timing`: it moves only when an engine call advances it."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class ClockedEngine(SleepingEngine):
    """Each call takes exactly 1/16 s of the fake clock (a binary fraction: sums stay exact)."""

    def __init__(self, clock: FakeClock):
        super().__init__(parallel_calls=1)
        self.clock = clock

    def infer(self, inputs):
        self.clock.now += 1 / 16
        return np.zeros((1, 2), np.float32)


def test_engine_reference_times_at_least_its_seconds_so_its_p99_is_over_many_calls(monkeypatch):
    from streamrec.bench.pipeline import engine_only
    from streamrec.config import load_config

    config = load_config("slowfast_tiny")
    clock = FakeClock()
    monkeypatch.setattr("streamrec.bench.timing.time", clock)
    short = engine_only(ClockedEngine(clock), config, 1, iterations=2)
    assert short["iterations"] == 2 and short["wall_s"] == 2 / 16  # no minimum: the calls asked for, no more
    long = engine_only(ClockedEngine(clock), config, 1, iterations=2, min_seconds=0.3)
    assert long["iterations"] == 6 and long["wall_s"] == 6 / 16  # whole rounds of 2 calls until 0.3 s are covered
    monkeypatch.undo()  # parallel calls overlap in real time, on real threads
    long = engine_only(SleepingEngine(1), config, 1, iterations=2, min_seconds=0.3)
    pooled = engine_only(SleepingEngine(2), config, 1, iterations=2, min_seconds=0.3, before=long)
    assert pooled["iterations"] >= long["iterations"] + 6  # two calls at once: as many again in half the time
    assert pooled["clips_per_s_after"] > 1.3 * pooled["clips_per_s_before"]


def test_parallel_calls_are_timed_side_by_side_over_wall_clock():
    from streamrec.bench.timing import time_calls

    one, two = time_calls(SleepingEngine(1), {}, 1, 6), time_calls(SleepingEngine(2), {}, 1, 6)
    assert len(one.durations) == len(two.durations) == 6
    assert one.wall_s == pytest.approx(sum(one.durations))
    assert 0.15 <= two.wall_s < 0.8 * sum(two.durations)  # three rounds of two calls at once
    assert two.clips_per_s(4) > 1.3 * one.clips_per_s(4)
    with pytest.raises(RuntimeError, match="engine broke"):  # raised here, not a hang
        time_calls(SleepingEngine(2, fail=True), {}, 1, 6)


def test_bench_pipeline_times_the_per_person_stages(tmp_path):
    """--persons: streams of generated people, the detector and the person boxes counted too."""
    report = tmp_path / "persons.json"
    done = run_cli("bench", "pipeline", "--persons", "2", "--streams", "1", "--duration", "3", "--engine-iters", "2",
                   "--engine-seconds", "0", "--set", "clip.short_side=128", "--set", "clip.crop_size=128",
                   "--set", "clip.fit=pad", "--set", "checkpoint=null", "--json", str(report), timeout=300)
    assert done.returncode == 0, done.stderr
    (trial,) = json.loads(report.read_text())["results"]
    assert trial["hops_served"] > 0 and trial["persons_per_s"] > 0 and trial["detector_ms_per_keyframe_p50"] > 0
    assert "persons/s" in done.stdout
