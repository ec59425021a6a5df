"""``run_stream.py bench streaming`` (and ``python -m streamrec.bench.streaming``): the table, the JSON
and the BENCHMARKS.md section, on a short run of the tiny model."""

from __future__ import annotations

import json

import torch

from conftest import run_cli
from streamrec.bench.streaming import main


def test_a_short_run_writes_its_figures_and_its_section(tmp_path, capsys):
    threads = torch.get_num_threads()
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nsomeone else's section\n")
    try:
        code = main(["--config", "slowfast_tiny", "--hops", "8,12", "--batches", "1,2", "--iters", "1", "--videos", "1",
                     "--minutes", "0.25", "--json", str(tmp_path / "s.json"), "--markdown", str(markdown)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    document = json.loads((tmp_path / "s.json").read_text())
    entry = document["results"]["slowfast_tiny"]
    eight, eight_causal, eight_two, eight_causal_two, twelve = entry["cost"]
    assert (eight["form"], eight_causal["form"]) == (eight_two["form"], eight_causal_two["form"]) == ("delayed-exact", "causal")
    assert [row["batch"] for row in entry["cost"]] == [1, 1, 2, 2, 1]
    for row in (eight, eight_causal, eight_two, eight_causal_two):
        assert row["units"] == 1 and abs(row["gflops_ratio"] - row["stream_gflops"] / row["clip_gflops"]) < 0.01
        assert 0.24 < row["gflops_ratio"] < 0.26  # one Slow step of a four-step clip, and the same head
        assert row["stream_ms"] > 0 and row["speedup"] == round(row["clip_ms"] / row["stream_ms"], 2)
        for engine in ("clip", "stream"):  # a call serves one hop of each clip in its batch
            assert abs(row[f"{engine}_hops_per_s"] - 1000 * row["batch"] / row[f"{engine}_ms"]) < 0.01 * row[f"{engine}_hops_per_s"]
    assert eight_two["stream_gflops"] == eight["stream_gflops"]  # counted per clip, whatever the batch
    assert eight["clip_ms"] == eight_causal["clip_ms"]  # one clip timing, taken in turn with both forms
    # the clip model on one call's new frames alone, timed in the same turns: one figure a hop and batch
    assert eight["stateless_ms"] == eight_causal["stateless_ms"] > 0
    assert eight_two["stateless_ms"] == eight_causal_two["stateless_ms"] > 0
    assert eight["stateless_speedup"] == round(eight["clip_ms"] / eight["stateless_ms"], 2)
    assert (eight["delay_units"], eight_causal["delay_units"]) == (4, 0)
    assert eight_causal["state_mib"] < eight["state_mib"]  # no delay lines: nothing waits for the future
    assert "multiple of 8" in twelve["note"] and "stream_ms" not in twelve
    models = entry["accuracy"]["models"]
    assert list(models) == ["clip", "delayed-exact", "causal, not distilled"]
    assert models["delayed-exact"]["delay_s"] == 1.067 and models["causal, not distilled"]["delay_s"] == 0.0
    assert 0.0 <= models["delayed-exact"]["top1_agreement_same_window"] <= 1.0
    text = markdown.read_text()
    assert "someone else's section" in text and "## streaming: per-hop cost" in text
    assert "| 8 | 1 | delayed-exact | 1 |" in text and "| 8 | 2 | causal | 1 |" in text and "python -m streamrec.bench.streaming --config slowfast_tiny" in text
    printed = capsys.readouterr().out
    assert "'no-state': the clip model exported for one call's new frames alone" in text
    assert "stream GFLOPs" in printed and "no-state speed-up" in printed and "hop 12: a streaming SlowFast advances 8 source frames" in printed


def test_a_distilled_rows_command_repeats_the_flags_that_made_it():
    from streamrec.bench.streaming import _distill_flags

    assert _distill_flags({"targets": "teacher", "target_hops": 1}) == ""
    assert _distill_flags({"targets": "labels", "target_hops": 1}) == " --targets labels"
    assert _distill_flags({"target_hops": 2}) == " --target-hops 2"  # a record from before --targets
    assert _distill_flags({"targets": "teacher", "target_hops": 1, "average_units": 2}) == " --average-units 2"


def test_bench_streaming_is_a_bench_command_and_records_itself_as_typed(tmp_path):
    result = run_cli("bench", "streaming", "--config", "slowfast_tiny", "--hops", "8", "--batches", "1", "--iters", "1",
                     "--videos", "0", "--json", str(tmp_path / "s.json"), timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["command"].startswith("python run_stream.py bench streaming --config slowfast_tiny --hops 8")
    assert [row["form"] for row in document["results"]["slowfast_tiny"]["cost"]] == ["delayed-exact", "causal"]
    assert "speed-up" in result.stdout
    bad = run_cli("bench", "streaming", "--distilled", "slowfast_tiny", timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --distilled takes CONFIG=CHECKPOINT, e.g. slowfast_tiny=runs/causal_tiny/model.pt"]
