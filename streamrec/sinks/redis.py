"""``redis://[user:password@]host:6379/DB?stream=NAME``: every event appended to a Redis stream.

One ``XADD`` per event to the stream ``NAME`` (default ``streamrec``), trimmed to about
``maxlen`` entries (``MAXLEN ~``: Redis trims whole nodes, so a few more may stay). Each
entry's fields are ``stream`` (the camera stream's id, to route or filter by in consumer
groups), ``type``, ``event_id`` and ``event`` (the event's JSON). Entries are written in
batches through a pipeline; a batch cut off by a lost connection is written again (consumers
de-duplicate by ``event_id``). Client: redis-py.
"""

from __future__ import annotations

from streamrec.errors import StreamrecError
from streamrec.events import Event
from streamrec.sinks import Option, SinkURL, register_sink
from streamrec.sinks.buffered import ACK_TIMEOUT_S, CONNECT_TIMEOUT_S, BrokerSink


class RedisSink(BrokerSink):
    def __init__(self, url: SinkURL):
        try:
            self.db = int(url.path or 0)
        except ValueError:
            raise StreamrecError(f"sink {url.shown}: the path is the database number (redis://HOST:6379/0), "
                                 f"not '{url.path}'") from None
        self.key: str = url.options["stream"]
        self.maxlen: int = url.options["maxlen"]
        self.client = None
        super().__init__(url)

    def connect(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.client = redis.Redis(host=self.url.host, port=self.url.port, db=self.db, username=self.url.username,
                                  password=self.url.password, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                  socket_timeout=ACK_TIMEOUT_S, retry=Retry(NoBackoff(), 0),
                                  single_connection_client=True)
        self.client.ping()

    def send(self, batch: list[Event]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for event in batch:
            fields = {"stream": event.fields["stream"], "type": event.fields["type"],
                      "event_id": event.fields.get("event_id", ""), "event": event.payload}
            pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
        pipe.execute()
        return len(batch)

    def disconnect(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            client.close()


@register_sink("redis", library="redis", package="redis", default_port=6379, path_help="DB?stream=NAME",
               options={"stream": Option("streamrec", str, help="the Redis stream's key"),
                        "maxlen": Option(100_000, int, 1, 10**12, "entries the stream is trimmed to, about")})
def create(url: SinkURL) -> RedisSink:
    return RedisSink(url)
