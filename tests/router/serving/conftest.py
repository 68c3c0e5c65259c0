"""Fixtures for the HTTP front end: a small trained warehouse (tests/conftest.py's tiny pipeline) and a real
uvicorn server on loopback in a thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="package")
def trained_home(tmp_path_factory: pytest.TempPathFactory, tiny_template: Path) -> Iterator[Path]:
    """An LROUTER_HOME with a small trained router (a copy of tests/conftest.py's tiny pipeline), shared by
    every serving test."""
    import shutil

    from tests.conftest import home_env

    home = tmp_path_factory.mktemp("serving") / "home"
    shutil.copytree(tiny_template / "home", home, symlinks=True)
    mp = home_env(home)
    yield home
    mp.undo()


@contextlib.contextmanager
def running(service: Any, limits: Any = None) -> Iterator[str]:
    """``make_server(service, port=0, limits)`` running in a thread; yields its base URL."""
    from router.serving.http import make_server
    from router.serving.limits import bound_port

    server = make_server(service, port=0, limits=limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - t0 < 30, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture()
def serve() -> Callable[..., contextlib.AbstractContextManager[str]]:
    """``with serve(service, limits) as url:`` a real server on loopback for the block."""
    return running
