"""Safe defaults at start (no tokens: loopback only, unless --insecure) and ``acwd token new``."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from security_harness import Rpc, running, tokens_config

from acwd.cli import main
from acwd.core.config import Role, Settings

NO_AUTH = '[server]\nport = 0\n[metrics]\nport = 0\n[journal]\npath = ":memory:"\n'


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def acwd(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Done]]:
    """``acwd ARGS`` in this process (quicker than a subprocess), its output captured."""

    def run(*args: str) -> Done:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    yield run
    structlog.reset_defaults()  # serve configured logging onto the captured stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.com"])
def test_without_tokens_a_non_loopback_host_is_refused_at_start(
    tmp_path: Path, host: str, acwd: Callable[..., Done]
) -> None:
    config = tmp_path / "acwd.toml"
    config.write_text(NO_AUTH)
    done = acwd("serve", "--config", str(config), "--host", host, "--log-format", "json")
    assert done.returncode == 2
    assert f"refusing to listen on {host} without authentication" in done.stderr
    assert "[[auth.tokens]]" in done.stderr and "--insecure" in done.stderr
    assert "acwd token new" in done.stderr


def test_insecure_overrides_loudly(tmp_path: Path) -> None:
    with running(tmp_path, args=("--host", "0.0.0.0", "--insecure")) as daemon:
        warning = daemon.records("INSECURE")
        assert len(warning) == 1 and warning[0]["level"] == "warning"
        assert "admin" in warning[0]["event"]
        assert Rpc(daemon.port).ok("hello")["role"] == "admin"


def test_with_tokens_any_host_is_allowed_and_auth_is_on(tmp_path: Path) -> None:
    tokens, toml = tokens_config((Role.SUPERVISOR, None))
    with running(tmp_path, toml, args=("--host", "0.0.0.0")) as daemon:
        assert not daemon.records("INSECURE")
        rpc = Rpc(daemon.port)
        assert rpc.code("ping") == "unauthenticated"
        assert rpc.ok("hello", token=tokens[0])["role"] == "supervisor"


def test_token_new_prints_a_token_once_and_the_config_lines(
    tmp_path: Path, acwd: Callable[..., Done]
) -> None:
    done = acwd("token", "new", "--role", "agent", "--agent-id", "alice")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    token = next(line for line in lines if line and not line.startswith(("#", "[", "sha256", "r")))
    assert len(token) >= 40
    toml = tomllib.loads(done.stdout.replace(token, ""))
    (entry,) = toml["auth"]["tokens"]
    assert entry == {
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "role": "agent",
        "agent_id": "alice",
    }
    assert token not in done.stdout.split(token, 1)[1]  # shown once
    Settings.from_dict(toml)  # the lines are a valid configuration
    # And the daemon takes the token.
    config_lines = "\n".join(line for line in lines if line != token)
    with running(tmp_path, config_lines) as daemon:
        hello = Rpc(daemon.port).ok("hello", token=token)
        assert (hello["role"], hello["principal"]) == ("agent", "alice")
    other = acwd("token", "new", "--role", "agent", "--agent-id", "alice")
    assert token not in other.stdout  # random every time


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("--role", "agent"), "needs an agent_id"),
        (("--role", "admin", "--agent-id", "x"), "only role agent"),
        (("--role", "agent", "--agent-id", "not ok!"), "agent_id must be"),
        (("--role", "root"), "invalid choice"),
    ],
)
def test_token_new_refuses_what_the_config_would_refuse(
    args: tuple[str, ...], text: str, acwd: Callable[..., Done]
) -> None:
    done = acwd("token", "new", *args)
    assert done.returncode == 2
    assert text in done.stderr
    assert done.stdout == ""
