"""Fixtures for the cluster profile's integration tests: PostgreSQL, Redis and an S3 server.

Each service comes from an environment variable that `.ci/run` (or `make services`) exports:
``LROUTER_TEST_PG_URL`` (``postgresql+psycopg2://...``), ``LROUTER_TEST_REDIS_URL`` (``redis://...``) and
``LROUTER_TEST_S3_ENDPOINT`` (the moto server). S3 falls back to an in-process moto server when moto is
installed; a service that is neither configured nor reachable skips the tests that need it, with why.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

S3_KEYS = {"AWS_ACCESS_KEY_ID": "lrouter-test", "AWS_SECRET_ACCESS_KEY": "lrouter-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


def reachable(url: str, default_port: int) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), timeout=1.0):
            return True
    except OSError:
        return False


def require(var: str, default_port: int, what: str) -> str:
    url = os.environ.get(var, "")
    if not url:
        pytest.skip(f"{what} not configured: set {var} (`make services` or .ci/run start one)")
    if not reachable(url, default_port):
        pytest.skip(f"{what} at {var}={url} is not reachable")
    return url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    url = os.environ.get("LROUTER_TEST_S3_ENDPOINT", "")
    if url:
        if not reachable(url, 80):
            pytest.skip(f"S3 server at LROUTER_TEST_S3_ENDPOINT={url} is not reachable")
        yield url
        return
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("no S3 server: set LROUTER_TEST_S3_ENDPOINT or install moto[server] (the `cluster` extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server, with the AWS variables pointing at it; returns ``s3://bucket``."""
    pytest.importorskip("s3fs", reason="s3fs is in the `cluster` extra")
    boto3 = pytest.importorskip("boto3", reason="boto3 is in the `cluster` extra")
    for k, v in S3_KEYS.items():
        monkeypatch.setenv(k, os.environ.get(k, v) if k != "AWS_DEFAULT_REGION" else v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"lrouter-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture(scope="session")
def pg_url() -> str:
    pytest.importorskip("dagster_postgres", reason="dagster-postgres is in the `cluster` extra")
    return require("LROUTER_TEST_PG_URL", 5432, "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    pytest.importorskip("dagster_celery", reason="dagster-celery is in the `cluster` extra")
    return require("LROUTER_TEST_REDIS_URL", 6379, "Redis")
