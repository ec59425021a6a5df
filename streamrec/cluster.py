"""Cluster mode: a config's streams sharded over Ray actors, with failover and one event record.

Roles (``run_stream.py cluster``; docs/cluster.md runs it on real machines):

- the driver (the command's process) hosts the `EventProxy` every worker publishes to, and
  the central `EventRecord`: one subscriber on the proxy that writes the event log, checks
  each publisher's sequence and hands events to stdout and broker sinks;
- one `Coordinator` actor, pinned to the driver's node, owns `Placement`: which worker each
  stream is assigned to, and the leases that let a worker serve it;
- `StreamWorker` actors, one per GPU (or per ``--worker-cpus`` CPUs), each run the ordinary
  `Pipeline` over the streams leased to it, with its own engine, publishing through the proxy.
  Ray restarts a worker whose node died (``max_restarts``) wherever there is room.

The invariant: a stream is served by at most one worker process at any moment. A worker
serves only streams it holds a lease on, and only until its lease runs out: ``lease_s`` after
it *sent* the heartbeat that renewed it, so it stops serving before the coordinator can count
the lease as lapsed. The coordinator hands a stream to another process (a restarted worker
is another process: its publisher id is new) only when the holder has said it stopped
serving it, or ``lease_s + STOP_GRACE_S`` after the holder's last renewal *arrived*, the grace
covering the holder's pipeline shutdown. Every hand-over raises the stream's epoch, which its
status events carry. This holds across partitions too (a cut-off worker stops on its own),
given clocks that run at the same rate and a pipeline that stops within the grace.

Rebalancing moves streams only through that hand-over. Streams of a worker silent for
``lost_after_s`` go to the live workers at once (`Placement.reassign_lost`); every
``rebalance_s`` the driver also adds workers for new capacity (a node that joined) and evens
the streams out over the ready workers (`Placement.rebalance`).

Ray is imported only where the actors and the driver need it: the placement logic is plain
Python, tested on a fake clock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streamrec import interrupts
from streamrec.config import Config, config_from_dict
from streamrec.errors import StreamrecError
from streamrec.events import Event, EventBus, EventProxy, SequenceCheck, Sink
from streamrec.pipeline import JOIN_TIMEOUT_S

log = logging.getLogger(__name__)
INSTALL = "pip install 'streamrec[cluster]'"
STOP_GRACE_S = JOIN_TIMEOUT_S + 2.0  # a holder whose lease ran out has this long to stop its pipeline
HEARTBEATS_PER_LEASE = 4  # a worker renews 4 times a lease: 3 heartbeats may fail before it stops serving
SUBSCRIBER_WAIT_S = 10.0  # a worker waits this long for the record's subscription before publishing
DRIVER_TICK_S = 1.0


# --------------------------------------------------------------------------- placement (plain Python)


@dataclass(frozen=True)
class Grant:
    """A stream a worker may serve now: under which epoch, and the node that served it before."""

    epoch: int
    moved_from: str | None  # the previous holder's node, if the stream was served before


@dataclass(frozen=True)
class Orders:
    """The coordinator's answer to a heartbeat: serve exactly these streams (or stop)."""

    streams: dict[str, Grant]
    lease_s: float
    stop: bool = False


@dataclass
class Lease:
    holder: str  # the publisher id of the worker process holding it: one per process
    worker: str
    node: str
    epoch: int
    renewed_at: float
    moved_from: str | None


@dataclass
class Incarnation:
    """One worker process, named by its publisher id, as its heartbeats described it."""

    publisher: str
    worker: str
    node: str
    host: str
    started_at: float
    last_seen: float
    emitted: int = 0  # events its bus had emitted by its last heartbeat
    ready: bool = False  # its engine is built
    done: bool = False  # it stopped when asked, its bus closed: ``emitted`` is final
    error: str | None = None


@dataclass
class Worker:
    name: str
    created_at: float
    publisher: str | None = None  # the current incarnation

    def seen_at(self, incarnations: dict[str, Incarnation]) -> float:
        return incarnations[self.publisher].last_seen if self.publisher else self.created_at


@dataclass(frozen=True)
class Move:
    """A stream leased to a worker process: where it runs from then on."""

    stream: str
    epoch: int
    worker: str
    node: str
    moved_from: str | None
    at: float


class Placement:
    """Which worker serves which stream, and the leases that keep two from serving one (see
    the module docstring for the rule). Every method is called one at a time (the coordinator
    actor runs one call at a time); ``clock`` is injectable for tests.

    ``quiet`` (after a coordinator restart, when earlier leases are unknown) grants nothing
    until every lease handed out before could have lapsed.
    """

    def __init__(self, streams: list[str], workers: list[str], *, lease_s: float, lost_after_s: float,
                 grace_s: float = STOP_GRACE_S, clock: Callable[[], float] = time.monotonic, quiet: bool = False):
        if not workers:
            raise StreamrecError("no worker to place streams on")
        self.lease_s, self.grace_s, self.lost_after_s, self.clock = lease_s, grace_s, lost_after_s, clock
        now = clock()
        self.workers = {name: Worker(name, now) for name in workers}
        self.assigned = {stream: workers[index % len(workers)] for index, stream in enumerate(streams)}
        self.ended: set[str] = set()
        self.leases: dict[str, Lease] = {}
        self.epochs = dict.fromkeys(streams, 0)
        self.last_node: dict[str, str] = {}
        self.incarnations: dict[str, Incarnation] = {}
        self.moves: list[Move] = []
        self.stopping = False
        self.grants_from = now + lease_s + grace_s if quiet else now

    # ------------------------------------------------------------------ worker side

    def heartbeat(self, worker: str, publisher: str, node: str, host: str, *, emitted: int, running: set[str],
                  ended: set[str] = frozenset(), epochs: dict[str, int] | None = None, ready: bool = False,
                  done: bool = False, error: str | None = None) -> Orders:
        """A worker process reports; the answer says which streams it may serve until its next
        heartbeat. ``running``: every stream a pipeline of this process may still be touching;
        ``epochs``: the epochs it was granted, so a restarted coordinator counts on from them."""
        now = self.clock()
        for stream, epoch in (epochs or {}).items():
            if stream in self.epochs:
                self.epochs[stream] = max(self.epochs[stream], epoch)
        incarnation = self.incarnations.get(publisher)
        if incarnation is None:
            incarnation = self.incarnations[publisher] = Incarnation(publisher, worker, node, host, now, now)
        incarnation.last_seen, incarnation.emitted = now, emitted
        incarnation.ready, incarnation.done, incarnation.error = ready, done, error
        self.workers.setdefault(worker, Worker(worker, now)).publisher = publisher  # known after a restart too
        self.ended |= set(ended)
        for stream, lease in list(self.leases.items()):
            if lease.holder != publisher:
                continue
            if stream in running or (self.assigned.get(stream) == worker and self._servable(stream) and not done):
                lease.renewed_at = now
            else:
                del self.leases[stream]  # it said it stopped serving it: free for another at once
        if self.stopping or done:
            return Orders({}, self.lease_s, stop=True)
        if error or now < self.grants_from:
            return Orders({}, self.lease_s)
        grants = {}
        for stream, owner in self.assigned.items():
            if owner != worker or not self._servable(stream):
                continue
            lease = self.leases.get(stream)
            if lease is not None and lease.holder != publisher:
                if self._held(lease, now):
                    continue  # its holder may still be serving it
                log.info("stream %s: lease of worker %s (publisher %s) lapsed", stream, lease.worker, lease.holder)
                lease = None
            if lease is None:
                lease = self._lease(stream, worker, publisher, node, now)
            grants[stream] = Grant(lease.epoch, lease.moved_from)
        return Orders(grants, self.lease_s)

    def _held(self, lease: Lease, now: float) -> bool:
        """Its holder may still be serving the stream (or stopping its pipeline)."""
        return now < lease.renewed_at + self.lease_s + self.grace_s

    def _servable(self, stream: str) -> bool:
        return stream not in self.ended and not self.stopping

    def _lease(self, stream: str, worker: str, publisher: str, node: str, now: float) -> Lease:
        self.epochs[stream] += 1
        lease = Lease(publisher, worker, node, self.epochs[stream], now, self.last_node.get(stream))
        self.leases[stream] = lease
        self.last_node[stream] = node
        self.moves.append(Move(stream, lease.epoch, worker, node, lease.moved_from, now))
        return lease

    # ------------------------------------------------------------------ driver side

    def add_worker(self, name: str) -> None:
        self.workers.setdefault(name, Worker(name, self.clock()))

    def live_workers(self, ready_only: bool = False) -> list[str]:
        """Workers heard from within ``lost_after_s`` (a new one counts from its creation)."""
        now = self.clock()
        live = []
        for name, worker in self.workers.items():
            incarnation = self.incarnations.get(worker.publisher) if worker.publisher else None
            if now - worker.seen_at(self.incarnations) > self.lost_after_s or (incarnation and incarnation.error):
                continue
            if ready_only and not (incarnation and incarnation.ready):
                continue
            live.append(name)
        return live

    def reassign_lost(self) -> list[tuple[str, str, str]]:
        """Streams of workers silent for ``lost_after_s`` go to the live workers, fewest streams
        first; (stream, from, to) for each. Their leases must still lapse before they run."""
        live = self.live_workers()
        if not live:
            return []
        moves = []
        for stream, owner in sorted(self.assigned.items()):
            if owner not in live and self._servable(stream):
                target = min(live, key=lambda name: (self._load(name), name))
                self.assigned[stream] = target
                moves.append((stream, owner, target))
        return moves

    def rebalance(self) -> list[tuple[str, str, str]]:
        """`reassign_lost`, then even the streams out over the ready workers (none serves two
        more than another); (stream, from, to) for each move."""
        moves = self.reassign_lost()
        ready = self.live_workers(ready_only=True)
        while len(ready) > 1:
            most = max(ready, key=lambda name: (self._load(name), name))
            least = min(ready, key=lambda name: (self._load(name), name))
            if self._load(most) - self._load(least) <= 1:
                break
            stream = max(s for s, owner in self.assigned.items() if owner == most and self._servable(s))
            self.assigned[stream] = least
            moves.append((stream, most, least))
        return moves

    def _load(self, worker: str) -> int:
        return sum(1 for s, owner in self.assigned.items() if owner == worker and self._servable(s))

    def stop(self) -> None:
        self.stopping = True

    def finished(self) -> bool:
        """Every stream ended (a file played to its end, a source given up) and no worker still
        serves one (its last views and events)."""
        now = self.clock()
        return self.ended >= set(self.assigned) and not any(self._held(lease, now) for lease in self.leases.values())

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the driver: assignments, leases, worker processes, moves."""
        return {
            "assigned": dict(self.assigned),
            "ended": sorted(self.ended),
            "leases": {s: dataclasses.asdict(lease) for s, lease in self.leases.items()},
            "incarnations": {p: dataclasses.asdict(i) for p, i in self.incarnations.items()},
            "workers": {name: w.publisher for name, w in self.workers.items()},
            "moves": [dataclasses.asdict(m) for m in self.moves],
            "finished": self.finished(),
            "now": self.clock(),
        }


class Coordinator(Placement):
    """`Placement` as a Ray actor. It starts quiet, as a restarted one must (it knows no lease
    handed out before); the driver ends that at once with `begin`, called once and never
    retried, so only the first start skips the wait."""

    def __init__(self, streams: list[str], workers: list[str], lease_s: float, lost_after_s: float):
        super().__init__(streams, workers, lease_s=lease_s, lost_after_s=lost_after_s, quiet=True)

    def begin(self) -> None:
        self.grants_from = self.clock()


# --------------------------------------------------------------------------- the worker


class PlacedBus(EventBus):
    """A worker's event bus: status events also say where the stream runs (``node``, ``host``,
    ``worker``) and under which lease ``epoch``."""

    def __init__(self, sinks: list[Sink], place: dict[str, str]):
        super().__init__(sinks)
        self.place = place
        self.epochs: dict[str, int] = {}
        self.handing_over: set[str] = set()  # streams whose pipeline is stopped for a move

    def emit(self, type: str, stream: str, **fields: Any) -> dict[str, Any]:
        if type == "status":
            if stream in self.handing_over and fields.get("state") == "ended":
                fields["detail"] = f"handed over to another worker ({fields.get('detail')})"
            fields = {**fields, **self.place, "epoch": self.epochs.get(stream)}
        return super().emit(type, stream, **fields)


def worker_config(config: Config, frontend: str) -> Config:
    """A worker's config: events go only to the driver's proxy; the driver keeps the log,
    stdout and broker sinks."""
    events = dataclasses.replace(config.events, publish=f"connect:{frontend}", stdout=False, event_log=None,
                                 sinks=(), metrics=None)
    return config.replace(events=events)


class StreamWorker:
    """A Ray actor serving the streams its leases allow with one engine and one `Pipeline`.

    Its constructor returns at once; a thread heartbeats to the coordinator, builds the
    engine, and (re)starts the pipeline whenever its set of leased streams changes. Ray
    re-runs the constructor on a restart: a new process, a new publisher id.
    """

    def __init__(self, name: str, config_data: dict[str, Any], coordinator: str, frontend: str):
        import ray

        from streamrec.cli import log_to_stderr, quiet_libraries
        from streamrec.events import ZmqPublisher
        from streamrec.redaction import show_query_keys

        quiet_libraries()
        log_to_stderr()
        self.name = name
        self.coordinator = ray.get_actor(coordinator)  # by name: a handle among the arguments would stop restarts
        self.config = worker_config(config_from_dict(config_data, "the driver's config"), frontend)
        show_query_keys(self.config.events.show_query_keys)
        self.place = {"node": ray.get_runtime_context().get_node_id(), "host": ray.util.get_node_ip_address(),
                      "worker": name}
        self.publisher = ZmqPublisher(self.config.events.publish, self.config.events.send_hwm)
        self.bus = PlacedBus([self.publisher], self.place)
        self.engine = self.labels = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.pipeline = None
        self.pipeline_thread: threading.Thread | None = None
        self.serving: frozenset[str] = frozenset()
        self.stopping_pipeline = False
        self.ended: set[str] = set()
        self.announced: dict[str, int] = {}  # stream -> the epoch its placement status was emitted for
        threading.Thread(target=self._prepare, name="worker-prepare", daemon=True).start()
        threading.Thread(target=self._serve, name="worker-leases", daemon=True).start()

    def _prepare(self) -> None:
        """Wait for the record's subscription (events before it would be lost), then build the engine."""
        from streamrec.backends import create_engine
        from streamrec.config import load_labels

        try:
            if not self.publisher.wait_for_subscriber(SUBSCRIBER_WAIT_S):
                log.warning("worker %s: no subscription from the driver's record after %.0f s; publishing anyway",
                            self.name, SUBSCRIBER_WAIT_S)
            self.labels = load_labels(self.config)
            self.engine = create_engine(self.config)
            self.ready.set()
        except StreamrecError as err:
            self.error = str(err)
        except Exception as exc:  # noqa: BLE001 (reported to the driver, which ends the run with it)
            log.exception("worker %s: the engine could not be built", self.name)
            self.error = f"worker {self.name}: the engine could not be built ({type(exc).__name__}: {exc})"

    def _serve(self) -> None:
        interval = None
        deadline = 0.0  # serve nothing past this (monotonic): the lease's end, counted from the heartbeat's sending
        granted: dict[str, Grant] = {}
        while True:
            self._collect_pipeline()
            sent = time.monotonic()
            orders = self._heartbeat(timeout=interval)
            if orders is not None:
                deadline, granted = sent + orders.lease_s, orders.streams
                interval = orders.lease_s / HEARTBEATS_PER_LEASE
                if orders.stop:
                    return self._finish()
            if time.monotonic() >= deadline:
                granted = {}  # the lease may have lapsed: stop serving before anyone else may start
            self._apply(granted)
            time.sleep(interval or 0.5)

    def _heartbeat(self, timeout: float | None, done: bool = False) -> Orders | None:
        import ray

        running = set(self.serving) if self.pipeline is not None else set()
        try:
            return ray.get(self.coordinator.heartbeat.remote(
                self.name, self.bus.publisher, self.place["node"], self.place["host"], emitted=self.bus.seq,
                running=running, ended=set(self.ended), epochs=dict(self.bus.epochs), ready=self.ready.is_set(),
                done=done, error=self.error),
                timeout=timeout or 10.0)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            log.warning("worker %s: heartbeat failed (%s)", self.name, type(exc).__name__)
            return None

    def _apply(self, granted: dict[str, Grant]) -> None:
        """Make the pipeline serve exactly the granted streams: stop it when they changed,
        start one once the old one has ended."""
        wanted = frozenset(s for s in granted if s not in self.ended)
        if self.pipeline is not None:
            if wanted != self.serving - self.ended and not self.stopping_pipeline:  # ended ones close on their own
                self.stopping_pipeline = True
                self.bus.handing_over = set(self.serving - wanted - self.ended)
                self.pipeline.stop()
            return
        if wanted and self.ready.is_set():
            self._start_pipeline(wanted, granted)

    def _start_pipeline(self, wanted: frozenset[str], granted: dict[str, Grant]) -> None:
        from streamrec.pipeline import Pipeline

        for stream in sorted(wanted):
            grant = granted[stream]
            if self.announced.get(stream) == grant.epoch:
                continue  # still under the lease it was placed with: the pipeline only restarted
            self.announced[stream] = self.bus.epochs[stream] = grant.epoch
            if grant.moved_from and grant.moved_from != self.place["node"]:
                detail = f"moved from node {grant.moved_from} to node {self.place['node']}"
            else:
                detail = f"placed on node {self.place['node']}"
            self.bus.emit("status", stream, state="connecting", detail=f"{detail} ({self.name}, epoch {grant.epoch})",
                          moved_from=grant.moved_from)
        config = self.config.replace(streams=tuple(s for s in self.config.streams if s.id in wanted))
        self.bus.handing_over = set()
        try:
            self.pipeline = Pipeline(config, self.engine, self.labels, self.bus)
        except StreamrecError as err:
            self.error = str(err)
            return
        self.serving, self.stopping_pipeline = wanted, False
        self.pipeline_thread = threading.Thread(target=self._run_pipeline, args=(self.pipeline,),
                                                name="worker-pipeline", daemon=True)
        self.pipeline_thread.start()

    def _run_pipeline(self, pipeline) -> None:
        try:
            pipeline.run()
        except StreamrecError as err:
            log.error("worker %s: %s", self.name, err)
        except Exception:  # noqa: BLE001 (streams that ended are reported; the others start again)
            log.exception("worker %s: the pipeline failed", self.name)

    def _collect_pipeline(self) -> None:
        """Note streams that ended on their own; forget a pipeline whose run returned."""
        if self.pipeline is None:
            return
        if not self.stopping_pipeline:
            self.ended |= {s for s, stats in self.pipeline.stats().items() if stats.state == "ended"}
        if not self.pipeline_thread.is_alive():
            self.pipeline = self.pipeline_thread = None
            self.serving = frozenset()

    def _finish(self) -> None:
        """Stop serving, let the last events leave, and report the final count."""
        if self.pipeline is not None:
            self.stopping_pipeline = True
            self.pipeline.stop()
            self.pipeline_thread.join()
            self._collect_pipeline()
        self.bus.close()  # the publisher's linger lets queued events leave
        self._heartbeat(timeout=10.0, done=True)


# --------------------------------------------------------------------------- the central record


class EventRecord:
    """The one subscriber on the proxy: every event, from every worker process, goes to the
    sinks (the event log first) and through one `SequenceCheck`, so gaps show per publisher.

    It also times moves: when a stream's first ``live`` status comes from another publisher
    than its previous events, how long the stream was silent.
    """

    def __init__(self, backend: str, sinks: list[Sink]):
        import zmq

        self.sinks = sinks
        self.check = SequenceCheck()
        self.moves: list[dict[str, Any]] = []
        self._last: dict[str, tuple[str, float]] = {}  # stream -> (publisher, time) of its latest event
        self._before_move: dict[str, tuple[str, float]] = {}  # stream -> the old publisher's last event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)  # never drop here: the record is the point
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(backend)
        self._thread = threading.Thread(target=self._receive, name="event-record", daemon=True)

    def start(self) -> "EventRecord":
        self._thread.start()
        return self

    def _receive(self) -> None:
        while not self._stop.is_set():
            if not self.socket.poll(200):
                continue
            parts = self.socket.recv_multipart()
            try:
                fields = json.loads(parts[-1])
                topic, payload = parts[0].decode(), parts[-1].decode()
                if not (isinstance(fields, dict) and isinstance(fields.get("stream"), str) and "type" in fields):
                    raise ValueError("not an event")
            except (ValueError, UnicodeDecodeError):
                log.warning("event record: skipped a message that is not a streamrec event")
                continue
            self._take(Event(topic, payload, fields, time.monotonic()))

    def _take(self, event: Event) -> None:
        fields = event.fields
        with self._lock:
            for note in self.check.check(fields):
                (log.debug if note.endswith(" started") else log.warning)("event record: %s", note)
            self._time_moves(fields, event.emitted_at)
        for sink in self.sinks:
            sink.write(event)

    def _time_moves(self, fields: dict[str, Any], now: float) -> None:
        stream, publisher = fields["stream"], fields.get("publisher", "")
        previous = self._last.get(stream)
        if previous and previous[0] != publisher and stream not in self._before_move:
            self._before_move[stream] = previous
        self._last[stream] = (publisher, now)
        before = self._before_move.get(stream)
        if before and before[0] != publisher and fields["type"] == "status" and fields.get("state") == "live":
            del self._before_move[stream]
            move = {"stream": stream, "from_publisher": before[0], "to_publisher": publisher,
                    "node": fields.get("node"), "worker": fields.get("worker"), "silent_s": round(now - before[1], 2)}
            self.moves.append(move)
            log.info("stream %s live again on %s at node %s: silent for %.1f s", stream, move["worker"],
                     short(move["node"]), move["silent_s"])

    def received(self, publisher: str) -> int:
        """The next seq expected from ``publisher``: all of 0..N-1 arrived when it has no gap."""
        with self._lock:
            record = self.check.publishers.get(publisher)
            return record.next_seq if record else 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close(0)
        for sink in self.sinks:
            sink.close()


def short(node: str | None) -> str:
    """A node id as logs show it (events carry the whole id)."""
    return (node or "?")[:8]


def publisher_report(record: EventRecord, incarnations: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker process: what the record received against what it emitted. A process that
    finished reported its final count; one lost with its node reported a count at its last
    heartbeat, so the events it took with it are at least the difference."""
    rows = []
    for publisher, seen in sorted(record.check.publishers.items()):
        incarnation = incarnations.get(publisher, {})
        emitted = incarnation.get("emitted", 0)
        row = {"publisher": publisher, "worker": incarnation.get("worker"), "node": incarnation.get("node"),
               "finished": incarnation.get("done", False), "received": seen.received,
               "first_seq": seen.first_seq, "last_seq": seen.next_seq - 1, "gaps_lost": seen.lost,
               "emitted_reported": emitted, "tail_lost": max(0, emitted - seen.next_seq)}
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"  # a Ray address, ``auto`` (the cluster `ray start` runs here) or ``local``
    workers: int | None = None  # None: one per GPU, or per ``worker_cpus`` CPUs, never more than streams
    worker_cpus: int | None = None  # CPUs each worker reserves (default 1 beside a GPU, 4 without)
    frontend: str | None = None  # where workers publish; None: this node's Ray address, port 5559
    backend: str = "tcp://127.0.0.1:5560"  # where other subscribers connect
    lease_s: float = 10.0
    lost_after_s: float = 30.0
    rebalance_s: float = 60.0
    max_restarts: int = -1  # Ray restarts a worker whose process or node died this often (-1: always)
    report: str | None = None  # write the run's placements, moves and record check here (JSON)
    stop_timeout_s: float = 30.0  # how long the workers get to stop and flush at the end


def import_ray():
    try:
        import ray
    except ImportError:
        raise StreamrecError(f"cluster mode needs Ray: {INSTALL}") from None
    return ray


def connect(ray, address: str) -> None:
    """Join the Ray cluster at ``address`` as its driver (``local``: start a one-machine cluster)."""
    hint = "start one with `ray start --head` (then --address auto or HEAD:6379), or pass --address local"
    host, _, port = address.rpartition(":")
    if "://" not in address and port.isdigit():  # Ray would retry a dead address for minutes: ask once first
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except OSError as exc:
            raise StreamrecError(f"cannot join a Ray cluster at --address {address}: nothing answers there "
                                 f"({exc.strerror or exc}); {hint}") from None
    try:
        if address == "local":
            ray.init(include_dashboard=False, logging_level=logging.WARNING, namespace="streamrec")
        else:
            ray.init(address=address, logging_level=logging.WARNING, namespace="streamrec")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StreamrecError(f"cannot join a Ray cluster at --address {address} ({first}); {hint}") from None


def worker_resources(ray, config: Config, options: ClusterOptions) -> tuple[dict[str, float], int, str]:
    """(Ray resources of one worker, how many fit in the cluster now, what a worker is, in words)."""
    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 0)), int(total.get("GPU", 0))
    if gpus and config.engine.device != "cpu":
        per = options.worker_cpus or 1
        return {"num_gpus": 1, "num_cpus": per}, min(gpus, cpus // per), f"1 GPU and {per} CPU(s)"
    per = options.worker_cpus or 4
    return {"num_cpus": per}, cpus // per, f"{per} CPU(s)"


def absolute_paths(config: Config) -> Config:
    """The files workers read (video files, checkpoint, engine) named by absolute path, since a
    worker starts in another folder; a video file missing here is one line now."""
    from streamrec.sources import parse_source

    streams = []
    for stream in config.streams:
        spec = parse_source(stream.source)
        if spec.kind == "file":
            path = Path(spec.target)
            if not path.is_file():
                raise StreamrecError(f"stream {stream.id}: video file '{spec.display}' not found; every node reads it "
                                     "at the same path")
            stream = dataclasses.replace(stream, source=str(path.resolve()))
        streams.append(stream)
    engine = config.engine
    if engine.engine_file:
        engine = dataclasses.replace(engine, engine_file=str(Path(engine.engine_file).resolve()))
    checkpoint = str(Path(config.checkpoint).resolve()) if config.checkpoint else None
    return config.replace(streams=tuple(streams), engine=engine, checkpoint=checkpoint)


def advertised(endpoint: str, host: str) -> str:
    """The address workers connect to: a wildcard bind (0.0.0.0) is reached at this node's address."""
    return endpoint.replace("//0.0.0.0:", f"//{host}:").replace("//*:", f"//{host}:")


class Driver:
    """One cluster run: proxy, record, coordinator and workers, watched until every stream
    ended or a stop is asked for."""

    def __init__(self, ray, config: Config, options: ClusterOptions, sinks: list[Sink]):
        self.ray, self.config, self.options, self.sinks = ray, config, options, sinks
        self.streams = [s.id for s in config.streams]
        self.proxy: EventProxy | None = None
        self.record: EventRecord | None = None
        self.coordinator = None
        self.coordinator_name = f"coordinator-{secrets.token_hex(4)}"
        self.workers: dict[str, Any] = {}
        self.shown: dict[str, tuple] = {}  # stream -> (worker, node, epoch) as last logged
        self.error: str | None = None

    def start(self) -> None:
        ray, options = self.ray, self.options
        host = ray.util.get_node_ip_address()
        self.proxy = EventProxy(options.frontend or f"tcp://{host}:5559", options.backend).start()
        self.record = EventRecord(self.proxy.backend_address, self.sinks).start()
        self.frontend = advertised(self.proxy.frontend_address, host)
        self.resources, capacity, kind = worker_resources(ray, self.config, options)
        count = min(options.workers or capacity, len(self.streams))
        if count < 1:
            total = ray.cluster_resources()
            raise StreamrecError(f"the Ray cluster ({int(total.get('CPU', 0))} CPU(s), {int(total.get('GPU', 0))} "
                                 f"GPU(s)) has no room for a worker of {kind}; lower --worker-cpus or add nodes")
        names = [f"worker-{i}" for i in range(count)]
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.coordinator = ray.remote(Coordinator).options(
            name=self.coordinator_name, num_cpus=0, max_restarts=-1, scheduling_strategy=here).remote(
            self.streams, names, options.lease_s, options.lost_after_s)
        ray.get(self.coordinator.begin.remote())  # once: a retry could reach a restarted coordinator
        for name in names:
            self._start_worker(name)
        log.info("cluster: %d stream(s) on %d worker(s) of %s; workers publish to %s, subscribers connect to %s",
                 len(self.streams), count, kind, self.frontend, self.proxy.backend_address)

    def _start_worker(self, name: str) -> None:
        self.workers[name] = self.ray.remote(StreamWorker).options(
            **self.resources, max_restarts=self.options.max_restarts, scheduling_strategy="SPREAD").remote(
            name, self.config.to_dict(), self.coordinator_name, self.frontend)

    def _ask(self, method: str, *args: Any) -> Any:
        """A coordinator call, asked again while Ray restarts the coordinator (every call but
        `Coordinator.begin` may run twice)."""
        deadline = time.monotonic() + self.options.stop_timeout_s
        while True:
            try:
                return self.ray.get(getattr(self.coordinator, method).remote(*args))
            except self.ray.exceptions.RayActorError:
                if time.monotonic() > deadline:
                    raise StreamrecError("the cluster's coordinator actor is gone and was not restarted; see Ray's "
                                         "log (ray status)") from None
                time.sleep(DRIVER_TICK_S)

    def watch(self, stop_requested: Callable[[], bool]) -> None:
        next_rebalance = time.monotonic() + self.options.rebalance_s
        while not stop_requested():
            snapshot = self._ask("snapshot")
            self._log_placement(snapshot)
            errors = [i["error"] for i in snapshot["incarnations"].values() if i["error"]]
            if errors:
                self.error = errors[0]
                return
            if snapshot["finished"]:
                log.info("cluster: every stream ended")
                return
            for stream, old, new in self._ask("reassign_lost"):
                log.warning("stream %s: %s is lost; %s takes it", stream, old, new)
            if time.monotonic() >= next_rebalance:
                self._grow()
                for stream, old, new in self._ask("rebalance"):
                    log.info("rebalance: stream %s moves from %s to %s", stream, old, new)
                next_rebalance = time.monotonic() + self.options.rebalance_s
            time.sleep(DRIVER_TICK_S)

    def _grow(self) -> None:
        """Workers for capacity the cluster gained (a node joined); without --workers only."""
        if self.options.workers:
            return
        _, capacity, _ = worker_resources(self.ray, self.config, self.options)
        for index in range(len(self.workers), min(capacity, len(self.streams))):
            name = f"worker-{index}"
            self._ask("add_worker", name)
            self._start_worker(name)
            log.info("cluster: capacity grew; %s started", name)

    def _log_placement(self, snapshot: dict[str, Any]) -> None:
        for stream, lease in sorted(snapshot["leases"].items()):
            place = (lease["worker"], lease["node"], lease["epoch"])
            if self.shown.get(stream) != place:
                self.shown[stream] = place
                moved = f", moved from node {short(lease['moved_from'])}" if lease["moved_from"] else ""
                log.info("stream %s: %s at node %s, epoch %d%s", stream, lease["worker"], short(lease["node"]),
                         lease["epoch"], moved)

    def stop(self) -> dict[str, Any] | None:
        """Ask every worker to stop; wait for the final counts of those still answering and for
        their last events to reach the record; end the actors, the record and the proxy. The
        last snapshot (None if the coordinator never started)."""
        snapshot = None
        try:
            if self.coordinator is not None:
                self._ask("stop")
                snapshot = self._ask("snapshot")
                deadline = time.monotonic() + self.options.stop_timeout_s
                while time.monotonic() < deadline and not self._flushed(snapshot):
                    time.sleep(0.2)
                    snapshot = self._ask("snapshot")
        finally:
            for actor in [*self.workers.values(), *([self.coordinator] if self.coordinator else [])]:
                self.ray.kill(actor, no_restart=True)
            if self.record is not None:
                self.record.stop()
            else:
                for sink in self.sinks:
                    sink.close()
            if self.proxy is not None:
                self.proxy.stop()
        return snapshot

    def _flushed(self, snapshot: dict[str, Any]) -> bool:
        """Every worker process still answering has stopped and the record has all it emitted."""
        answering = [i for i in snapshot["incarnations"].values()
                     if snapshot["now"] - i["last_seen"] < self.options.lease_s]
        return all(i["done"] and self.record.received(i["publisher"]) >= i["emitted"] for i in answering)


def run_cluster(config: Config, options: ClusterOptions, sinks: list[Sink],
                stop_requested: Callable[[], bool]) -> int:
    """Serve ``config``'s streams on the Ray cluster at ``options.address`` until every stream
    ended or ``stop_requested``; report the record's check per publisher. The exit status."""
    ray = import_ray()
    driver = Driver(ray, config, options, sinks)
    try:
        driver.config = absolute_paths(config)  # a missing file is one line before Ray is joined
        connect(ray, options.address)
        interrupts.install()  # ray.init took SIGTERM over
        driver.start()
        driver.watch(stop_requested)
    finally:
        snapshot = driver.stop()
        ray.shutdown()
    rows = publisher_report(driver.record, snapshot["incarnations"])
    for row in rows:
        fate = "finished" if row["finished"] else "lost with its node"
        lost = f", at least {row['tail_lost']} emitted after it and lost" if row["tail_lost"] else ""
        log.info("record: publisher %s (%s at node %s, %s): %d event(s), seq %d..%d, %d missing inside%s",
                 row["publisher"], row["worker"], short(row["node"]), fate, row["received"], row["first_seq"],
                 row["last_seq"], row["gaps_lost"], lost)
    if options.report:
        report = {"publishers": rows, "moves": driver.record.moves, "leases": snapshot["moves"],
                  "assigned": snapshot["assigned"], "ended": snapshot["ended"]}
        Path(options.report).write_text(json.dumps(report, indent=2) + "\n")
    if driver.error:
        raise StreamrecError(driver.error)
    return 0
