"""What one gateway app holds: the router (or how to build it), upstreams, policies, limits, metrics, the
served-request log and the upstream HTTP client, plus the batcher that routes queued requests together in one
worker thread, off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import httpx
import polars as pl

from router.serving.gateway.batcher import RouteBatcher
from router.serving.gateway.config import GatewayConfig, UpstreamTable
from router.serving.gateway.metrics import GatewayMetrics
from router.serving.gateway.policies import PolicyBook
from router.serving.gateway.served_log import ServedLog
from router.serving.limits import ServeLimits
from router.serving.service import RouteRequest, RouterService

UpstreamSource = UpstreamTable | Callable[[pl.DataFrame], UpstreamTable]


class Unavailable(RuntimeError):
    """No usable router snapshot (the service could not be built): HTTP 503 with the reason."""


@dataclass
class GatewayState:
    service: RouterService | None
    factory: Callable[[], RouterService] | None
    upstream_source: UpstreamSource  # fixed table, or built from the router's current models table
    policies: PolicyBook
    cfg: GatewayConfig
    limits: ServeLimits
    metrics: GatewayMetrics
    log: ServedLog | None
    client: httpx.AsyncClient | None = None
    route_lock: anyio.Lock = field(default_factory=anyio.Lock)  # held while the router is first built
    route_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    parse_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(4))
    _upstreams: tuple[pl.DataFrame, UpstreamTable] | None = None
    batcher: RouteBatcher[RouteRequest] = field(init=False)

    def __post_init__(self) -> None:
        # batches share the build's one-thread limiter: a rebuild and a batch never run at once
        self.batcher = RouteBatcher(lambda items: self.get().route_many(items), self.cfg.max_route_batch,
                                    self.cfg.max_route_queue, self.route_threads)

    def get(self) -> RouterService:
        """The router, built on first use when a factory was given (worker thread, under the route lock)."""
        if self.service is None:
            assert self.factory is not None
            try:
                self.service = self.factory()
            except Exception as exc:
                raise Unavailable(f"no usable router snapshot: {type(exc).__name__}: {exc}") from exc
        return self.service

    def upstreams(self) -> UpstreamTable:
        """Model -> upstream; rebuilt when the router re-read its models table (a model added or disabled)."""
        if isinstance(self.upstream_source, UpstreamTable):
            return self.upstream_source
        if self.service is None:
            return UpstreamTable()
        models = self.service.inputs.models
        if self._upstreams is None or self._upstreams[0] is not models:
            self._upstreams = (models, self.upstream_source(models))
        return self._upstreams[1]

    def routable(self) -> list[str]:
        """Models the router scores AND the gateway can call (the router's active pool, in its order)."""
        ups = self.upstreams()
        if self.service is None:
            return []
        return [m for m in self.service.data.model_ids if m in ups]

    def http(self) -> httpx.AsyncClient:
        if self.client is None:  # an app used without its lifespan (e.g. an in-process test transport)
            self.client = make_client(self.cfg)
        return self.client


def make_client(cfg: GatewayConfig) -> httpx.AsyncClient:
    n = cfg.max_upstream_connections
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                             timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s))
