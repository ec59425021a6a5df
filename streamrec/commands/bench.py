"""``run_stream.py bench engine|pipeline|compare|streaming|sinks|reliability``: the figures users compare
recognisers by.

Every benchmark prints a table, and on request writes the same figures as JSON (``--json``),
a plot (``--plot``) and a section of BENCHMARKS.md (``--markdown``); see `streamrec.bench`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

from streamrec.backends import AUTO
from streamrec.commands.flags import (add_config_flag, add_config_flags, add_engine_flags, add_hop_flags,
                                     config_from_flags, non_negative_float, non_negative_int, positive_float,
                                     positive_int)
from streamrec.config import RANGES, range_problem
from streamrec.errors import StreamrecError

log = logging.getLogger("streamrec.bench")


def configure(parser: argparse.ArgumentParser) -> None:
    _require_psutil()
    from streamrec.bench import engine as bench_engine
    from streamrec.bench import streaming as bench_streaming

    kinds = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    engine = kinds.add_parser("engine", help="one engine alone: latency, clips/s, memory, FLOPs per backend, precision "
                                             "and batch size")
    _common_flags(engine, omit=("--backend", "--precision", "--parallel-calls"))
    variants = ", ".join(f"{name} ({what})" for name, what in bench_engine.VARIANTS.items())
    listed = engine.add_argument_group("timed side by side (comma-separated lists)")
    listed.add_argument("--backend", default=AUTO, metavar="LIST",
                        help=f"any of {', '.join(bench_engine.BACKENDS)}: the registered backends, and {variants} "
                             "(default %(default)s)")
    listed.add_argument("--precision", metavar="LIST",
                        help=f"any of {', '.join(bench_engine.PRECISIONS)} (default: the config's)")
    listed.add_argument("--batch", default="1,2,4,8", metavar="LIST", help="batch sizes (default %(default)s)")
    low, high = RANGES["engine.parallel_calls"]
    listed.add_argument("--parallel-calls", dest="parallel_calls_list", metavar="LIST",
                        help=f"engine calls at once, {low} to {high}, from as many threads, each on its share of the "
                             "cores (CPU engines; default: the config's engine.parallel_calls)")
    engine.add_argument("--iters", type=positive_int, default=20, help="timed calls per case (default %(default)s)")
    engine.add_argument("--warmup", type=non_negative_int, default=3, help="untimed calls first (default %(default)s)")
    engine.add_argument("--rounds", type=positive_int, default=1,
                        help="split the timed calls into this many rounds, interleaved across cases in alternating "
                             "order, so a machine whose load drifts treats every case alike (default %(default)s)")
    engine.add_argument("--peak-gflops", type=positive_float,
                        help="the device's peak GFLOP/s (default: measured by a matrix-multiply probe)")

    pipeline = kinds.add_parser("pipeline", help="N live streams through the real pipeline; --max-streams finds how "
                                                 "many are served in real time")
    _common_flags(pipeline, backend_default=AUTO)
    pipeline.add_argument("--source", action="append", default=[],
                          help="'synthetic' (default; a camera-paced synthetic stream per stream), a video file "
                               "(played at its frame rate, dropping frames like a camera) or an rtsp:// URL; repeat "
                               "to cycle streams over several")
    pipeline.add_argument("--persons", type=positive_int, metavar="N",
                          help="per-person mode (default config slowfast_tiny_roi): each stream a generated video "
                               "of N people at --fps (played like a camera), timing the detector and the person "
                               "boxes scored a second too")
    count = pipeline.add_mutually_exclusive_group()
    count.add_argument("--streams", type=positive_int, help="number of streams (default 4)")
    count.add_argument("--load", type=float, metavar="FRACTION",
                       help="as many streams as keep the engine this busy, from its engine-only clips/s at "
                            "--max-batch (0.5: half load)")
    count.add_argument("--max-streams", action="store_true",
                       help="search for the largest number of streams served in real time")
    pipeline.add_argument("--max-streams-limit", type=positive_int, default=512,
                          help="the search stops here (default %(default)s)")
    pipeline.add_argument("--fps", type=positive_float, default=30.0, help="synthetic streams' frame rate (default %(default)s)")
    pipeline.add_argument("--size", default="320x240", help="synthetic frames' WxH (default %(default)s)")
    add_config_flag(pipeline, "--max-batch", path="pipeline.max_batch", type=positive_int,
                    help="pipeline.max_batch (default: the config's)")
    pipeline.add_argument("--duration", type=positive_float, default=20.0,
                          help="seconds per trial (default %(default)s)")
    pipeline.add_argument("--p99-bound", type=positive_float, metavar="MS",
                          help="a trial whose capture→event p99 exceeds this is not real time")
    pipeline.add_argument("--engine-iters", type=positive_int, default=20,
                          help="timed calls of the engine-only reference (default %(default)s)")
    pipeline.add_argument("--engine-seconds", type=non_negative_float, default=3.0,
                          help="and at least this many seconds of them, before and after each trial, so the "
                               "reference p99 is over many calls like the trial's (default %(default)s)")
    pipeline.add_argument("--no-engine", action="store_true",
                          help="answer every call at once with zero logits instead of running the model: what "
                               "the pipeline alone (capture, scheduling, events) serves on this machine, the "
                               "ceiling for any model")
    pipeline.add_argument("--repeat", type=positive_int, default=1,
                          help="run the trial this many times, each against the engine alone timed just before "
                               "and after it, and report the median ratios (for machines whose speed drifts)")

    compare = kinds.add_parser("compare", help="this project's pipeline against the PySlowFast demo loop on the "
                                               "same file and weights")
    _common_flags(compare, backend_default=AUTO)  # engine flags: the project's side (the baseline is eager float32)
    compare.add_argument("--input", help="video file both sides read (default: a synthetic video written for the run)")
    compare.add_argument("--frames", type=positive_int,
                         help="use only the first N frames (default: the whole file; synthetic: 4 demo windows)")
    compare.add_argument("--size", default="320x240", help="synthetic video's WxH (default %(default)s)")

    sinks = kinds.add_parser("sinks", help="events/s and publish latency through the ZeroMQ broker proxy and each "
                                           "message-broker sink, on loopback")
    sinks.add_argument("--targets", default="zeromq,mqtt,redis,nats", metavar="LIST",
                       help="any of zeromq, mqtt, redis, nats (default %(default)s); a broker whose server or client "
                            "library is missing is listed as not measured")
    sinks.add_argument("--burst", type=positive_int, default=20_000,
                       help="events emitted as fast as possible, for events/s (default %(default)s)")
    sinks.add_argument("--paced", type=positive_int, default=1_000,
                       help="events emitted at --rate, for latency (default %(default)s)")
    sinks.add_argument("--rate", type=float, default=500.0, help="paced events per second (default %(default)s)")
    for flag, help_text in (("--json", "write every figure and the machine description here"),
                            ("--markdown", "replace (or add) this run's section in a Markdown file, e.g. BENCHMARKS.md"),
                            ("--label", "names this run's Markdown section, to keep several of one benchmark")):
        sinks.add_argument(flag, metavar="FILE" if flag != "--label" else None, help=help_text)
    sinks.set_defaults(plot=None)

    streaming = kinds.add_parser("streaming", help="what a hop costs, clip model against its streaming forms "
                                                   "(GFLOPs, hops/s, state), and what the forms change (accuracy, delay)")
    bench_streaming.configure(streaming)

    reliability = kinds.add_parser("reliability", help="network and camera faults injected into a live RTSP stream, "
                                                       "and bad inputs, against the real command line")
    reliability.add_argument("--skip-faults", action="store_true",
                             help="only try the bad inputs (the faults need GStreamer's RTSP server)")
    reliability.add_argument("--config", default="slowfast_tiny",
                             help="the config the faulted camera is served with, a streaming one too "
                                  "(default %(default)s)")
    for flag, help_text in (("--json", "write every figure and the machine description here"),
                            ("--markdown", "replace (or add) this run's section in a Markdown file, e.g. BENCHMARKS.md"),
                            ("--label", "names this run's Markdown section, to keep several of one benchmark")):
        reliability.add_argument(flag, metavar="FILE" if flag != "--label" else None, help=help_text)
    reliability.set_defaults(plot=None)


def _common_flags(parser: argparse.ArgumentParser, **engine_flags) -> None:
    add_config_flags(parser)
    add_engine_flags(parser, **engine_flags)
    add_hop_flags(parser, seconds=False)
    parser.add_argument("--json", metavar="FILE", help="write every figure and the machine description here")
    parser.add_argument("--plot", metavar="FILE.png", help="write a plot here")
    parser.add_argument("--markdown", metavar="FILE", help="replace (or add) this run's section in a Markdown file, "
                                                           "e.g. BENCHMARKS.md")
    parser.add_argument("--label", help="names this run's Markdown section, to keep several of one benchmark")


def _require_psutil() -> None:
    try:
        import psutil  # noqa: F401  (memory and CPU meters)
    except ImportError:
        raise StreamrecError("the benchmarks need psutil: pip install psutil (it comes with the 'dev' extra)") from None


def main(args: argparse.Namespace) -> int:
    from streamrec.bench.report import check_report_paths

    check_report_paths(args)  # before the benchmark runs, not after
    return {"engine": engine_main, "pipeline": pipeline_main, "compare": compare_main, "streaming": streaming_main,
            "sinks": sinks_main, "reliability": reliability_main}[args.benchmark](args)


def streaming_main(args: argparse.Namespace) -> int:
    from streamrec.bench import streaming as bench

    bench.write(bench.run(bench.checked(args)), args)
    return 0


def publish(document: dict, args: argparse.Namespace, text: str, markdown_body: str, device: str, plot) -> None:
    """The table on the terminal, then the files asked for."""
    from streamrec.bench import report

    print(text)
    if args.json:
        report.write_json(document, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot(document, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        title = f"{document['benchmark']}: {document['config']} on {device}"
        title += f" ({args.label})" if args.label else ""
        report.update_markdown(args.markdown, report.section_key(document, device, args.label),
                               report.markdown_section(document, title, markdown_body))
        print(f"updated {args.markdown}")


# --------------------------------------------------------------------------- engine


def engine_main(args: argparse.Namespace) -> int:
    from streamrec.bench import engine as bench
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document

    config = config_from_flags(args)
    if config.streaming is not None:
        raise StreamrecError("bench engine times whole-clip engines; a streaming config's cost per hop, against its "
                             "clip model's, is `bench streaming`, and its streams served is `bench pipeline`")
    parallel_calls = bench.parse_counts(args.parallel_calls_list or str(config.engine.parallel_calls),
                                        "--parallel-calls")
    for calls in parallel_calls:  # each count is that many engine sessions: engine.parallel_calls' bound
        if problem := range_problem("engine.parallel_calls", calls):
            raise StreamrecError(f"--parallel-calls: {problem}")
    plan = bench.EngineBenchPlan(
        backends=bench.parse_names(args.backend, bench.BACKENDS, "--backend"),
        precisions=bench.parse_names(args.precision or config.engine.precision, bench.PRECISIONS, "--precision"),
        batches=bench.parse_counts(args.batch, "--batch"), parallel_calls=parallel_calls,
        iterations=args.iters, warmup=args.warmup, rounds=args.rounds, hop_frames=config.pipeline.hop_frames,
        peak_gflops=args.peak_gflops)
    document, sampler = start_document("engine", config.name), ResourceSampler().start()
    figures = bench.EngineBench(config, plan).run()
    if not figures["results"]:
        raise StreamrecError("no case could run: " + "; ".join(s["reason"] for s in figures["skipped"]))
    finish_document(document, sampler, plan=dataclasses.asdict(plan), **figures)
    text = bench.summary_text(document)
    ratios = bench.ratio_lines(document)
    devices = "+".join(sorted({r["device"] for r in document["results"]}))
    markdown = bench.summary_text(document, markdown=True)
    if ratios:
        text += "\n\n" + "\n".join(ratios)
        markdown += "\n\nRatios, measured side by side in this run:\n\n" + "\n".join(f"- {line}" for line in ratios)
    publish(document, args, text, markdown, devices, bench.plot)
    return 0


# --------------------------------------------------------------------------- pipeline


def hop_seconds(config, fps: float) -> float:
    """Seconds between two hops of a stream at ``fps``: a streaming config's on its unit grid."""
    from streamrec.config import streaming_hop_frames
    from streamrec.sampling import hop_frames

    if config.streaming is not None:
        return streaming_hop_frames(config) / config.clip.train_fps
    return hop_frames(config.pipeline, fps) / fps


def pipeline_main(args: argparse.Namespace) -> int:
    from streamrec.bench import pipeline as bench
    from streamrec.backends import call_threads, create_engine
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document
    from streamrec.config import load_labels

    if args.persons:
        from streamrec.commands.run import PERSONS_CONFIG

        args.config = args.config or PERSONS_CONFIG
    config = config_from_flags(args)
    if args.persons and config.detection is None:
        config = config_from_flags(args, {"detection": {}})
    plan = bench.PipelinePlan(sources=tuple(args.source or ["synthetic"]), fps=args.fps, size=args.size,
                              duration_s=args.duration, p99_bound_ms=args.p99_bound,
                              engine_iterations=args.engine_iters, engine_seconds=args.engine_seconds,
                              camera_spread_s=hop_seconds(config, args.fps))
    bench.check_plan(plan)
    scratch = tempfile.TemporaryDirectory(prefix="streamrec-bench-persons-") if args.persons else None
    if args.persons and not args.source:  # people walking in generated videos, made to last every trial
        plan = dataclasses.replace(plan, sources=tuple(bench.person_videos(Path(scratch.name), args.persons,
                                                                               args.fps, args.duration)))
    if args.load is not None and not 0 < args.load <= 4:
        raise StreamrecError(f"--load {args.load} must be above 0 and at most 4: a share of the engine's capacity "
                             "(0.5 is half load, 2 asks for twice what it can serve)")
    if args.load is not None and args.no_engine:
        raise StreamrecError("--load sizes the streams from the engine's speed, and --no-engine runs none: give "
                             "--streams N or --max-streams instead")
    labels = load_labels(config)
    document, sampler = start_document("pipeline", config.name), ResourceSampler().start()
    engine = create_engine(config)
    if args.no_engine:
        engine = bench.NoEngine(engine, config.model.num_classes)
    max_batch = min(config.pipeline.max_batch, engine.max_batch)
    # The engine's capacity, for --load: the best of three timings, so that a moment when the
    # machine ran slow does not make "half load" a third of it.
    first = max((bench.engine_only(engine, config, max_batch, plan.engine_iterations, plan.engine_seconds)
                 for _ in range(3)),
                key=lambda reference: reference["clips_per_s"])
    log.info("engine alone at batch %d: %.2f clips/s", max_batch, first["clips_per_s"])

    def trial(streams: int) -> dict:
        return bench.measured_trial(config, engine, labels, plan, streams, max_batch)

    best = None
    if args.max_streams:
        best, trials = bench.search_max_streams(trial, start=1, limit=args.max_streams_limit)
    else:
        streams = args.streams or 4
        if args.load is not None:
            streams = bench.streams_for_load(args.load, first["clips_per_s"], args.fps, config.pipeline.hop_frames)
            log.info("load %.2f of %.2f clips/s at hop %d and %g fps: %d streams", args.load,
                     first["clips_per_s"], config.pipeline.hop_frames, args.fps, streams)
        trials = [trial(streams) for _ in range(args.repeat)]
    device = engine.device
    setup = {"engine": engine.name, "precision": config.engine.precision, "device": device,
             "parallel_calls": engine.parallel_calls, "threads_per_call": call_threads(config.engine) or None,
             "max_batch": max_batch, "hop_frames": config.pipeline.hop_frames, "fps": args.fps,
             "sources": list(plan.stream_sources(1)) + (["..."] if len(plan.sources) > 1 else []),
             "camera_spread_s": round(plan.camera_spread_s, 4),
             "duration_s": plan.duration_s, "p99_bound_ms": plan.p99_bound_ms, "load": args.load,
             "load_reference": first, "persons": args.persons,
             "detector": config.detection.detector if config.detection is not None else None}
    finish_document(document, sampler, setup=setup, results=trials, median=bench.median_ratios(trials),
                    max_realtime_streams=best)
    text = bench.summary_text(document)
    publish(document, args, text, bench.summary_text(document, markdown=True), device, bench.plot)
    if scratch is not None:
        scratch.cleanup()
    return 0


# --------------------------------------------------------------------------- compare


def compare_main(args: argparse.Namespace) -> int:
    from streamrec.backends import create_engine
    from streamrec.backends.torch_backend import pick_device
    from streamrec.bench import compare as bench
    from streamrec.bench.baseline import EagerModel
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document
    from streamrec.config import load_labels

    config = config_from_flags(args)
    labels = load_labels(config)
    with tempfile.TemporaryDirectory(prefix="streamrec-compare-") as scratch:
        config, weights = bench.shared_weights(config, Path(scratch))
        if args.input:
            source = Path(args.input)
            if not source.is_file():
                raise StreamrecError(f"video file '{args.input}' not found; check the path passed to --input")
            video = bench.first_frames(source, args.frames, Path(scratch) / "input.mp4") if args.frames else source
            description = f"{source.name}" + (f", first {args.frames} frames" if args.frames else "")
        else:
            frames = args.frames or 4 * config.clip.span
            video = bench.synthetic_video(Path(scratch) / "synthetic.mp4", frames, args.size)
            description = f"synthetic MP4 (mp4v), {frames} frames of {args.size} at 30 fps, written for this run"
        document, sampler = start_document("compare", config.name), ResourceSampler().start()
        eager = EagerModel(config, str(pick_device(config.engine.device)))
        baseline = bench.run_baseline(eager, config, video)
        engine = create_engine(config)
        project = bench.run_project(config, engine, labels, video)
        same_model = bench.same_model_check(eager, engine, config)
    finish_document(document, sampler, input={"description": description, "weights": weights},
                    results=[project, baseline], ratios=bench.ratios(project, baseline), same_model=same_model)
    publish(document, args, bench.summary_text(document), bench.summary_text(document, markdown=True),
            project["device"], bench.plot)
    return 0


# --------------------------------------------------------------------------- sinks


def sinks_main(args: argparse.Namespace) -> int:
    from streamrec.bench import sinks as bench
    from streamrec.bench.engine import parse_names
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document

    plan = bench.SinksPlan(burst=args.burst, paced=args.paced, rate=args.rate)
    bench.check_plan(plan)
    targets = parse_names(args.targets, bench.TARGETS, "--targets")
    document, sampler = start_document("sinks", "brokers"), ResourceSampler().start()
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="streamrec-sinks-") as scratch:
        for target in targets:
            reason = bench.unavailable(target)
            if reason is None:
                log.info("sinks: %s", target)
                results.append(bench.run_target(target, plan, Path(scratch)))
            else:
                skipped.append({"target": target, "reason": reason})
    if not results:
        raise StreamrecError("no target could run: " + "; ".join(f"{s['target']}: {s['reason']}" for s in skipped))
    finish_document(document, sampler, plan=dataclasses.asdict(plan), results=results, skipped=skipped,
                    software=bench.software([r["target"] for r in results]))
    publish(document, args, bench.summary_text(document), bench.summary_text(document, markdown=True), "loopback",
            None)
    return 0


# --------------------------------------------------------------------------- reliability


def reliability_main(args: argparse.Namespace) -> int:
    from streamrec.bench import reliability as bench
    from streamrec.bench.faults import rtsp_server_available
    from streamrec.bench.machine import ResourceSampler
    from streamrec.bench.report import finish_document, start_document
    from streamrec.config import load_config

    if not args.skip_faults and not rtsp_server_available():
        raise StreamrecError("the faults need GStreamer's RTSP server: apt install gir1.2-gst-rtsp-server-1.0 "
                             "python3-gi gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good (or pass --skip-faults)")
    config = load_config(args.config)  # a bad name is one line here, not a failed run later
    document, sampler = start_document("reliability", config.name), ResourceSampler().start()
    faults = None if args.skip_faults else bench.run_faults(progress=log.info, config=args.config)
    bad = bench.try_bad_inputs()
    finish_document(document, sampler, **bench.as_document(faults, bad))
    publish(document, args, bench.summary_text(document), bench.summary_text(document, markdown=True), "loopback",
            None)
    failed = (faults is not None and (faults.events_lost or not all(r.survived for r in faults.results))) \
        or not all(b.ok for b in bad)
    return 1 if failed else 0
