"""``run_stream.py subscribe``: print a pipeline's events as JSON lines and report lost ones.

It connects to a pipeline's ``--publish`` address, or to a ``broker``'s backend to hear every
pipeline behind it. Without a topic filter it checks each publisher's sequence
(`streamrec.events.SequenceCheck`): a publisher it first hears after seq 0 is a missed start,
a jump is a gap; both go to stderr, and the exit status counts neither. ZeroMQ keeps nothing
for a subscriber that is away: ``--event-log`` (or a broker sink) is the durable record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from streamrec import interrupts
from streamrec.commands.flags import positive_float, positive_int
from streamrec.config import zmq_address_problem
from streamrec.errors import StreamrecError
from streamrec.events import SequenceCheck, load_curve_key

POLL_MS = 200  # how often a quiet subscriber checks for a stop


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", default="tcp://127.0.0.1:5555",
                        help="a pipeline's publish address, or a broker's --backend (default %(default)s)")
    parser.add_argument("--topic", action="append", default=[],
                        help="only events whose topic starts with this (e.g. 'lobby.' or 'lobby.action_start'); repeatable")
    parser.add_argument("--count", type=positive_int, help="exit after this many events")
    parser.add_argument("--timeout", type=positive_float, help="give up after this many seconds without an event")
    parser.add_argument("--expect-events", action="store_true",
                        help="exit with status 1 if no event arrived (with --timeout, or when interrupted)")
    parser.add_argument("--curve-server-key", metavar="FILE",
                        help="the publisher's (or the broker's) public key file (CURVE)")
    parser.add_argument("--curve-key", metavar="FILE", help="this subscriber's secret key file (CURVE)")


def main(args: argparse.Namespace) -> int:
    if problem := zmq_address_problem(args.connect, bind=False):
        raise StreamrecError(f"--connect {problem}")
    context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        if args.curve_server_key or args.curve_key:
            if not (args.curve_server_key and args.curve_key):
                raise StreamrecError("CURVE needs both --curve-server-key (the publisher's .key) and --curve-key "
                                     "(this subscriber's .key_secret)")
            socket.curve_serverkey, _ = load_curve_key(args.curve_server_key, secret=False)
            socket.curve_publickey, socket.curve_secretkey = load_curve_key(args.curve_key, secret=True)
        for topic in args.topic or [""]:
            socket.setsockopt_string(zmq.SUBSCRIBE, topic)
        try:
            socket.connect(args.connect)
        except zmq.ZMQError as exc:
            raise StreamrecError(f"cannot connect to {args.connect}: {zmq.strerror(exc.errno)}; use an address like "
                                 "tcp://127.0.0.1:5555") from None
        return receive(socket, args)
    finally:
        socket.close()


def receive(socket: zmq.Socket, args: argparse.Namespace) -> int:
    """Print events until ``--count``, ``--timeout`` or a stop (Ctrl-C, SIGTERM); the exit status."""
    received, check = 0, SequenceCheck()
    timed_out, last = False, time.monotonic()
    while (args.count is None or received < args.count) and not interrupts.requested():
        if not socket.poll(POLL_MS):
            if args.timeout is not None and time.monotonic() - last >= args.timeout:
                wanted = f" of {args.count}" if args.count else ""
                print(f"subscribe: no event for {args.timeout:g} s ({received}{wanted} received) from {args.connect}; "
                      "is the pipeline running and publishing there?", file=sys.stderr)
                timed_out = True
                break
            continue
        _topic, payload = socket.recv_multipart()
        last = time.monotonic()
        event = json.loads(payload)
        received += 1
        print(json.dumps(event), flush=True)
        if not args.topic:  # with a topic filter, other topics' seq numbers are expected gaps
            for note in check.check(event):
                print(f"subscribe: {note}", file=sys.stderr, flush=True)
    print(f"subscribe: {summary(received, check, bool(args.topic))}", file=sys.stderr)
    if timed_out and args.count:
        return 1
    return 1 if args.expect_events and not received else 0


def summary(received: int, check: SequenceCheck, filtered: bool) -> str:
    line = f"{received} events received"
    if filtered or not received:
        return line
    publishers = len(check.publishers)
    line += f" from {publishers} publisher{'s' if publishers != 1 else ''}, {check.lost} lost"
    if check.missed_start:
        line += f", {check.missed_start} published before this subscriber joined"
    if check.repeated:
        line += f", {check.repeated} repeated"
    return line
