"""Faults on demand, for tests and ``bench reliability``: a real RTSP camera that can be frozen
and killed, and a loopback TCP proxy that injects network faults.

`RtspServer` runs GStreamer's RTSP server (``rtsp_server.py``) in its own process: `pause`
freezes it with SIGSTOP (its connections stay open, nothing flows), `stop` kills it.


`FaultProxy`: kernel traffic shaping (netem) is not available everywhere, so network faults
are made in user space: a client connects to the proxy's port instead of the server's, and the proxy forwards both
directions until told to misbehave:

- `freeze`: stop forwarding without closing anything (a hung camera, a stalled link);
- `drop`: close every open connection (a camera reboot, a NAT timeout); new ones are accepted;
- `throttle`: forward at most N bytes a second each way (a congested uplink);
- `delay`: hold every chunk for N seconds before forwarding it (a long path).

`clear` ends every fault. One thread runs every connection with a selector; the proxy never
blocks its caller.
"""

from __future__ import annotations

import heapq
import itertools
import select
import selectors
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 65536
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter with Debian's PyGObject and GStreamer bindings


def rtsp_server_available() -> bool:
    """GStreamer's RTSP server can be started here (Debian: gir1.2-gst-rtsp-server-1.0 python3-gi)."""
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return Path(SYSTEM_PYTHON).exists() and subprocess.run([SYSTEM_PYTHON, "-c", check],
                                                           capture_output=True).returncode == 0


class RtspServer:
    """GStreamer's RTSP server in its own process, on loopback; can be frozen, killed and restarted."""

    SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    def url(self, credentials: str = "", port: int | None = None) -> str:
        """Its stream's URL (through ``port``, e.g. a `FaultProxy`'s, when given)."""
        return f"rtsp://{credentials}127.0.0.1:{port or self.port}/cam"

    def start(self, size: str = "320x240") -> "RtspServer":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(self.SCRIPT), str(self.port), "/cam", size],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"RTSP server did not start: {line} {self.process.stderr.read()}")
        return self

    def pause(self) -> None:
        """Freeze the server without closing its connections: a stall, as a hung camera does."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
            self.process = None


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: bytes read from ``source``, waiting to go to ``sink``."""

    source: socket.socket
    sink: socket.socket
    pending: bytearray = field(default_factory=bytearray)  # ready to send now
    delayed: list = field(default_factory=list)  # heap of (release time, order, bytes)
    allowance: float = 0.0  # bytes it may still send under a throttle
    closed: bool = False  # its source reached end of stream


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._pipes: list[_Pipe] = []
        self._lock = threading.Lock()
        self._frozen = False
        self._bytes_per_s: float | None = None
        self._delay_s = 0.0
        self._drop = False
        self._stopping = False
        self._order = itertools.count()
        self.connections = 0  # accepted so far
        self.dropped = 0  # connections closed by `drop`
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    # ------------------------------------------------------------------ faults, from any thread

    def freeze(self) -> None:
        self._frozen = True

    def drop(self) -> None:
        self._drop = True

    def throttle(self, bytes_per_s: float) -> None:
        for pipe in self._pipes:
            pipe.allowance = 0.0
        self._bytes_per_s = bytes_per_s

    def delay(self, seconds: float) -> None:
        self._delay_s = seconds

    def clear(self) -> None:
        """End every fault: forward freely again."""
        self._frozen, self._bytes_per_s, self._delay_s = False, None, 0.0

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(5)
        for pipe in self._pipes:
            _close(pipe.source, pipe.sink)
        self._listener.close()
        self._selector.close()

    # ------------------------------------------------------------------ the forwarding thread

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stopping:
            if self._drop:
                self._drop_all()
            now = time.monotonic()
            self._refill(now - last)
            last = now
            if self._frozen:  # take new connections (as a hung server's kernel does), move no data
                if select.select([self._listener], [], [], 0.01)[0]:
                    self._accept()
                continue
            for key, _ in self._selector.select(timeout=0.01):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._read(key.data)
            for pipe in list(self._pipes):
                self._send(pipe, time.monotonic())

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        server.setblocking(False)
        up, down = _Pipe(client, server), _Pipe(server, client)
        self._pipes += [up, down]
        self._selector.register(client, selectors.EVENT_READ, up)
        self._selector.register(server, selectors.EVENT_READ, down)
        self.connections += 1

    def _read(self, pipe: _Pipe) -> None:
        try:
            data = pipe.source.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_connection(pipe)
            return
        if self._delay_s:
            heapq.heappush(pipe.delayed, (time.monotonic() + self._delay_s, next(self._order), data))
        else:
            pipe.pending += data

    def _send(self, pipe: _Pipe, now: float) -> None:
        while pipe.delayed and pipe.delayed[0][0] <= now:
            pipe.pending += heapq.heappop(pipe.delayed)[2]
        if not pipe.pending:
            return
        size = len(pipe.pending) if self._bytes_per_s is None else min(len(pipe.pending), int(pipe.allowance))
        if size <= 0:
            return
        try:
            sent = pipe.sink.send(pipe.pending[:size])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_connection(pipe)
            return
        del pipe.pending[:sent]
        if self._bytes_per_s is not None:
            pipe.allowance -= sent

    def _refill(self, elapsed: float) -> None:
        """A throttle's allowance grows with time, up to a tenth of a second's worth."""
        if self._bytes_per_s is None:
            return
        for pipe in self._pipes:
            pipe.allowance = min(pipe.allowance + elapsed * self._bytes_per_s, self._bytes_per_s / 10)

    def _close_connection(self, pipe: _Pipe) -> None:
        """Close both directions of ``pipe``'s connection."""
        pair = [p for p in self._pipes if {p.source, p.sink} == {pipe.source, pipe.sink}]
        for each in pair:
            self._pipes.remove(each)
        for sock in (pipe.source, pipe.sink):
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        _close(pipe.source, pipe.sink)

    def _drop_all(self) -> None:
        self._drop = False
        connections = {frozenset((p.source, p.sink)) for p in self._pipes}
        for pipe in list(self._pipes):
            if pipe in self._pipes:
                self._close_connection(pipe)
        self.dropped += len(connections)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.close()
        except OSError:
            pass
