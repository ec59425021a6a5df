"""Prometheus metrics: the pipeline's own figures (`Pipeline.stats`), rendered at scrape time.

The collector keeps no counters of its own: it renders what the pipeline reports when
Prometheus asks, so there is no second set of books to keep in step. Needs the optional
``prometheus-client`` package.
"""

from __future__ import annotations

from streamrec.capture import StreamState
from streamrec.errors import StreamrecError

COUNTERS = {  # StreamStats field: help
    "frames_captured": "Frames read from the source",
    "frames_dropped": "Frames skipped to keep real-time pace",
    "hops_served": "Views classified",
    "hops_skipped": "Hops that passed while the engine was busy",
}


class PipelineCollector:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.pipeline.stats()
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"streamrec_{name}", help_text, labels=["stream"])
            for stream_id, figures in stats.items():
                family.add_metric([stream_id], getattr(figures, name))
            yield family
        state = GaugeMetricFamily("streamrec_stream_state", "1 for the stream's current state", labels=["stream", "state"])
        latency = GaugeMetricFamily("streamrec_latency_ms", "Capture-to-event latency over the last 1000 hops",
                                    labels=["stream", "quantile"])
        for stream_id, figures in stats.items():
            for value in StreamState:
                state.add_metric([stream_id, value.value], float(figures.state == value.value))
            for quantile, figure in (("0.5", figures.latency_ms_p50), ("0.99", figures.latency_ms_p99)):
                if figure is not None:
                    latency.add_metric([stream_id, quantile], figure)
        yield state
        yield latency
        streaming = {stream_id: figures for stream_id, figures in stats.items() if figures.state_restarts is not None}
        if streaming:  # a streaming config's model state (docs/streaming.md)
            restarts = CounterMetricFamily("streamrec_state_restarts", "Times the streaming model's state started "
                                           "again from zeros after the stream's first view", labels=["stream"])
            warming = GaugeMetricFamily("streamrec_warming_up", "1 while the streaming model's state holds less than "
                                        "its warm-up (the stream publishes nothing)", labels=["stream"])
            for stream_id, figures in streaming.items():
                restarts.add_metric([stream_id], figures.state_restarts)
                warming.add_metric([stream_id], float(figures.warming_up))
            yield restarts
            yield warming
        yield CounterMetricFamily("streamrec_events", "Events published", value=self.pipeline.bus.seq)


def serve_metrics(pipeline, address: str):
    """Start the HTTP endpoint at ``HOST:PORT``; returns the server (call ``shutdown()`` to stop)."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise StreamrecError("events.metrics needs prometheus-client; pip install 'streamrec[metrics]'") from None
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise StreamrecError(f"metrics address '{address}' must be HOST:PORT, e.g. 127.0.0.1:9108")
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline))
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    except OSError as exc:
        raise StreamrecError(f"cannot serve metrics on {address}: {exc.strerror}; choose another port") from None
    return server
