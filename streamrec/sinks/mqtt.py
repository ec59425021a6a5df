"""``mqtt://[user:password@]host:1883/PREFIX?qos=1``: every event published to an MQTT broker.

Each event goes to the topic ``PREFIX/<stream>/<type>`` (``PREFIX`` defaults to ``streamrec``;
``/``, ``+`` and ``#`` in a stream id become ``_``, as MQTT reserves them), at QoS 1 by default:
the broker confirms each one, and one cut off by a lost connection is sent again (consumers
de-duplicate by ``event_id``). ``status`` events are retained, so a subscriber that arrives
later at once gets each stream's latest state. Client: paho-mqtt, a fresh client session for
each connection (the sink's buffer, not paho's, holds events while the broker is away).
"""

from __future__ import annotations

import threading
import time

from streamrec.events import Event
from streamrec.sinks import Option, SinkURL, register_sink
from streamrec.sinks.buffered import ACK_TIMEOUT_S, CONNECT_TIMEOUT_S, BrokerSink

RESERVED = str.maketrans({"/": "_", "+": "_", "#": "_"})


def topic_level(text: str) -> str:
    """``text`` as one level of an MQTT topic."""
    return text.translate(RESERVED) or "_"


class MqttSink(BrokerSink):
    def __init__(self, url: SinkURL):
        self.prefix = url.path.strip("/") or "streamrec"
        self.qos: int = url.options["qos"]
        self.client = None
        self._changed = threading.Condition()  # signalled by the client's thread: connected, confirmed, gone
        self._connack = None
        self._gone = False
        self._confirmed: set[int] = set()  # message ids the broker confirmed (QoS 0: sent) in this batch
        super().__init__(url)

    def topic(self, event: Event) -> str:
        return f"{self.prefix}/{topic_level(event.fields['stream'])}/{topic_level(event.fields['type'])}"

    def connect(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=True, reconnect_on_failure=False)
        client.connect_timeout = CONNECT_TIMEOUT_S
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        client.max_inflight_messages_set(self.batch_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._connack, self._gone = None, False
        self.client = client
        client.connect(self.url.host, self.url.port, keepalive=30)
        client.loop_start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        with self._changed:
            while self._connack is None and not self._gone and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            reason = self._connack
        if reason is None:
            raise ConnectionError("no answer to CONNECT")
        if reason.is_failure:
            raise ConnectionError(f"the broker refused: {reason}")

    def send(self, batch: list[Event]) -> int:
        import paho.mqtt.client as mqtt

        with self._changed:
            self._confirmed.clear()
        mids = []
        for event in batch:
            info = self.client.publish(self.topic(event), event.payload, qos=self.qos,
                                       retain=event.fields["type"] == "status")
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            mids.append(info.mid)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        with self._changed:
            while not self._confirmed.issuperset(mids) and not self._gone and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
            confirmed = 0
            for mid in mids:  # the broker confirms in order; count up to the first unconfirmed one
                if mid not in self._confirmed:
                    break
                confirmed += 1
        return confirmed

    def disconnect(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            client.disconnect()
            client.loop_stop()

    # paho-mqtt's callbacks, on its network thread

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self.client:  # a callback from a client already given up
            return
        with self._changed:
            self._connack = reason_code
            self._changed.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is not self.client:  # a callback from a client already given up
            return
        with self._changed:
            self._gone = True
            self._changed.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if client is not self.client:  # a callback from a client already given up
            return
        with self._changed:
            self._confirmed.add(mid)
            self._changed.notify_all()


@register_sink("mqtt", library="paho.mqtt", package="paho-mqtt", default_port=1883, path_help="PREFIX",
               options={"qos": Option(1, int, 0, 2, "MQTT quality of service: 1 has the broker confirm each event")})
def create(url: SinkURL) -> MqttSink:
    return MqttSink(url)
