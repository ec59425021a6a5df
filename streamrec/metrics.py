"""Prometheus metrics: the figures of the status events, read from the pipeline at scrape time.

A collector reads the pipeline's own counters when Prometheus asks, so there is no second set
of books to keep in step. Needs the optional ``prometheus-client`` package.
"""

from __future__ import annotations

import numpy as np

from streamrec.capture import StreamState
from streamrec.errors import StreamrecError


class PipelineCollector:
    def __init__(self, pipeline):
        self.pipeline = pipeline

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = {
            "frames_captured": ("Frames read from the source", lambda r: r.capture.frames_captured),
            "frames_dropped": ("Frames skipped to keep real-time pace", lambda r: r.capture.frames_dropped),
            "hops_served": ("Views classified", lambda r: r.schedule.views if r.schedule else 0),
            "hops_skipped": ("Hops that passed while the engine was busy", lambda r: r.schedule.hops_skipped if r.schedule else 0),
        }
        for name, (help_text, read) in counters.items():
            family = CounterMetricFamily(f"streamrec_{name}", help_text, labels=["stream"])
            for stream_id, runtime in self.pipeline.streams.items():
                family.add_metric([stream_id], read(runtime))
            yield family
        state = GaugeMetricFamily("streamrec_stream_state", "1 for the stream's current state", labels=["stream", "state"])
        latency = GaugeMetricFamily("streamrec_latency_ms", "Capture-to-event latency over the last 1000 hops",
                                    labels=["stream", "quantile"])
        for stream_id, runtime in self.pipeline.streams.items():
            for value in StreamState:
                state.add_metric([stream_id, value.value], float(runtime.capture.state is value))
            recent = np.array(runtime.latencies_ms)
            for quantile in (0.5, 0.99):
                if recent.size:
                    latency.add_metric([stream_id, str(quantile)], float(np.quantile(recent, quantile)))
        yield state
        yield latency
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
