"""``bench reliability``: faults injected into a live camera, and bad inputs, against the real CLI.

Faults: one ``run_stream.py run`` process reads an RTSP camera (GStreamer's RTSP server) over
TCP through a `FaultProxy`, publishing on loopback to a ZeroMQ subscriber and logging every
event. One after another, each fault is injected for a while and then cleared: the proxy
freezes, drops the connection, throttles and delays; the camera process is frozen (SIGSTOP)
and killed and restarted. For each: whether the stream came back (survived), the time from
the fault's end to the first prediction after it, and the stream's states in between. Over
the whole run: events lost (gaps in the log's sequence, events the subscriber did not get,
actions started and never ended) and clips that span an outage (none may).

Bad inputs: each is given to the real CLI, which must exit non-zero with one ``error:`` line
and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from streamrec.bench.faults import FaultProxy, RtspServer
from streamrec.bench.report import Column, table
from streamrec.errors import StreamrecError

CLI = [sys.executable, "-m", "streamrec"]
STALL_TIMEOUT_S = 2.0
RUN_SETTINGS = [  # reopen quickly, report a stall after 2 s, and let the untrained-or-trained demo model act
    "--set", "reconnect.initial_delay_s=0.2", "--set", "reconnect.max_delay_s=1.0",
    "--set", "reconnect.max_retries=-1", "--set", "reconnect.open_timeout_s=2",
    "--set", f"pipeline.stall_timeout_s={STALL_TIMEOUT_S}",
    "--set", "postprocess.enter_threshold=0.1", "--set", "postprocess.exit_threshold=0.1",
    "--set", "postprocess.background_labels=[]",
]
RECOVERED_AFTER = 3  # predictions after a fault's end that count as the stream being back


@dataclass
class Camera:
    """What the faults act on."""

    server: RtspServer
    proxy: FaultProxy


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    seconds: float
    inject: Callable[[Camera], None]
    clear: Callable[[Camera], None]


def _restart(camera: Camera) -> None:
    camera.server.start()


FAULTS = (
    Fault("freeze", "the link stops moving data, connections stay open", 6.0,
          lambda c: c.proxy.freeze(), lambda c: c.proxy.clear()),
    Fault("drop", "every connection is closed at once", 0.0,
          lambda c: c.proxy.drop(), lambda c: None),
    Fault("throttle", "the link carries 16 kB/s each way", 6.0,
          lambda c: c.proxy.throttle(16_000), lambda c: c.proxy.clear()),
    Fault("delay", "every chunk is held 0.3 s each way", 6.0,
          lambda c: c.proxy.delay(0.3), lambda c: c.proxy.clear()),
    Fault("camera frozen", "the camera process is stopped (SIGSTOP), its connections open", 6.0,
          lambda c: c.server.pause(), lambda c: c.server.resume()),
    Fault("camera restart", "the camera process is killed and started again", 3.0,
          lambda c: c.server.stop(), _restart),
)


@dataclass
class FaultResult:
    name: str
    what: str
    seconds: float
    survived: bool
    back_after_s: float | None  # fault cleared -> first prediction after it
    states: list[str]  # the stream's status states from the injection to its recovery


@dataclass
class FaultRun:
    results: list[FaultResult]
    events: int
    sequence_gaps: int  # seq numbers missing from the event log
    not_received: int  # logged events the loopback subscriber did not get
    not_received_types: list[str]  # their types, in order
    actions_never_ended: int
    clips_spanning_an_outage: int
    end_reasons: dict[str, int]
    returncode: int
    traceback: bool
    state_restarts: int | None = None  # a streaming config's model state started again (the last status says)

    @property
    def events_lost(self) -> int:
        return self.sequence_gaps + self.not_received + self.actions_never_ended


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Subscriber(threading.Thread):
    """A ZeroMQ subscriber on loopback, keeping every event it receives."""

    def __init__(self, address: str):
        import zmq

        super().__init__(daemon=True)
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(address)
        self.received: list[dict] = []
        self.last_received = time.monotonic()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            if self.socket.poll(100):
                _, payload = self.socket.recv_multipart()
                self.received.append(json.loads(payload))
                self.last_received = time.monotonic()

    def close(self, quiet_s: float = 1.0, most_s: float = 10.0) -> None:
        """Stop once nothing has arrived for ``quiet_s`` (what is still in flight arrives first)."""
        deadline = time.monotonic() + most_s
        while time.monotonic() < deadline and time.monotonic() - self.last_received < quiet_s:
            time.sleep(0.05)
        self.stopping = True
        self.join(5)
        self.socket.close(0)


def run_faults(faults: tuple[Fault, ...] = FAULTS, workdir: Path | None = None,
               progress: Callable[[str], None] = lambda line: None, config: str = "slowfast_tiny") -> FaultRun:
    """Inject ``faults`` one after another into one running pipeline of ``config`` (a streaming
    config's model starts its state again after each outage); see the module docstring."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="streamrec-reliability-"))
    log_path, publish = workdir / "events.jsonl", f"tcp://127.0.0.1:{free_port()}"
    server = RtspServer(free_port()).start()
    proxy = FaultProxy(server.port).start()
    camera = Camera(server, proxy)
    subscriber = Subscriber(publish)
    subscriber.start()
    env = {**os.environ, "OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;tcp", "PYTHONUNBUFFERED": "1"}
    named = str(Path(config).resolve()) if Path(config).suffix in (".yaml", ".yml") else config  # the run's cwd is workdir
    process = subprocess.Popen(
        [*CLI, "run", "--config", named, "--source", f"cam={server.url(port=proxy.port)}",
         "--publish", publish, "--wait-subscriber", "30",  # no event lost to ZeroMQ's slow joiner
         "--predictions", "--quiet", "--event-log", str(log_path), *RUN_SETTINGS],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results = []
    try:
        _wait(log_path, lambda ev: len(_predictions(ev)) >= RECOVERED_AFTER, 90, "the first predictions", process)
        for fault in faults:
            progress(f"fault: {fault.name} ({fault.what}) for {fault.seconds:g} s")
            before = len(read_events(log_path))
            fault.inject(camera)
            time.sleep(fault.seconds)
            fault.clear(camera)
            cleared = time.time()
            results.append(_recovery(fault, log_path, before, cleared, process))
            progress(f"  {'back' if results[-1].survived else 'NOT back'}"
                     f"{f' after {results[-1].back_after_s:.1f} s' if results[-1].back_after_s is not None else ''}; "
                     f"states {' -> '.join(results[-1].states) or '(none)'}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        stderr = process.stderr.read()
        subscriber.close()
        proxy.stop()
        server.stop()
    return _summary(results, read_events(log_path), subscriber.received, returncode, stderr)


def _predictions(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "prediction"]


def _wait(path: Path, predicate, timeout: float, what: str, process: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = read_events(path)
        if predicate(events):
            return events
        if process.poll() is not None:
            raise StreamrecError(f"the pipeline exited ({process.returncode}) while waiting for {what}: "
                                 f"{process.stderr.read().strip()[-500:]}")
        time.sleep(0.2)
    raise StreamrecError(f"timed out after {timeout:g} s waiting for {what}")


def _recovery(fault: Fault, log_path: Path, before: int, cleared: float, process: subprocess.Popen) -> FaultResult:
    """Wait (up to 60 s) for predictions after the fault's end; what the stream went through."""
    def after(events):
        return [e for e in _predictions(events[before:]) if _wall_time(e) > cleared]

    try:
        events = _wait(log_path, lambda ev: len(after(ev)) >= RECOVERED_AFTER, 60, f"recovery from {fault.name}",
                       process)
        back = round(_wall_time(after(events)[0]) - cleared, 2)
    except StreamrecError:
        events, back = read_events(log_path), None
    states = [e["state"] for e in events[before:] if e["type"] == "status" and e["detail"] != "periodic"]
    return FaultResult(fault.name, fault.what, fault.seconds, back is not None, back, states)


def _wall_time(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def _summary(results: list[FaultResult], events: list[dict], received: list[dict], returncode: int,
             stderr: str) -> FaultRun:
    seqs = [e["seq"] for e in events]
    gaps = (max(seqs) + 1 - len(set(seqs))) if seqs else 0
    got = {e["seq"] for e in received}
    open_actions: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for event in events:
        if event["type"] == "action_start":
            open_actions[event["label"]] = open_actions.get(event["label"], 0) + 1
        elif event["type"] == "action_end":
            open_actions[event["label"]] = open_actions.get(event["label"], 0) - 1
            reasons[event["reason"]] = reasons.get(event["reason"], 0) + 1
    clip_s = _clip_seconds()
    spanning = sum(1 for e in _predictions(events) if e["clip_end"] - e["clip_start"] > clip_s + 0.5)
    missed = [e["type"] for e in events if e["seq"] not in got]
    statuses = [e for e in events if e["type"] == "status"]
    return FaultRun(results, len(events), gaps, len(missed), missed, sum(max(0, n) for n in open_actions.values()),
                    spanning, reasons, returncode, "Traceback" in stderr,
                    statuses[-1].get("state_restarts") if statuses else None)


def _clip_seconds() -> float:
    """Seconds one clip of the default model spans (a clip spanning an outage is far longer)."""
    from streamrec.config import DEFAULT_CONFIG, load_config
    from streamrec.sampling import clip_duration

    return clip_duration(load_config(DEFAULT_CONFIG).clip)


# --------------------------------------------------------------------------- bad inputs

BAD_INPUTS = (  # (what, arguments to `run_stream.py`)
    ("a camera index that is not there", ["run", "--source", "9"]),
    ("a missing video file", ["run", "--source", "/nonexistent/clip.mp4"]),
    ("an unknown config", ["run", "--config", "nope"]),
    ("a mistyped config key", ["run", "--set", "pipeline.hop_frame=4"]),
    ("an unreachable RTSP camera, with a password", ["run", "--source", "rtsp://cam:pw@127.0.0.1:1/live",
                                                     "--set", "reconnect.max_retries=1",
                                                     "--set", "reconnect.initial_delay_s=0.1"]),
    ("a label count unlike the model's", ["run", "--set", "model.num_classes=5"]),
    ("a zero hop", ["run", "--hop", "0"]),
    ("a malformed RTSP URL", ["run", "--source", "rtsp://bob:pw@[::1"]),
    ("a batch no machine can hold", ["run", "--set", "pipeline.max_batch=1000000000"]),
    ("a number beyond 64 bits", ["run", "--set", "pipeline.max_batch=99999999999999999999"]),
    ("a synthetic source at 0 fps", ["run", "--source", "synthetic:fps=0"]),
    ("a stall timeout of 0", ["run", "--set", "pipeline.stall_timeout_s=0"]),
    ("an event log capped at 0 MB", ["run", "--set", "events.event_log_max_mb=0"]),
    ("a subscriber address that is not one", ["subscribe", "--connect", "garbage"]),
    ("a key name that climbs out of its folder", ["keys", "../../etc/x", "--dir", "d"]),
)


@dataclass
class BadInputResult:
    what: str
    arguments: list[str]
    returncode: int
    error_line: str  # the last stderr line
    one_line: bool  # exits non-zero with an `error:` line and no traceback

    @property
    def ok(self) -> bool:
        return self.one_line


def try_bad_inputs(inputs=BAD_INPUTS, timeout: float = 90) -> list[BadInputResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="streamrec-bad-input-") as scratch:
        for what, arguments in inputs:
            done = subprocess.run([*CLI, *arguments, *_quiet(arguments)],
                                  capture_output=True, text=True, timeout=timeout, cwd=scratch)
            lines = done.stderr.strip().splitlines()
            last = lines[-1] if lines else ""
            results.append(BadInputResult(what, arguments, done.returncode, last,
                                          done.returncode != 0 and last.startswith("error: ")
                                          and "Traceback" not in done.stderr))
    return results


def _quiet(arguments: list[str]) -> list[str]:
    return ["--publish", "none", "--quiet"] if arguments[0] == "run" else []


def as_document(run: FaultRun | None, bad: list[BadInputResult]) -> dict:
    """The run's figures for the JSON document; ``run`` None where the faults were skipped."""
    if run is None:
        faults: dict = {"faults": None, "run": None}
    else:
        faults = {"faults": [asdict(r) for r in run.results],
                  "run": {k: v for k, v in asdict(run).items() if k != "results"} | {"events_lost": run.events_lost}}
    return faults | {"bad_inputs": [asdict(b) | {"ok": b.ok} for b in bad]}


FAULT_COLUMNS = [Column("fault", "name"), Column("what", "what"), Column("for s", "seconds", 1),
                 Column("survived", lambda r: "yes" if r["survived"] else "NO"),
                 Column("back after s", "back_after_s", 1), Column("states", lambda r: " -> ".join(r["states"]))]
BAD_INPUT_COLUMNS = [Column("bad input", "what"), Column("exit", "returncode"),
                     Column("one line, no traceback", lambda r: "yes" if r["ok"] else "NO"),
                     Column("what it said", "error_line")]


def summary_text(document: dict, markdown: bool = False) -> str:
    lines = []
    if document["faults"] is not None:
        run = document["run"]
        lines += [table(document["faults"], FAULT_COLUMNS, markdown), "",
                  f"One pipeline reading a live RTSP camera (GStreamer's RTSP server, H.264 320x240 at 30 fps) over "
                  f"TCP through a fault proxy on loopback, stall timeout {STALL_TIMEOUT_S:g} s; each fault injected "
                  f"for the time shown, then cleared. \"back after\": the fault's end to the first prediction after "
                  f"it. States: the stream's status events in between.", "",
                  f"Faults injected: {len(document['faults'])}, survived: "
                  f"{sum(r['survived'] for r in document['faults'])}. Events: {run['events']} published, "
                  f"**{run['events_lost']} lost** ({run['sequence_gaps']} gaps in the log's sequence, "
                  f"{run['not_received']} not received by the loopback subscriber, {run['actions_never_ended']} "
                  f"actions never ended); clips spanning an outage: {run['clips_spanning_an_outage']}; action ends by "
                  f"reason: {', '.join(f'{k} {v}' for k, v in sorted(run['end_reasons'].items())) or 'none'}; "
                  + (f"the streaming model's state started again {run['state_restarts']} times; "
                     if run.get("state_restarts") is not None else "") +
                  f"the pipeline exited {run['returncode']}{' with a TRACEBACK' if run['traceback'] else ''}.", ""]
    bad = document["bad_inputs"]
    lines += [table(bad, BAD_INPUT_COLUMNS, markdown), "",
              f"Bad inputs tried: {len(bad)}; answered with one `error:` line, a non-zero exit and no traceback: "
              f"{sum(b['ok'] for b in bad)}."]
    return "\n".join(lines)
