"""The client and acwctl over TLS, against a daemon with ``[server] tls_cert``/``tls_key``."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Daemon, run_ctl

from acwd.client import Client, ConnectionLost


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    where = Path(tmp_path_factory.mktemp("tls"))
    cert, key = where / "cert.pem", where / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t"]
    names = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    subprocess.run(
        [openssl, *request, "-keyout", str(key), "-out", str(cert), "-addext", names],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_daemon(
    certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    cert, key = certificate
    # A plain client's bytes are waited on as a TLS handshake until hello_timeout_s: keep it short.
    config = {"server": {"tls_cert": str(cert), "tls_key": str(key), "hello_timeout_s": 1.0}}
    running = Daemon(config, Path(tmp_path_factory.mktemp("acwd-tls")))
    yield running
    assert running.stop() == 0
    assert running.problems() == []


@pytest.mark.anyio
async def test_client_over_tls(tls_daemon: Daemon, certificate: tuple[Path, Path]) -> None:
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    async with await Client.connect("127.0.0.1", tls_daemon.port, tls=trust) as client:
        assert client.server_info["server"] == "acwd"
        view = await client.agent_login("tls-agent")
        assert view["state"] == "available"
    with pytest.raises(OSError):  # the system's CAs do not know this certificate
        await Client.connect("127.0.0.1", tls_daemon.port, tls=True)
    with pytest.raises((ConnectionLost, OSError)):  # plain msgpack to a TLS port
        await Client.connect("127.0.0.1", tls_daemon.port)


def test_acwctl_over_tls(tls_daemon: Daemon, certificate: tuple[Path, Path]) -> None:
    cert = str(certificate[0])
    ok = run_ctl(tls_daemon.port, "--tls-ca", cert, "ping")
    assert ok.returncode == 0 and "acwd" in ok.stdout
    via_env = run_ctl(tls_daemon.port, "agents", env={"ACWD_TLS_CA": cert})
    assert via_env.returncode == 0 and "AGENT" in via_env.stdout
    plain = run_ctl(tls_daemon.port, "ping")
    assert plain.returncode == 3 and "--tls" in plain.stderr
    untrusted = run_ctl(tls_daemon.port, "--tls", "ping")
    assert untrusted.returncode == 3 and "certificate" in untrusted.stderr
