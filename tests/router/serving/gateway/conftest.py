"""Fixtures for the gateway: the simulator (OpenAI-compatible endpoint) on loopback as every sim model's
upstream, the trained warehouse's router, and the gateway running in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collectors.simulator.server import SimServer
from router.serving.gateway.app import make_gateway_app, make_gateway_server
from router.serving.gateway.config import GatewayConfig, upstreams_from_models
from router.serving.limits import ServeLimits, bound_port
from router.serving.service import RouterService, load_router

LIMITS = ServeLimits(max_body_bytes=2_000_000)


@dataclass
class Gateway:
    url: str
    app: Any
    sim: SimServer
    log_root: Path

    @property
    def state(self) -> Any:
        return self.app.state.gateway


@pytest.fixture(scope="package")
def router_service(trained_home: Path) -> RouterService:
    service = load_router(trained_home)
    service.warm_up()
    return service


@pytest.fixture(scope="package")
def sim(trained_home: Path) -> Iterator[SimServer]:
    with SimServer(answer_key=trained_home / "warehouse" / "tables" / "queries.parquet", time_scale=0.001) as s:
        yield s


@contextlib.contextmanager
def run_gateway(service: RouterService, sim: SimServer, home: Path, log_root: Path,
                cfg: GatewayConfig | None = None, upstreams: Any = None) -> Iterator[Gateway]:
    """The gateway on loopback (uvicorn in a thread, lifespan on); stopping it flushes the log."""
    app = make_gateway_app(service, upstreams or (lambda m: upstreams_from_models(m, sim.url)), home=home,
                           cfg=cfg or GatewayConfig(first_byte_timeout_s=5.0), limits=LIMITS, log_root=log_root)
    server = make_gateway_server(app, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 30, "the gateway did not start"
        time.sleep(0.01)
    try:
        yield Gateway(f"http://127.0.0.1:{bound_port(server)}", app, sim, log_root)
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "the gateway did not stop"


@pytest.fixture()
def gateway_factory(router_service: RouterService, sim: SimServer, tmp_path: Path
                    ) -> Callable[..., contextlib.AbstractContextManager[Gateway]]:
    """``with gateway_factory(**kw) as gw:`` a fresh gateway with its own home and served-request log."""
    sim.set_faults(None)

    def make(**kw: Any) -> contextlib.AbstractContextManager[Gateway]:
        return run_gateway(router_service, sim, kw.pop("home", tmp_path), tmp_path / "warehouse", **kw)

    yield make
    sim.set_faults(None)


@pytest.fixture(scope="module")
def gateway(router_service: RouterService, sim: SimServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("gateway")
    with run_gateway(router_service, sim, home, home / "warehouse") as gw:
        yield gw
