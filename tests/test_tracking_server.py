"""A tracking server that is down fails the invocation at once, naming its address, instead of
MLflow retrying its HTTP requests for minutes. Real CLI, a real closed loopback port."""
from __future__ import annotations

import socket

import pytest

from vqi import tracking


@pytest.fixture
def closed_port():
    """A loopback port bound by this test but not listening: a connection to it is refused, and
    no other program can take it while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_stage_against_a_server_that_is_down_fails_naming_the_url(run_cli, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    proc = run_cli("stage=report", "tracking=server", f"tracking.uri={url}", check=False, timeout=60)
    assert proc.returncode != 0
    assert f"MLflow tracking server {url} is not reachable" in proc.stderr
    assert "Retrying" not in proc.stderr    # no HTTP retries before the error


def test_configure_refuses_an_unreachable_server_and_names_it(closed_port):
    url = f"http://127.0.0.1:{closed_port}/"
    with pytest.raises(ConnectionError, match=f"MLflow tracking server {url} is not reachable.*tracking=sqlite"):
        tracking.configure(url, "vqi-demo")
