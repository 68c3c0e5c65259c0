"""Prometheus metrics of one gateway (its own registry, so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTING_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)


class GatewayMetrics:
    """Requests, chosen models, upstream latency and errors, fallbacks and routing time."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lrouter_gateway_requests", "chat completion requests answered",
                                ["policy", "status"], registry=r)
        self.chosen = Counter("lrouter_gateway_chosen_model", "requests answered by each model", ["model"],
                              registry=r)
        self.upstream_latency = Histogram("lrouter_gateway_upstream_latency_seconds",
                                          "upstream time to a whole answer (non-streaming) or the first event",
                                          ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("lrouter_gateway_upstream_errors", "failed upstream calls",
                                       ["model", "kind"], registry=r)
        self.fallbacks = Counter("lrouter_gateway_fallbacks", "requests answered by a lower-ranked model after "
                                 "a failure", registry=r)
        self.routing = Histogram("lrouter_gateway_routing_seconds", "routing time of the batch a request was in (encoders + scoring)",
                                 buckets=ROUTING_BUCKETS, registry=r)
        self.route_batch = Histogram("lrouter_gateway_route_batch_size", "requests routed together in one batch",
                                     buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.log_rows = Counter("lrouter_gateway_served_rows_written", "served_requests rows written",
                                registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
