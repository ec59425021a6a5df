"""``run_stream.py run``: recognise actions on one or more streams and publish events.

With no ``--source`` and no streams in the config, it runs the embedded default: the demo
model on a demo video generated into the cache on first use.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from streamrec import interrupts, visualize
from streamrec.commands.flags import (add_config_flag, add_config_flags, add_engine_flags, add_hop_flags,
                                     add_sink_flags, add_source_flag, config_from_flags, non_negative_float,
                                     positive_int)
from streamrec.config import Config, StreamConfig, load_labels
from streamrec.events import EventBus, JsonlLog, Sink, StdoutSink, ZmqPublisher

PERSONS_CONFIG = "slowfast_tiny_roi"  # the demo's per-person model
log = logging.getLogger("streamrec")


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser)
    add_source_flag(parser)
    add_engine_flags(parser)
    add_hop_flags(parser)
    parser.add_argument("--persons", action="store_true",
                        help=f"who is doing what: find, track and classify each person (default config "
                             f"{PERSONS_CONFIG}; the config's detection: section, motion detection if it has none)")
    add_config_flag(parser, "--realtime", path="pipeline.realtime", const=True,
                    help="play files at their frame rate, dropping frames like a live camera "
                         "(default: every frame, deterministic)")
    add_config_flag(parser, "--publish", path="events.publish", type=publish_address, metavar="ADDRESS",
                    help="ZeroMQ address to publish on (default tcp://127.0.0.1:5555; 'none' disables), or "
                         "connect:tcp://HOST:PORT to publish through a `broker`")
    parser.add_argument("--wait-subscriber", type=non_negative_float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a first subscriber before starting (default 0: do not wait)")
    add_sink_flags(parser)
    add_config_flag(parser, "--event-log", path="events.event_log", metavar="FILE",
                    help="append every event to this JSONL file (rotated by size, every part kept)")
    add_config_flag(parser, "--event-log-keep", path="events.event_log_keep", type=positive_int, metavar="N",
                    help="keep only the newest N rotated parts of the event log (default: every part)")
    add_config_flag(parser, "--predictions", path="events.predictions", const=True,
                    help="also emit a 'prediction' event every hop")
    add_config_flag(parser, "--quiet", path="events.stdout", const=False, help="do not print events on stdout")
    add_config_flag(parser, "--curve-secret-key", path="events.curve_secret_key", metavar="FILE",
                    help="encrypt the event socket with CURVE: the publisher's .key_secret (see `keys`)")
    add_config_flag(parser, "--curve-allowed-clients", path="events.curve_allowed_clients", metavar="DIR",
                    help="with CURVE: folder of the public .key files of subscribers let in")
    add_config_flag(parser, "--curve-server-key", path="events.curve_server_key", metavar="FILE",
                    help="with CURVE and --publish connect:...: the broker's public .key file")
    add_config_flag(parser, "--metrics", path="events.metrics", metavar="HOST:PORT",
                    help="serve Prometheus metrics here (e.g. 127.0.0.1:9108)")
    visualize.configure(parser)


def publish_address(text: str) -> str | None:
    """``--publish none`` turns publishing off."""
    return None if text == "none" else text


def run_config(args: argparse.Namespace) -> Config:
    """The config with the command line's flags applied; with no stream anywhere, the demo video
    (in per-person mode, the one with several people)."""
    if args.persons and not args.config:
        args.config = PERSONS_CONFIG
    config = config_from_flags(args)
    if args.persons and config.detection is None:
        config = config_from_flags(args, fixed={"detection": {}})
    if not config.streams:
        if config.detection is not None:
            from streamrec.procedural_group import group_demo_video as demo_video
        else:
            from streamrec.procedural import demo_video

        config = config.replace(streams=(StreamConfig(id="demo", source=str(demo_video())),))
    return config


def check_sinks(config: Config) -> None:
    """The event log's path usable and every ``--sink`` URL well formed with its client library
    installed, before the engine is built."""
    if config.events.event_log:
        from streamrec.events import check_event_log

        check_event_log(config.events.event_log)
    if config.events.sinks:
        from streamrec.sinks import check_sink_url

        for url in config.events.sinks:
            check_sink_url(url)


def build_bus(config: Config) -> tuple[EventBus, ZmqPublisher | None]:
    """The bus and its sinks, in the order every event reaches them: the event log (durable
    first), the ZeroMQ publisher, the message brokers (``events.sinks``), stdout."""
    from streamrec.sinks import create_sink

    events = config.events
    sinks: list[Sink] = []
    try:
        if events.event_log:
            sinks.append(JsonlLog(events.event_log, int(events.event_log_max_mb * 2**20), events.event_log_keep))
        publisher = (ZmqPublisher(events.publish, events.send_hwm, events.curve_secret_key,
                                  events.curve_allowed_clients, events.curve_server_key)
                     if events.publish else None)
        if publisher:
            sinks.append(publisher)
        sinks.extend(create_sink(url) for url in events.sinks)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    if events.stdout:
        sinks.append(StdoutSink())
    return EventBus(sinks), publisher


def wait_for_subscriber(publisher, seconds: float) -> bool:
    """Wait up to ``seconds`` for a first subscriber, or until a stop is asked for."""
    deadline = time.monotonic() + seconds
    while not interrupts.requested() and time.monotonic() < deadline:
        if publisher.wait_for_subscriber(min(0.1, max(0.0, deadline - time.monotonic()))):
            return True
    return False


def main(args: argparse.Namespace) -> int:
    from streamrec.backends import create_engine
    from streamrec.metrics import serve_metrics
    from streamrec.pipeline import Pipeline

    config = run_config(args)
    check_sinks(config)
    visuals = visualize.Visuals(args, config)
    labels = load_labels(config)
    if interrupts.requested():  # before the engine, the slow part: nothing was opened, nothing is owed
        print("streamrec: stopped before any stream was opened", file=sys.stderr)
        return 0
    engine = create_engine(config)
    bus, publisher = build_bus(config)
    try:
        if publisher:
            where = "to the broker at" if publisher.mode == "connect" else "on"
            log.info("publishing events %s %s%s", where, publisher.endpoint, " (CURVE)" if publisher.curve else "")
            if args.wait_subscriber and not wait_for_subscriber(publisher, args.wait_subscriber):
                log.info("no subscriber after %g s; starting anyway", args.wait_subscriber)
        pipeline = Pipeline(config, engine, labels, bus, observers=visuals.observers, frame_taps=visuals.frame_taps)
        metrics_server = serve_metrics(pipeline, config.events.metrics) if config.events.metrics else None
        stop_listening = interrupts.on_stop(pipeline.stop)  # at once if a stop came earlier: it then only closes
        visuals.start(pipeline)
        try:
            pipeline.run()
        finally:
            stop_listening()
            visuals.stop()
            if metrics_server:
                metrics_server.shutdown()
    finally:
        bus.close()
    visuals.write_timeline()
    print(f"streamrec: {bus.seq} events", file=sys.stderr)
    return 0
