"""TLS end to end, with a CA and certificates made by the test (``openssl``), server-only and
with client certificates."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest
from security_harness import Daemon, running, tokens_config

from acwd.client import Client, ConnectionLost
from acwd.core.config import Role

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command makes the test certificates"
)
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def issue(directory: Path, name: str, extensions: str) -> None:
    """``name``.pem / ``name``.key, signed by the test CA."""
    openssl(
        directory,
        "req",
        *EC,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    (directory / f"{name}.ext").write_text(extensions + "\n")
    openssl(
        directory,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=acwd test CA"]
    openssl(directory, "req", "-x509", *EC, *ca)
    issue(directory, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    issue(directory, "client", "extendedKeyUsage=clientAuth")
    return directory


def tls_server(pki: Path, client_ca: bool = False) -> str:
    lines = [
        f'tls_cert = "{pki / "server.pem"}"',
        f'tls_key = "{pki / "server.key"}"',
        "hello_timeout_s = 1.5",  # also the limit for the TLS handshake
    ]
    if client_ca:
        lines.append(f'tls_client_ca = "{pki / "ca.pem"}"')
    return "\n".join(lines)


def client_context(pki: Path, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


@pytest.fixture(scope="module")
def tls_daemon(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    tokens, toml = tokens_config((Role.INTEGRATION, None))
    with running(tmp_path_factory.mktemp("tls"), toml, server=tls_server(pki)) as daemon:
        yield daemon, tokens[0]
        assert daemon.alive()
        assert daemon.errors() == []


@pytest.mark.anyio
async def test_a_client_talks_to_the_daemon_over_tls(
    pki: Path, tls_daemon: tuple[Daemon, str]
) -> None:
    daemon, token = tls_daemon
    context = client_context(pki)
    async with await Client.connect("127.0.0.1", daemon.port, token=token, tls=context) as client:
        assert client.server_info["role"] == "integration"
        view = await client.call("work.submit", queue="default", work_id="tls-1")
        assert view["state"] == "queued"
        assert (await client.call("work.get", work_id="tls-1"))["work_id"] == "tls-1"


@pytest.mark.anyio
async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    tls_daemon: tuple[Daemon, str],
) -> None:
    daemon, token = tls_daemon
    with pytest.raises(ssl.SSLCertVerificationError):
        await Client.connect(
            "127.0.0.1", daemon.port, token=token, tls=ssl.create_default_context()
        )


def test_plain_msgpack_on_the_tls_port_is_dropped_and_logged(
    tls_daemon: tuple[Daemon, str],
) -> None:
    daemon, _ = tls_daemon
    before = len(daemon.records("TLS handshake failed"))
    # A short hello looks like the start of a long TLS record: the handshake waits for the
    # rest until the hello timeout. A long one is refused at once.
    for message, within in ((msgpack.packb([0, 1, "hello", []]), 3.0), (b"\x94" * 70_000, 1.0)):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(message)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    received += chunk
        assert time.monotonic() - started < within
        assert b"acwd" not in received  # no msgpack answer; whatever TLS says, then the end
    daemon.wait_for("TLS handshake failed", count=before + 2)


@pytest.mark.anyio
async def test_client_certificates_are_required_when_a_client_ca_is_set(
    pki: Path, tmp_path: Path
) -> None:
    tokens, toml = tokens_config((Role.SUPERVISOR, None))
    with running(tmp_path, toml, server=tls_server(pki, client_ca=True)) as daemon:
        with pytest.raises((ssl.SSLError, ConnectionLost, OSError)):
            # TLS 1.3 reports the missing certificate after the handshake: at the hello.
            await Client.connect("127.0.0.1", daemon.port, token=tokens[0], tls=client_context(pki))
        context = client_context(pki, with_certificate=True)
        async with await Client.connect(
            "127.0.0.1", daemon.port, token=tokens[0], tls=context
        ) as client:
            assert client.server_info["role"] == "supervisor"
            assert await client.call("ping")
        daemon.wait_for("TLS handshake failed")
        assert daemon.errors() == []


def test_a_tls_configuration_that_cannot_be_used_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "acwd.toml"
    config.write_text(
        f'[server]\nport = 0\ntls_cert = "{tmp_path / "missing.pem"}"\n'
        f'tls_key = "{tmp_path / "missing.key"}"\n[metrics]\nport = 0\n'
        '[journal]\npath = ":memory:"\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acwd.cli",
            "serve",
            "--config",
            str(config),
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "TLS configuration refused" in done.stderr
    assert "missing.pem" in done.stderr or "No such file" in done.stderr
