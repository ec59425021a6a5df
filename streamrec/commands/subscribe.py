"""``run_stream.py subscribe``: print a pipeline's events as JSON lines and report lost ones."""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from streamrec.errors import StreamrecError
from streamrec.events import load_curve_key


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", default="tcp://127.0.0.1:5555", help="publisher address (default %(default)s)")
    parser.add_argument("--topic", action="append", default=[],
                        help="only events whose topic starts with this (e.g. 'lobby.' or 'lobby.action_start'); repeatable")
    parser.add_argument("--count", type=int, help="exit after this many events")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds without an event")
    parser.add_argument("--curve-server-key", metavar="FILE", help="the publisher's public key file (CURVE)")
    parser.add_argument("--curve-key", metavar="FILE", help="this subscriber's secret key file (CURVE)")


def main(args: argparse.Namespace) -> int:
    context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    if args.curve_server_key or args.curve_key:
        if not (args.curve_server_key and args.curve_key):
            raise StreamrecError("CURVE needs both --curve-server-key (the publisher's .key) and --curve-key "
                                 "(this subscriber's .key_secret)")
        socket.curve_serverkey, _ = load_curve_key(args.curve_server_key, secret=False)
        socket.curve_publickey, socket.curve_secretkey = load_curve_key(args.curve_key, secret=True)
    for topic in args.topic or [""]:
        socket.setsockopt_string(zmq.SUBSCRIBE, topic)
    socket.connect(args.connect)
    received, expected_seq, lost = 0, None, 0
    try:
        while args.count is None or received < args.count:
            timeout_ms = int(args.timeout * 1000) if args.timeout is not None else None
            if not socket.poll(timeout_ms):
                wanted = f" of {args.count}" if args.count else ""
                print(f"subscribe: no event for {args.timeout:g} s ({received}{wanted} received) from {args.connect}; "
                      "is the pipeline running and publishing there?", file=sys.stderr)
                return 1 if args.count else 0
            _topic, payload = socket.recv_multipart()
            event = json.loads(payload)
            received += 1
            print(json.dumps(event), flush=True)
            if not args.topic:  # with a topic filter, other topics' seq numbers are expected gaps
                seq = event.get("seq")
                if expected_seq is not None and seq is not None and seq > expected_seq:
                    lost += seq - expected_seq
                    print(f"subscribe: gap: events {expected_seq}..{seq - 1} missing ({lost} lost so far)",
                          file=sys.stderr, flush=True)
                expected_seq = seq + 1 if seq is not None else expected_seq
    except KeyboardInterrupt:
        pass
    finally:
        socket.close()
    if lost:
        print(f"subscribe: {received} events received, {lost} lost", file=sys.stderr)
    return 0
