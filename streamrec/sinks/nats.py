"""``nats://[user:password@ | token@]host:4222/SUBJECT``: every event published to a NATS server.

Each event goes to the subject ``SUBJECT.<stream>.<type>`` (``SUBJECT`` defaults to
``streamrec``; ``.``, ``*``, ``>`` and spaces in a stream id become ``_``, as NATS reserves
them), so ``SUBJECT.lobby.>`` subscribes to one camera. A batch counts as delivered once the
server has answered the PING sent after it (``flush``): core NATS keeps nothing for subscribers
that are away, so to keep events across a subscriber's absence, or the server's restart, define
a JetStream stream over ``SUBJECT.>`` on the server: it stores what the server accepts.

Client: nats-py, NATS's own Python client (authentication, TLS and protocol changes stay its
business), run on an asyncio loop in a thread of the sink's own; its reconnecting is turned
off, because the sink's buffer holds events while the server is away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from streamrec.errors import StreamrecError
from streamrec.events import Event
from streamrec.sinks import SinkURL, register_sink
from streamrec.sinks.buffered import ACK_TIMEOUT_S, CONNECT_TIMEOUT_S, BrokerSink

RESERVED = str.maketrans({".": "_", "*": "_", ">": "_", " ": "_", "\t": "_"})


def subject_token(text: str) -> str:
    """``text`` as one token of a NATS subject."""
    return text.translate(RESERVED) or "_"


class NatsSink(BrokerSink):
    def __init__(self, url: SinkURL):
        self.subject = url.path.strip("/") or "streamrec"
        if any(c in self.subject for c in "*> \t") or ".." in self.subject or self.subject.endswith("."):
            raise StreamrecError(f"sink {url.shown}: the path is a subject prefix such as site.cameras, without "
                                 f"wildcards or spaces; got '{self.subject}'")
        self.connection = None
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name="sink-nats-loop", daemon=True)
        self._loop_thread.start()
        super().__init__(url)

    def subject_for(self, event: Event) -> str:
        return f"{self.subject}.{subject_token(event.fields['stream'])}.{subject_token(event.fields['type'])}"

    def _call(self, coroutine, timeout_s: float):
        """Run ``coroutine`` on the sink's loop and wait for its result (or raise its error)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer in {timeout_s:g} s") from None

    def connect(self) -> None:
        import nats

        async def ignore(*_) -> None:  # the sink logs what matters itself
            pass

        user, password = self.url.username, self.url.password
        credentials = ({"user": user, "password": password} if password is not None
                       else {"token": user} if user else {})
        self.connection = self._call(
            nats.connect(servers=[f"nats://{self.url.host}:{self.url.port}"], name="streamrec", allow_reconnect=False,
                         connect_timeout=CONNECT_TIMEOUT_S, error_cb=ignore, disconnected_cb=ignore, closed_cb=ignore,
                         **credentials),
            CONNECT_TIMEOUT_S + 1)

    def send(self, batch: list[Event]) -> int:
        connection = self.connection

        async def publish() -> None:
            for event in batch:
                await connection.publish(self.subject_for(event), event.payload.encode())
            await connection.flush(timeout=ACK_TIMEOUT_S)

        self._call(publish(), ACK_TIMEOUT_S + 1)
        return len(batch)

    def disconnect(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            self._call(connection.close(), CONNECT_TIMEOUT_S)

    def close(self) -> None:
        super().close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(5)
        if not self._loop_thread.is_alive():
            self.loop.close()


@register_sink("nats", library="nats", package="nats-py", default_port=4222, path_help="SUBJECT")
def create(url: SinkURL) -> NatsSink:
    return NatsSink(url)
