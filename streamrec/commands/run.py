"""``run_stream.py run``: recognise actions on one or more streams and publish events.

With no ``--source`` and no streams in the config, it runs the embedded default: the demo
model on a demo video generated into the cache on first use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from streamrec import visualize
from streamrec.config import (DEFAULT_CONFIG, Config, StreamConfig, config_from_dict, load_config, load_labels,
                              parse_stream_entry)
from streamrec.events import EventBus, JsonlLog, StdoutSink, ZmqPublisher

log = logging.getLogger("streamrec")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"config name in configs/ or a YAML path (default {DEFAULT_CONFIG}, or "
                                         "the config a streamrec --checkpoint was saved with)")
    parser.add_argument("--source", action="append", default=[], metavar="[ID=]SOURCE",
                        help="camera index, /dev/videoN, rtsp:// or http(s):// URL, video file, or "
                             "synthetic[:size=WxH,fps=N,frames=N]; repeat for several streams")
    parser.add_argument("--checkpoint", help="weights to load (PySlowFast .pyth/.pkl, PyTorchVideo, or streamrec)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt", "auto"])
    parser.add_argument("--device", help="cpu, cuda or auto")
    parser.add_argument("--precision", help="fp32, fp16, bf16 or int8 (backend-dependent)")
    parser.add_argument("--engine", help="a prebuilt .onnx (ONNX Runtime) or TensorRT engine file")
    parser.add_argument("--threads", type=int, help="CPU threads for each engine call")
    parser.add_argument("--parallel-calls", type=int,
                        help="engine calls at once on the CPU, each on its share of the cores (more clips/s on a few "
                             "cores, each call slower)")
    parser.add_argument("--hop", type=int, help="predict every N source frames")
    parser.add_argument("--hop-seconds", type=float, help="predict every N seconds")
    parser.add_argument("--realtime", action="store_true",
                        help="play files at their frame rate, dropping frames like a live camera "
                             "(default: every frame, deterministic)")
    parser.add_argument("--publish", help="ZeroMQ address to publish on (default tcp://127.0.0.1:5555; 'none' disables)")
    parser.add_argument("--wait-subscriber", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a first subscriber before starting")
    parser.add_argument("--event-log", help="append every event to this JSONL file (rotated by size)")
    parser.add_argument("--predictions", action="store_true", help="also emit a 'prediction' event every hop")
    parser.add_argument("--quiet", action="store_true", help="do not print events on stdout")
    parser.add_argument("--curve-secret-key", metavar="FILE",
                        help="encrypt the event socket with CURVE: the publisher's .key_secret (see `keys`)")
    parser.add_argument("--curve-allowed-clients", metavar="DIR",
                        help="with CURVE: folder of the public .key files of subscribers let in")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here (e.g. 127.0.0.1:9108)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config value, e.g. postprocess.enter_threshold=0.7; repeatable")
    visualize.configure(parser)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file with the command line's flags applied on top."""
    flags = {
        "checkpoint": args.checkpoint,
        "engine.backend": args.backend,
        "engine.device": args.device,
        "engine.precision": args.precision,
        "engine.engine_file": args.engine,
        "engine.threads": args.threads,
        "engine.parallel_calls": args.parallel_calls,
        "pipeline.hop_frames": args.hop,
        "pipeline.hop_seconds": args.hop_seconds,
        "pipeline.realtime": args.realtime or None,
        "events.event_log": args.event_log,
        "events.predictions": args.predictions or None,
        "events.stdout": False if args.quiet else None,
        "events.publish": None if args.publish is None else ("null" if args.publish == "none" else args.publish),
        "events.curve_secret_key": args.curve_secret_key,
        "events.curve_allowed_clients": args.curve_allowed_clients,
        "events.metrics": args.metrics,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None] + list(args.set)
    if args.checkpoint and not args.config:  # a streamrec checkpoint carries its config
        from streamrec.checkpoints import checkpoint_config

        config = config_from_dict(checkpoint_config(args.checkpoint).to_dict(), args.checkpoint, overrides)
    else:
        config = load_config(args.config or DEFAULT_CONFIG, overrides)
    if args.source:
        data = config.to_dict()
        data["streams"] = [parse_stream_entry(source, i) for i, source in enumerate(args.source)]
        config = config_from_dict(data, source="command line")
    if not config.streams:
        from streamrec.procedural import demo_video

        config = config.replace(streams=(StreamConfig(id="demo", source=str(demo_video())),))
    return config


def build_bus(config: Config) -> tuple[EventBus, ZmqPublisher | None]:
    sinks = []
    if config.events.event_log:
        sinks.append(JsonlLog(config.events.event_log, int(config.events.event_log_max_mb * 2**20)))
    events = config.events
    publisher = (ZmqPublisher(events.publish, events.send_hwm, events.curve_secret_key, events.curve_allowed_clients)
                 if events.publish else None)
    if publisher:
        sinks.append(publisher)
    if config.events.stdout:
        sinks.append(StdoutSink())
    return EventBus(sinks), publisher


def main(args: argparse.Namespace) -> int:
    from streamrec.backends import create_engine
    from streamrec.metrics import serve_metrics
    from streamrec.pipeline import Pipeline

    config = config_from_args(args)
    visuals = visualize.Visuals(args, config)
    labels = load_labels(config)
    engine = create_engine(config)
    bus, publisher = build_bus(config)
    try:
        if publisher:
            log.info("publishing events on %s", publisher.endpoint)
            if args.wait_subscriber and not publisher.wait_for_subscriber(args.wait_subscriber):
                log.info("no subscriber after %.1f s; starting anyway", args.wait_subscriber)
        pipeline = Pipeline(config, engine, labels, bus, observers=visuals.observers, frame_taps=visuals.frame_taps)
        metrics_server = serve_metrics(pipeline, config.events.metrics) if config.events.metrics else None
        previous = {sig: signal.signal(sig, lambda *_: pipeline.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
        visuals.start(pipeline)
        try:
            pipeline.run()
        finally:
            visuals.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if metrics_server:
                metrics_server.shutdown()
    finally:
        bus.close()
    visuals.write_timeline()
    print(f"streamrec: {bus.seq} events", file=sys.stderr)
    return 0
