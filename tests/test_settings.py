"""Loading the configuration file, and the check-config summary."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from acwd.core.config import Settings
from acwd.core.errors import ConfigError
from acwd.settings import describe, load_settings

HASH = hashlib.sha256(b"token").hexdigest()


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "acwd.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_the_built_in_defaults() -> None:
    assert load_settings(None) == Settings.from_dict({})


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, '[queues.sales]\nchannel = "voice"\n\n[agents.alice]\ncapacity = 2\n')
    for given in (path, str(path)):
        settings = load_settings(given)
        assert list(settings.queues) == ["sales"]
        assert settings.resolve("sales").acw_seconds == 30.0
        assert settings.agents["alice"].capacity == 2


def test_a_bad_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[queues.sales]\npolicy = "fastest"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.source == str(path)
    assert caught.value.key == "queues.sales.policy"
    assert str(caught.value).startswith(f"{path}: queues.sales.policy: must be one of")


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: file: not found"


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.key == "file"
    assert "cannot be read" in caught.value.reason


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, b'[server]\nhost = "\xff"\n'))
    assert caught.value.reason == "is not UTF-8 text (byte 17)"


def test_a_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7400\nhost = \n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    error = caught.value
    assert (error.source, error.key) == (str(path), "line 3")
    assert error.reason == "invalid TOML: Invalid value (column 8)"


def test_a_syntax_error_at_the_end_of_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[server]\nport = 7400\n[metrics"))
    assert caught.value.key == "line 3"
    assert "at the end of a table declaration (end of file)" in caught.value.reason


def test_describe_the_defaults() -> None:
    text = describe(load_settings(None))
    assert text.splitlines() == [
        "listen    127.0.0.1:7400",
        "metrics   http://127.0.0.1:9400/metrics",
        "journal   ./var/acwd.db (synchronous normal, commit window 2 ms, retention keep all)",
        "auth      off (no tokens)",
        "channels",
        "  chat     size 1, ACW timed 90 s, offer timeout 20 s",
        "  voice    size 1, ACW timed 30 s, auto-accept",
        "queues",
        "  default  channel chat, policy longest_idle, ACW timed 90 s, offer timeout 20 s",
        "agents    none configured (agents log in with their own settings)",
    ]


def test_describe_a_full_setup() -> None:
    settings = Settings.from_dict(
        {
            "server": {"host": "::1", "tls_cert": "c.pem", "tls_key": "k.pem"},
            "metrics": {"port": 0},
            "journal": {"retention_days": 30, "synchronous": "full"},
            "auth": {
                "tokens": [
                    {"sha256": HASH, "role": "agent", "agent_id": "a0"},
                    {"sha256": "0" * 64, "role": "admin"},
                ]
            },
            "channels": {"email": {"acw_mode": "manual", "max_acw_seconds": 600}},
            "queues": {
                "mail": {"channel": "email", "max_wait_s": 86400},
                "vip": {"priority": 5, "acw_mode": "off", "policy": "skills_best"},
                "sales": {"overflow_after_s": 60, "overflow_queue": "vip", "acw_mode": "manual"},
            },
            "agents": {f"a{i}": {} for i in range(12)},
        }
    )
    text = describe(settings)
    assert "listen    ::1:7400 (TLS)\n" in text
    assert "metrics   off\n" in text
    assert "retention 30 days" in text and "synchronous full" in text
    assert "auth      on, 2 tokens: 1 admin, 1 agent\n" in text
    assert "  email  size 1, ACW manual (cap 600 s), offer timeout 20 s\n" in text
    assert "  mail   channel email, policy longest_idle, ACW manual (cap 600 s)" in text
    assert "max wait 86400 s" in text
    assert (
        "  vip    channel chat, policy skills_best, ACW off, offer timeout 20 s, priority 5" in text
    )
    assert "ACW manual (cap none), offer timeout 20 s, overflow to vip after 60 s" in text
    assert "agents    12 configured: a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, ...\n" in text
    assert "warning" not in text


@pytest.mark.parametrize(
    ("host", "warned"),
    [("0.0.0.0", True), ("acwd.example.com", True), ("localhost", False), ("127.0.0.2", False)],
)
def test_describe_warns_about_open_listeners_without_auth(host: str, warned: bool) -> None:
    text = describe(Settings.from_dict({"server": {"host": host}}))
    assert ("needs --insecure" in text) is warned
    one = {"sha256": HASH, "role": "admin"}
    secured = describe(
        Settings.from_dict(
            {"server": {"host": host, "tls_cert": "c", "tls_key": "k", "tls_client_ca": "ca"}}
            | {"auth": {"tokens": [one]}}
        )
    )
    assert "auth      on, 1 token: 1 admin" in secured
    assert "(TLS, client certificates)" in secured
    assert "needs --insecure" not in secured
