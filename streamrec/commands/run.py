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
from streamrec.commands.flags import (add_config_flag, add_config_flags, add_engine_flags, add_hop_flags,
                                     config_from_flags)
from streamrec.config import Config, StreamConfig, load_labels
from streamrec.events import EventBus, JsonlLog, StdoutSink, ZmqPublisher

log = logging.getLogger("streamrec")


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser)
    add_config_flag(parser, "--source", path="streams", repeat=True, metavar="[ID=]SOURCE",
                    help="camera index, /dev/videoN, rtsp:// or http(s):// URL, video file, or "
                         "synthetic[:size=WxH,fps=N,frames=N]; repeat for several streams")
    add_engine_flags(parser)
    add_hop_flags(parser)
    add_config_flag(parser, "--realtime", path="pipeline.realtime", const=True,
                    help="play files at their frame rate, dropping frames like a live camera "
                         "(default: every frame, deterministic)")
    add_config_flag(parser, "--publish", path="events.publish", type=publish_address, metavar="ADDRESS",
                    help="ZeroMQ address to publish on (default tcp://127.0.0.1:5555; 'none' disables)")
    parser.add_argument("--wait-subscriber", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a first subscriber before starting")
    add_config_flag(parser, "--event-log", path="events.event_log", metavar="FILE",
                    help="append every event to this JSONL file (rotated by size)")
    add_config_flag(parser, "--predictions", path="events.predictions", const=True,
                    help="also emit a 'prediction' event every hop")
    add_config_flag(parser, "--quiet", path="events.stdout", const=False, help="do not print events on stdout")
    add_config_flag(parser, "--curve-secret-key", path="events.curve_secret_key", metavar="FILE",
                    help="encrypt the event socket with CURVE: the publisher's .key_secret (see `keys`)")
    add_config_flag(parser, "--curve-allowed-clients", path="events.curve_allowed_clients", metavar="DIR",
                    help="with CURVE: folder of the public .key files of subscribers let in")
    add_config_flag(parser, "--metrics", path="events.metrics", metavar="HOST:PORT",
                    help="serve Prometheus metrics here (e.g. 127.0.0.1:9108)")
    visualize.configure(parser)


def publish_address(text: str) -> str | None:
    """``--publish none`` turns publishing off."""
    return None if text == "none" else text


def run_config(args: argparse.Namespace) -> Config:
    """The config with the command line's flags applied; with no stream anywhere, the demo video."""
    config = config_from_flags(args)
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

    config = run_config(args)
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
