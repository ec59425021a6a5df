"""``run_stream.py cluster``: the config's streams sharded over a Ray cluster, with failover.

Workers (Ray actors, one per GPU or per ``--worker-cpus`` CPUs) each run the ordinary pipeline
over their share of the streams; all publish through the event proxy this process runs, whose
one subscriber here writes ``--event-log``, the central record, and checks it per publisher.
How streams are placed, moved and never served twice: `streamrec.cluster`; running it on
real machines: docs/cluster.md.
"""

from __future__ import annotations

import argparse
import math

from streamrec import interrupts
from streamrec.commands.flags import (add_config_flag, add_config_flags, add_engine_flags, add_hop_flags,
                                     add_sink_flags, add_source_flag, config_from_flags, positive_int)
from streamrec.config import Config, load_labels
from streamrec.errors import StreamrecError, check_output_path
from streamrec.events import JsonlLog, Sink, StdoutSink


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser)
    add_source_flag(parser)
    add_engine_flags(parser)
    add_hop_flags(parser)
    add_config_flag(parser, "--realtime", path="pipeline.realtime", const=True,
                    help="play files at their frame rate, dropping frames like a live camera")
    add_sink_flags(parser)
    add_config_flag(parser, "--event-log", path="events.event_log", metavar="FILE",
                    help="the central record: every worker's events in one JSONL file (rotated by size)")
    add_config_flag(parser, "--event-log-keep", path="events.event_log_keep", type=positive_int, metavar="N",
                    help="keep only the newest N rotated parts of the event log (default: every part)")
    add_config_flag(parser, "--predictions", path="events.predictions", const=True,
                    help="also emit a 'prediction' event every hop")
    add_config_flag(parser, "--quiet", path="events.stdout", const=False, help="do not print events on stdout")
    group = parser.add_argument_group("cluster")
    group.add_argument("--address", default="auto",
                       help="the Ray cluster to join: HEAD:6379, ray://HEAD:10001, auto (the one `ray start` runs on "
                            "this machine; default) or local (a one-machine cluster for this run)")
    group.add_argument("--workers", type=positive_int, metavar="N",
                       help="workers to start (default: one per GPU, or per --worker-cpus CPUs, at most one per "
                            "stream; more are added as nodes join)")
    group.add_argument("--worker-cpus", type=positive_int, metavar="N",
                       help="CPUs each worker reserves (default 1 beside its GPU; 4 on a cluster without GPUs)")
    group.add_argument("--broker-frontend", metavar="ADDRESS",
                       help="where the event proxy (this process's `broker`) takes the workers' events (default "
                            "tcp://THIS-NODE:5559, THIS-NODE its Ray address)")
    group.add_argument("--broker-backend", default="tcp://127.0.0.1:5560", metavar="ADDRESS",
                       help="where other subscribers connect to hear every worker (default %(default)s)")
    group.add_argument("--lease", type=float, default=10.0, metavar="S",
                       help="a worker serves a stream only while its lease, renewed every S/4, lasts (default "
                            "%(default)s); a failed worker's streams restart elsewhere at least S + 5 s after it was "
                            "last heard")
    group.add_argument("--lost-after", type=float, default=30.0, metavar="S",
                       help="a worker silent this long has its streams moved to the live workers (default %(default)s)")
    group.add_argument("--rebalance", type=float, default=60.0, metavar="S",
                       help="every S seconds: start workers for new capacity and even the streams out (default "
                            "%(default)s)")
    group.add_argument("--max-restarts", type=int, default=-1, metavar="N",
                       help="Ray restarts a worker whose process or node died up to N times (default -1: always)")
    group.add_argument("--report", metavar="FILE",
                       help="write the run's leases, moves and the record's check per publisher here (JSON)")


def record_sinks(config: Config) -> list[Sink]:
    """Where the central record goes, in order: the event log (durable first), brokers, stdout."""
    from streamrec.commands.run import check_sinks
    from streamrec.sinks import create_sink

    check_sinks(config)
    events = config.events
    sinks: list[Sink] = []
    try:
        if events.event_log:
            sinks.append(JsonlLog(events.event_log, int(events.event_log_max_mb * 2**20), events.event_log_keep))
        sinks.extend(create_sink(url) for url in events.sinks)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    if events.stdout:
        sinks.append(StdoutSink())
    return sinks


def main(args: argparse.Namespace) -> int:
    from streamrec.cluster import ClusterOptions, import_ray, run_cluster

    for flag, value in (("--lease", args.lease), ("--lost-after", args.lost_after), ("--rebalance", args.rebalance)):
        if not 0 < value < math.inf:  # nan too
            finite = "finite " if value == math.inf else ""
            raise StreamrecError(f"{flag} must be a {finite}number of seconds above 0, got {value}")
    if args.max_restarts < -1:
        raise StreamrecError(f"--max-restarts must be -1 (always restart) or a count from 0, got {args.max_restarts}")
    if args.report:
        check_output_path(args.report, "--report")
    config = config_from_flags(args)
    if not config.streams:
        raise StreamrecError("cluster mode needs streams: a config with a streams: list (--config cameras.yaml) or "
                             "--source flags")
    import_ray()  # before anything is opened: without Ray, one line saying what to install
    load_labels(config)
    options = ClusterOptions(address=args.address, workers=args.workers, worker_cpus=args.worker_cpus,
                             frontend=args.broker_frontend, backend=args.broker_backend, lease_s=args.lease,
                             lost_after_s=args.lost_after, rebalance_s=args.rebalance,
                             max_restarts=args.max_restarts, report=args.report)
    return run_cluster(config, options, record_sinks(config), interrupts.requested)
