"""What one gateway app holds: the router (or how to build it), upstreams, policies, limits, metrics, the
served-request log and the upstream HTTP client, plus the batcher that routes queued requests together in one
worker thread, off the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import anyio
import httpx
import polars as pl

from router.features.extract import PreparedImage
from router.serving.gateway.batcher import RouteBatcher
from router.serving.gateway.config import GatewayConfig, UpstreamTable
from router.serving.gateway.metrics import GatewayMetrics
from router.serving.gateway.policies import PolicyBook
from router.serving.gateway.served_log import ServedLog
from router.serving.keys import AccessGate
from router.serving.limits import ServeLimits
from router.serving.service import RouteRequest, RouterService

UpstreamSource = UpstreamTable | Callable[[pl.DataFrame], UpstreamTable]
IMAGE_BATCH = 2  # images per encoder run: 9.2 ms of CPU per image at 1-2, 11.3 at 8, 12.3 at 16 (batcher.py)
TEXT_BATCH = 16  # questions per encoder run (the int8 graph runs them one by one anyway)


class Unavailable(RuntimeError):
    """No usable router snapshot (the service could not be built): HTTP 503 with the reason."""


class PoolGone(ValueError):
    """None of the models a request named is routable in the snapshot its batch was routed on: HTTP 503."""


@dataclass(frozen=True)
class PoolRoute:
    """One request for the batcher: what to route, and the pool it named (None: every routable model).

    Why the pool is resolved in the batch, not before: the batch refreshes the router and forms every
    request's pool on that one snapshot, then routes on it without refreshing again, so a model disabled
    meanwhile is simply not in the pool (a request that named no pool never fails because of it)."""

    request: RouteRequest
    named: tuple[str, ...] | None = None


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
    access: AccessGate = field(default_factory=lambda: AccessGate(None, False))
    client: UpstreamPool | None = None
    refreshed_at: float = 0.0  # monotonic time of the last refresh check of the router
    route_lock: anyio.Lock = field(default_factory=anyio.Lock)  # held while the router is first built
    route_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    parse_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(4))
    _upstreams: tuple[pl.DataFrame, UpstreamTable] | None = None
    batcher: RouteBatcher[PoolRoute] = field(init=False)
    _encoders: tuple[RouteBatcher[str], RouteBatcher[PreparedImage]] | None = None
    _eager: bool = False  # the router's encoders run eagerly: no encoder micro-batchers

    def __post_init__(self) -> None:
        # batches share the build's one-thread limiter: a rebuild and a batch never run at once
        self.batcher = RouteBatcher(self.route_batch, self.cfg.max_route_batch, self.cfg.max_route_queue,
                                    self.route_threads)

    def encoders(self) -> tuple[RouteBatcher[str], RouteBatcher[PreparedImage]] | None:
        """(questions, images) micro-batchers that encode each image request as soon as it is parsed, or None
        where the router's encoders run eagerly (they then encode inside the routing batch, as do requests
        without an image: their question costs less in a routing batch than on its own).

        Why: a routing batch encoded every image of its requests in one pass, and the next batch waited for it;
        images now run in batches of at most ``IMAGE_BATCH`` (the cheapest per image; batcher.py) on every lane
        while the router routes the requests encoded before them. Questions take one lane (the tokenizer is
        not shared between threads), images every lane; one limiter of ``lanes`` threads bounds both, so the
        encoders never hold more threads than the process has cores."""
        if self._encoders is None and not self._eager:
            svc = self.get()
            if not svc.encodes_ahead():
                self._eager = True
                return None
            lanes = svc.feature_cfg.encode_lanes
            threads = anyio.CapacityLimiter(lanes)
            self._encoders = (
                RouteBatcher(lambda qs: self.get().encode_questions(qs), TEXT_BATCH, self.cfg.max_route_queue,
                             threads, lanes=1),
                RouteBatcher(lambda ims: self.get().encode_images(ims), IMAGE_BATCH, self.cfg.max_route_queue,
                             threads, lanes=lanes))
        return self._encoders

    def refresh(self) -> RouterService:
        """Re-read the warehouse if it moved (worker thread, under the route limiter); the held snapshot
        answers when the re-read fails (``refresh_error``)."""
        svc = self.get()
        if svc.auto_refresh:
            svc.refresh(strict=False)
        self.refreshed_at = time.monotonic()
        return svc

    def route_batch(self, items: Sequence[PoolRoute]) -> list[object]:
        """Route one batch on one snapshot: refresh, form each request's pool on it, route without refreshing
        again (worker thread). A named pool with no routable model left comes back as `PoolGone`."""
        svc = self.refresh()
        routable = self.routable()
        out: list[object] = [None] * len(items)
        todo: list[tuple[int, RouteRequest]] = []
        for i, item in enumerate(items):
            pool = routable if item.named is None else [m for m in item.named if m in routable]
            if not pool:
                out[i] = PoolGone(f"none of the models {list(item.named or [])} can be routed to now "
                                  f"(disabled, or no upstream); routable: {routable}" if item.named else
                                  "no model can be routed to now (every model is disabled or has no upstream)")
            else:
                todo.append((i, replace(item.request, pool=list(pool))))
        if todo:
            for (i, _), res in zip(todo, svc.route_many([r for _, r in todo], refresh=False), strict=True):
                out[i] = res
        return out

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

    def http(self) -> UpstreamPool:
        if self.client is None:  # an app used without its lifespan (e.g. an in-process test transport)
            self.client = make_client(self.cfg)
        return self.client


class UpstreamPool:
    """Upstream HTTP clients: several small httpx clients instead of one large one.

    Why: httpcore's connection pool scans every connection on each request event, which costs O(n) per event
    and O(n^2) per second at n requests in flight; with one client of 128 busy connections that scan took
    about 40% of the gateway's event loop and halved goodput at 200 clients (bench/gateway.py --chaos).
    Requests go to the least busy shard of ``SHARD`` connections; ``acquire`` returns the shard, and the
    caller calls ``release`` once the answer (or stream) has ended."""

    SHARD = 16

    def __init__(self, cfg: GatewayConfig):
        n = max(1, -(-cfg.max_upstream_connections // self.SHARD))
        size = min(self.SHARD, cfg.max_upstream_connections)
        tls = httpx.create_ssl_context()  # one context for all shards (loading the CA bundle costs ~60 ms)
        self.clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                                          timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
                                          verify=tls)
                        for _ in range(n)]
        self.busy = [0] * n

    def acquire(self) -> tuple[int, httpx.AsyncClient]:
        i = min(range(len(self.busy)), key=self.busy.__getitem__)
        self.busy[i] += 1
        return i, self.clients[i]

    def release(self, i: int) -> None:
        self.busy[i] -= 1

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


def make_client(cfg: GatewayConfig) -> UpstreamPool:
    return UpstreamPool(cfg)
