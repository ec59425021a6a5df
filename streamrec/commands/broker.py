"""``run_stream.py broker``: one place to subscribe to many pipelines (a ZeroMQ XSUB/XPUB proxy).

Pipelines publish to the broker's frontend (``run --publish connect:tcp://BROKER:5559``),
subscribers connect to its backend (``subscribe --connect tcp://BROKER:5560``) and hear every
pipeline, each event carrying its ``publisher`` so gaps are checked per pipeline. The broker
stores nothing (`streamrec.events.EventProxy`). It runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import threading

from streamrec import interrupts
from streamrec.commands.flags import c_int
from streamrec.events import EventProxy

log = logging.getLogger("streamrec")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frontend", default="tcp://127.0.0.1:5559",
                        help="where pipelines connect to publish (default %(default)s; tcp://0.0.0.0:5559 for "
                             "pipelines on other machines)")
    parser.add_argument("--backend", default="tcp://127.0.0.1:5560",
                        help="where subscribers connect (default %(default)s)")
    parser.add_argument("--hwm", type=c_int, default=10000,
                        help="messages queued per connection before ZeroMQ drops for it (default %(default)s)")
    curve = parser.add_argument_group("CURVE (encryption and authentication; make keys with `keys`)")
    curve.add_argument("--curve-secret-key", metavar="FILE", help="the broker's .key_secret")
    curve.add_argument("--curve-allowed-publishers", metavar="DIR",
                       help="folder of the public .key files of pipelines let in on the frontend")
    curve.add_argument("--curve-allowed-subscribers", metavar="DIR",
                       help="folder of the public .key files of subscribers let in on the backend")


def main(args: argparse.Namespace) -> int:
    proxy = EventProxy(args.frontend, args.backend, hwm=args.hwm, curve_secret_key=args.curve_secret_key,
                       allowed_publishers=args.curve_allowed_publishers,
                       allowed_subscribers=args.curve_allowed_subscribers).start()
    stop = threading.Event()
    stop_listening = interrupts.on_stop(stop.set)
    try:
        curve = f" (CURVE on the {' and '.join(proxy.curve_sides)} side)" if proxy.curve_sides else ""
        log.info("broker: publishers connect to %s, subscribers to %s%s", proxy.frontend_address,
                 proxy.backend_address, curve)
        print(f"broker ready: frontend {proxy.frontend_address} backend {proxy.backend_address}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        stop_listening()
        proxy.stop()
    log.info("broker stopped")
    return 0
