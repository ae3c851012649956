"""The typed settings model: defaults, resolution order, validation, views and diffs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from typing import Any

import pytest

from acwd.core.config import (
    AcwMode,
    AcwScope,
    AgentConfig,
    AuthToken,
    ChannelConfig,
    Policy,
    QueueConfig,
    Role,
    Settings,
    WorkSettings,
)
from acwd.core.errors import ConfigError

TOKEN_HASH = hashlib.sha256(b"alice-secret").hexdigest()
OTHER_HASH = hashlib.sha256(b"admin-secret").hexdigest()

# The example file of spec/CONFIG.md, verbatim except for a real sha256.
CONFIG_MD_EXAMPLE = f"""
[server]
host = "127.0.0.1"          # a non-loopback host requires [auth] tokens (or --insecure)
port = 7400
max_message_bytes = 1048576
max_outbound_bytes = 1048576
hello_timeout_s = 10.0

[metrics]
host = "127.0.0.1"
port = 9400                 # Prometheus exposition at http://host:port/metrics; 0 disables

[journal]
path = "./var/acwd.db"      # SQLite, WAL mode; ":memory:" keeps nothing across restarts
synchronous = "normal"      # "full" fsyncs every group commit
commit_interval_ms = 2      # group-commit window

[[auth.tokens]]             # no tokens: no auth (loopback only)
sha256 = "{TOKEN_HASH}"
role = "agent"              # agent | integration | supervisor | admin
agent_id = "alice"          # required for role = "agent"

[defaults]                  # apply to every channel/queue unless overridden
acw_mode = "timed"          # off | timed | forced | manual | on_request
acw_seconds = 90.0
max_acw_seconds = 0.0       # manual mode safety cap; 0 = none
extension_seconds = 30.0
max_extensions = 2
acw_scope = "agent"         # agent | slot
require_disposition = false
dispositions = []           # allowed codes; empty = any string
timeout_disposition = "timeout"
offer_timeout_s = 20.0      # 0 = auto-accept
reoffer_backoff_s = 10.0
on_decline_status = "available"
on_timeout_status = "away"
disconnect_grace_s = 30.0
sla_target_s = 20.0         # service level = share answered within this
sla_window_s = 1800.0

[channels.chat]             # any [defaults] key may be set per channel
size = 1                    # capacity units one item uses

[channels.voice]
acw_seconds = 30.0
offer_timeout_s = 0.0

[queues.default]            # any [defaults] key may be set per queue, plus:
channel = "chat"
policy = "longest_idle"     # longest_idle | least_active | skills_best
priority = 0
aging_step_s = 0.0          # 0 = no aging
overflow_after_s = 0.0      # 0 = no overflow
overflow_queue = ""
max_wait_s = 0.0            # 0 = wait forever

[agents.alice]              # per-agent overrides; [agents.ID.channels.NAME] for per-channel ACW
capacity = 3
skills = {{ english = 5, billing = 3 }}
queues = ["default"]
acw_seconds = 120.0
"""

# One non-default value for every [defaults] key: (as written in TOML, as resolved).
WORK_SAMPLES: dict[str, tuple[Any, Any]] = {
    "acw_mode": ("manual", AcwMode.MANUAL),
    "acw_seconds": (45, 45.0),
    "max_acw_seconds": (600, 600.0),
    "extension_seconds": (15.5, 15.5),
    "max_extensions": (5, 5),
    "acw_scope": ("slot", AcwScope.SLOT),
    "require_disposition": (True, True),
    "dispositions": (["sale", "no_sale"], ("sale", "no_sale")),
    "timeout_disposition": ("expired", "expired"),
    "offer_timeout_s": (5, 5.0),
    "reoffer_backoff_s": (3, 3.0),
    "on_decline_status": ("away", "away"),
    "on_timeout_status": ("offline", "offline"),
    "disconnect_grace_s": (60, 60.0),
    "sla_target_s": (30, 30.0),
    "sla_window_s": (900, 900.0),
}


def build(data: dict[str, Any]) -> Settings:
    return Settings.from_dict(data, source="test.toml")


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build(data)
    assert caught.value.source == "test.toml"
    return caught.value


# --- embedded defaults ---------------------------------------------------------------------


def test_empty_document_gives_the_documented_defaults() -> None:
    settings = build({})
    assert settings.defaults == WorkSettings()
    assert dataclasses.asdict(settings.defaults) == {
        "acw_mode": AcwMode.TIMED,
        "acw_seconds": 90.0,
        "max_acw_seconds": 0.0,
        "extension_seconds": 30.0,
        "max_extensions": 2,
        "acw_scope": AcwScope.AGENT,
        "require_disposition": False,
        "dispositions": (),
        "timeout_disposition": "timeout",
        "offer_timeout_s": 20.0,
        "reoffer_backoff_s": 10.0,
        "on_decline_status": "available",
        "on_timeout_status": "away",
        "disconnect_grace_s": 30.0,
        "sla_target_s": 20.0,
        "sla_window_s": 1800.0,
    }
    assert list(settings.channels) == ["chat", "voice"]
    assert list(settings.queues) == ["default"]
    assert settings.agents == {}
    assert settings.auth_tokens == ()
    assert settings.channel_of("default") == "chat"
    assert settings.resolve("default") == WorkSettings()  # 90 s timed ACW on chat
    voice = settings.resolve("default", "voice")
    assert (voice.acw_seconds, voice.offer_timeout_s) == (30.0, 0.0)
    assert settings.server.host == "127.0.0.1" and settings.server.port == 7400
    assert settings.server.idle_timeout_s == 0.0 and settings.server.max_connections == 1024
    assert settings.metrics.port == 9400
    assert settings.journal.path == "./var/acwd.db" and settings.journal.synchronous == "normal"
    assert settings.journal.retention_days == 0
    assert settings.limits.max_notes_bytes == 32768 and settings.limits.max_fields == 64
    assert settings.limits.requests_per_s == 0.0


def test_config_md_example_loads_cleanly() -> None:
    settings = build(tomllib.loads(CONFIG_MD_EXAMPLE))
    assert settings.auth_tokens == (AuthToken(TOKEN_HASH, Role.AGENT, "alice"),)
    alice = settings.agents["alice"]
    assert (alice.capacity, dict(alice.skills or {}), alice.queues) == (
        3,
        {"english": 5, "billing": 3},
        ("default",),
    )
    assert settings.resolve("default", agent_id="alice").acw_seconds == 120.0
    assert settings.resolve("default", "voice").acw_seconds == 30.0
    assert settings.journal.commit_interval_ms == 2.0
    # The example spells out the defaults, so it means the same as an empty file, bar alice.
    assert dataclasses.replace(settings, auth_tokens=(), agents={}) == build({})


# --- resolution ----------------------------------------------------------------------------

LEVELS = ["defaults", "channel", "queue", "agent", "agent_channel"]


def layered(upto: int, key: str = "acw_seconds") -> dict[str, Any]:
    """A config where the first ``upto + 1`` levels each set ``key`` to a distinct value."""
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    data: dict[str, Any] = {
        "channels": {"email": {}},
        "queues": {"q": {"channel": "email"}},
        "agents": {"alice": {"channels": {"email": {}}}},
    }
    targets = [
        data.setdefault("defaults", {}),
        data["channels"]["email"],
        data["queues"]["q"],
        data["agents"]["alice"],
        data["agents"]["alice"]["channels"]["email"],
    ]
    for level in range(upto + 1):
        targets[level][key] = values[level]
    return data


@pytest.mark.parametrize("upto", range(len(LEVELS)), ids=LEVELS)
def test_each_level_wins_over_the_next(upto: int) -> None:
    settings = build(layered(upto))
    assert settings.resolve("q", agent_id="alice").acw_seconds == [10, 20, 30, 40, 50][upto]


def test_agent_channel_override_applies_to_that_channel_only() -> None:
    settings = build(layered(4))
    assert settings.resolve("q", "chat", "alice").acw_seconds == 40.0
    assert settings.resolve("q", "email", "bob").acw_seconds == 30.0  # bob is not configured
    assert settings.resolve("q").acw_seconds == 30.0


def test_explicit_channel_uses_that_channels_overrides() -> None:
    settings = build({"channels": {"email": {"acw_seconds": 300}}})
    assert settings.resolve("default").acw_seconds == 90.0
    assert settings.resolve("default", "email").acw_seconds == 300.0
    # An unknown channel contributes nothing, and never grows the cache per name.
    assert settings.resolve("default", "fax") == settings.resolve("default", "sms")


def test_resolve_is_cached() -> None:
    settings = build(layered(4))
    first = settings.resolve("q", agent_id="alice")
    assert settings.resolve("q", "email", "alice") is first
    assert settings.resolve("q", agent_id="nobody") is settings.resolve("q", agent_id="stranger")


def test_unknown_queue_is_a_key_error() -> None:
    settings = build({})
    with pytest.raises(KeyError):
        settings.resolve("sales")
    with pytest.raises(KeyError):
        settings.channel_of("sales")


@pytest.mark.parametrize("level", range(1, len(LEVELS)), ids=LEVELS[1:])
@pytest.mark.parametrize("key", WORK_SAMPLES)
def test_every_defaults_key_can_be_overridden_at_every_level(key: str, level: int) -> None:
    written, resolved = WORK_SAMPLES[key]
    data = layered(-1)  # the structure, no values
    target = [
        None,
        data["channels"]["email"],
        data["queues"]["q"],
        data["agents"]["alice"],
        data["agents"]["alice"]["channels"]["email"],
    ][level]
    assert target is not None
    target[key] = written
    value = getattr(build(data).resolve("q", agent_id="alice"), key)
    assert value == resolved and type(value) is type(resolved)


def test_samples_cover_every_work_setting() -> None:
    assert set(WORK_SAMPLES) == {f.name for f in dataclasses.fields(WorkSettings)}
    resolved = build({"defaults": {k: w for k, (w, _) in WORK_SAMPLES.items()}}).defaults
    assert resolved == WorkSettings(**{k: r for k, (_, r) in WORK_SAMPLES.items()})


def test_size_of() -> None:
    settings = build({"channels": {"video": {"size": 3}}})
    assert settings.size_of("video") == 3
    assert settings.size_of("chat") == 1
    assert settings.size_of("carrier-pigeon") == 1


# --- channels and queues as declared --------------------------------------------------------


def test_declared_channels_merge_over_the_builtin_ones() -> None:
    settings = build({"channels": {"voice": {"size": 2}, "email": {"acw_mode": "manual"}}})
    assert list(settings.channels) == ["chat", "voice", "email"]
    voice = settings.channels["voice"]
    assert voice.size == 2
    assert dict(voice.overrides) == {"acw_seconds": 30.0, "offer_timeout_s": 0.0}
    email = build({"channels": {"voice": {"acw_seconds": 45}}}).channels["voice"]
    assert dict(email.overrides) == {"acw_seconds": 45.0, "offer_timeout_s": 0.0}


def test_declared_queues_replace_the_default_queue() -> None:
    settings = build({"queues": {"sales": {"channel": "voice", "policy": "skills_best"}}})
    assert list(settings.queues) == ["sales"]
    assert settings.queues["sales"].policy is Policy.SKILLS_BEST
    assert settings.channel_of("sales") == "voice"
    assert settings.resolve("sales").acw_seconds == 30.0
    assert build({"queues": {}}).queues.keys() == {"default"}
    error = refused({"queues": {"sales": {}}, "agents": {"alice": {"queues": ["default"]}}})
    assert error.key == "agents.alice.queues"


def test_overflow_settings_that_are_fine() -> None:
    settings = build(
        {
            "queues": {
                "a": {"overflow_after_s": 60, "overflow_queue": "b"},
                "b": {"overflow_queue": "a"},  # configured but off (overflow_after_s = 0)
                "c": {"overflow_after_s": 5, "overflow_queue": "a"},
            }
        }
    )
    assert settings.queues["a"].overflow_queue == "b"
    assert settings.queues["c"].overflow_after_s == 5.0


def test_values_are_typed_and_read_only() -> None:
    settings = build(
        {
            "defaults": {"acw_seconds": 60, "dispositions": ["sale"]},
            "queues": {"q": {"acw_seconds": 5}},
            # The system's timeout code need not be one an agent may pick.
            "agents": {"alice": {"timeout_disposition": "expired", "skills": {"fr": 2}}},
        }
    )
    assert type(settings.defaults.acw_seconds) is float
    assert settings.defaults.dispositions == ("sale",)
    assert settings.resolve("q", agent_id="alice").timeout_disposition == "expired"
    with pytest.raises(TypeError):
        settings.queues["q"].overrides["acw_seconds"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.agents["alice"].skills["fr"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.queues["x"] = settings.queues["q"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.defaults.acw_seconds = 1.0  # type: ignore[misc]


def test_token_hash_is_normalised_to_lowercase() -> None:
    entry = {"sha256": TOKEN_HASH.upper(), "role": "admin"}
    settings = build({"auth": {"tokens": [entry]}})
    assert settings.auth_tokens == (AuthToken(TOKEN_HASH, Role.ADMIN, None),)


# --- validation: every rule names the key -------------------------------------------------

H = TOKEN_HASH
INVALID: list[tuple[Any, str, str]] = [
    # sections and keys
    ({"serer": {}}, "serer", "unknown section; did you mean 'server'?"),
    ({"server": [1]}, "server", "must be a table, not a list"),
    ({"server": {"prot": 1}}, "server.prot", "did you mean 'port'?"),
    ({"defaults": {"zzz": 1}}, "defaults.zzz", "unknown key; known: acw_mode, acw_seconds"),
    # numbers
    ({"server": {"port": 70000}}, "server.port", "must be between 0 and 65535, not 70000"),
    ({"server": {"port": True}}, "server.port", "must be a whole number, not true"),
    ({"server": {"port": "7400"}}, "server.port", "must be a whole number, not '7400'"),
    ({"server": {"hello_timeout_s": 0}}, "server.hello_timeout_s", "must be greater than 0"),
    ({"server": {"max_connections": 0}}, "server.max_connections", "must be 1 or more"),
    ({"defaults": {"acw_seconds": -1}}, "defaults.acw_seconds", "must not be negative"),
    ({"defaults": {"acw_seconds": False}}, "defaults.acw_seconds", "must be a number, not false"),
    ({"defaults": {"acw_seconds": "90"}}, "defaults.acw_seconds", "must be a number, not '90'"),
    ({"defaults": {"acw_seconds": 10**400}}, "defaults.acw_seconds", "is too large"),
    ({"defaults": {"acw_seconds": float("inf")}}, "defaults.acw_seconds", "finite number"),
    ({"defaults": {"max_extensions": 1.5}}, "defaults.max_extensions", "whole number, not 1.5"),
    ({"defaults": {"max_extensions": -1}}, "defaults.max_extensions", "must be 0 or more"),
    ({"defaults": {"sla_window_s": 0}}, "defaults.sla_window_s", "must be greater than 0"),
    ({"journal": {"retention_days": -1}}, "journal.retention_days", "must be 0 or more"),
    ({"journal": {"commit_interval_ms": -2}}, "journal.commit_interval_ms", "not be negative"),
    ({"limits": {"max_depth": 0}}, "limits.max_depth", "must be 1 or more, not 0"),
    ({"limits": {"requests_per_s": float("nan")}}, "limits.requests_per_s", "finite number"),
    ({"limits": {"requets_per_s": 1}}, "limits.requets_per_s", "did you mean 'requests_per_s'"),
    # strings and choices
    ({"server": {"host": ""}}, "server.host", "must not be empty"),
    ({"server": {"host": 5}}, "server.host", "must be a string, not 5"),
    ({"journal": {"synchronous": "x"}}, "journal.synchronous", "one of normal, full, off, not 'x'"),
    (
        {"defaults": {"acw_mode": "sometimes"}},
        "defaults.acw_mode",
        "must be one of off, timed, forced, manual, on_request, not 'sometimes'",
    ),
    ({"defaults": {"acw_mode": "x" * 100}}, "defaults.acw_mode", "not 'xxxxxxxx"),
    ({"defaults": {"acw_scope": "team"}}, "defaults.acw_scope", "must be one of agent, slot"),
    ({"defaults": {"require_disposition": "yes"}}, "defaults.require_disposition", "true or f"),
    ({"defaults": {"dispositions": "sale"}}, "defaults.dispositions", "must be a list, not 'sale'"),
    ({"defaults": {"dispositions": ["a", "a"]}}, "defaults.dispositions", "lists 'a' twice"),
    ({"defaults": {"dispositions": [""]}}, "defaults.dispositions", "must not be empty"),
    ({"defaults": {"timeout_disposition": "x" * 129}}, "defaults.timeout_disposition", "at most"),
    (
        {"defaults": {"on_decline_status": "busy"}},
        "defaults.on_decline_status",
        "must be one of available, away, offline, not 'busy'",
    ),
    ({"defaults": {"on_timeout_status": "acw"}}, "defaults.on_timeout_status", "available, away"),
    # server cross-checks
    ({"server": {"tls_cert": "c.pem"}}, "server.tls_key", "is required"),
    ({"server": {"tls_key": "k.pem"}}, "server.tls_cert", "is required"),
    ({"server": {"tls_client_ca": "ca.pem"}}, "server.tls_client_ca", "needs tls_cert"),
    ({"metrics": {"port": 7400}}, "metrics.port", "is the server's port too"),
    # channels
    ({"channels": []}, "channels", "must be a table"),
    ({"channels": {"a b": {}}}, "channels.a b", "must be 1-128 characters of A-Z a-z 0-9"),
    ({"channels": {"email": {"size": 0}}}, "channels.email.size", "must be 1 or more"),
    ({"channels": {"chat": {"policy": "x"}}}, "channels.chat.policy", "unknown key"),
    ({"channels": {"voice": {"acw_seconds": -1}}}, "channels.voice.acw_seconds", "negative"),
    ({"channels": {"voice": 3}}, "channels.voice", "must be a table, not 3"),
    # queues
    (
        {"queues": {"sales": {"policy": "fastest"}}},
        "queues.sales.policy",
        "must be one of longest_idle, least_active, skills_best, not 'fastest'",
    ),
    ({"queues": {"x" * 129: {}}}, "queues." + "x" * 129, "must be 1-128 characters"),
    ({"queues": {"s": {"channel": "fax"}}}, "queues.s.channel", "no channel 'fax' is defined"),
    ({"queues": {"s": {"overflow_queue": "s"}}}, "queues.s.overflow_queue", "the queue itself"),
    ({"queues": {"s": {"overflow_queue": "vip"}}}, "queues.s.overflow_queue", "not a queue"),
    ({"queues": {"s": {"overflow_queue": "a b"}}}, "queues.s.overflow_queue", "1-128 characters"),
    ({"queues": {"s": {"overflow_after_s": 30}}}, "queues.s.overflow_after_s", "overflow_queue"),
    ({"queues": {"s": {"priority": 1.5}}}, "queues.s.priority", "must be a whole number"),
    (
        {
            "queues": {
                "a": {"overflow_after_s": 1, "overflow_queue": "b"},
                "b": {"overflow_after_s": 1, "overflow_queue": "a"},
            }
        },
        "queues.a.overflow_queue",
        "makes an overflow cycle: a -> b -> a",
    ),
    (
        {
            "queues": {
                "a": {"overflow_after_s": 1, "overflow_queue": "b"},
                "b": {"overflow_after_s": 1, "overflow_queue": "c"},
                "c": {"overflow_after_s": 1, "overflow_queue": "b"},
            }
        },
        "queues.b.overflow_queue",
        "makes an overflow cycle: b -> c -> b",
    ),
    # agents
    ({"agents": {"al ice": {}}}, "agents.al ice", "must be 1-128 characters"),
    ({"agents": {"alice": {"capacity": 0}}}, "agents.alice.capacity", "must be 1 or more"),
    ({"agents": {"alice": {"skills": ["fr"]}}}, "agents.alice.skills", "must be a table"),
    ({"agents": {"a": {"skills": {"fr": -1}}}}, "agents.a.skills.fr", "must be 0 or more"),
    ({"agents": {"a": {"skills": {"f r": 1}}}}, "agents.a.skills.f r", "1-128 characters"),
    ({"agents": {"a": {"queues": []}}}, "agents.a.queues", "leave it out to serve every queue"),
    ({"agents": {"a": {"queues": ["sales"]}}}, "agents.a.queues", "'sales', which is not a queue"),
    ({"agents": {"a": {"queues": ["default"] * 2}}}, "agents.a.queues", "'default' twice"),
    ({"agents": {"a": {"channels": {"fax": {}}}}}, "agents.a.channels.fax", "no channel 'fax'"),
    ({"agents": {"a": {"channels": {"chat": {"size": 2}}}}}, "agents.a.channels.chat.size", "unk"),
    (
        {"agents": {"a": {"channels": {"chat": {"acw_seconds": -1}}}}},
        "agents.a.channels.chat.acw_seconds",
        "must not be negative",
    ),
    ({"agents": {"a": {"policy": "least_active"}}}, "agents.a.policy", "unknown key"),
    # auth
    ({"auth": {"tokens": {}}}, "auth.tokens", "must be a list of tables ([[auth.tokens]])"),
    ({"auth": {"token": []}}, "auth.token", "did you mean 'tokens'?"),
    ({"auth": {"tokens": [5]}}, "auth.tokens[0]", "must be a table"),
    ({"auth": {"tokens": [{"role": "admin"}]}}, "auth.tokens[0].sha256", "is required"),
    ({"auth": {"tokens": [{"sha256": H}]}}, "auth.tokens[0].role", "is required"),
    ({"auth": {"tokens": [{"sha256": "ab", "role": "admin"}]}}, "auth.tokens[0].sha256", "64 hex"),
    ({"auth": {"tokens": [{"sha256": 5, "role": "admin"}]}}, "auth.tokens[0].sha256", "64 hex"),
    ({"auth": {"tokens": [{"sha256": H, "role": "root"}]}}, "auth.tokens[0].role", "supervisor"),
    (
        {"auth": {"tokens": [{"sha256": H, "role": "agent"}]}},
        "auth.tokens[0].agent_id",
        "is required for role agent",
    ),
    (
        {"auth": {"tokens": [{"sha256": H, "role": "admin", "agent_id": "alice"}]}},
        "auth.tokens[0].agent_id",
        "only role agent takes one, not admin",
    ),
    (
        {"auth": {"tokens": [{"sha256": H, "role": "agent", "agent_id": "a b"}]}},
        "auth.tokens[0].agent_id",
        "1-128 characters",
    ),
    (
        {"auth": {"tokens": [{"sha256": H, "role": "admin"}, {"sha256": H, "role": "supervisor"}]}},
        "auth.tokens[1].sha256",
        "is the same token as auth.tokens[0]",
    ),
]


@pytest.mark.parametrize(("data", "key", "reason"), INVALID, ids=[k for _, k, _ in INVALID])
def test_invalid_values_are_refused_naming_the_key(data: Any, key: str, reason: str) -> None:
    error = refused(data)
    assert error.key == key
    assert reason in error.reason
    assert str(error) == f"test.toml: {key}: {error.reason}"


def test_a_token_in_the_sha256_field_is_not_echoed() -> None:
    error = refused({"auth": {"tokens": [{"sha256": "s3cret-token", "role": "admin"}]}})
    assert "s3cret" not in str(error)


def test_a_document_that_is_not_a_table_is_refused() -> None:
    error = refused([])  # type: ignore[arg-type]
    assert error.key == "(document)"


# --- views and diffs -----------------------------------------------------------------------


def test_to_dict_is_plain_data_and_round_trips() -> None:
    data = tomllib.loads(CONFIG_MD_EXAMPLE)
    data["auth"]["tokens"].append({"sha256": OTHER_HASH, "role": "admin"})
    data["agents"]["bob"] = {"channels": {"voice": {"acw_mode": "off"}}, "dispositions": ["x"]}
    settings = build(data)
    plain = settings.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert plain["queues"]["default"]["policy"] == "longest_idle"
    assert plain["channels"]["voice"] == {"size": 1, "acw_seconds": 30.0, "offer_timeout_s": 0.0}
    assert plain["agents"]["alice"] == {
        "capacity": 3,
        "skills": {"english": 5, "billing": 3},
        "queues": ["default"],
        "acw_seconds": 120.0,
    }
    assert plain["agents"]["bob"] == {
        "dispositions": ["x"],
        "channels": {"voice": {"acw_mode": "off"}},
    }
    assert plain["auth"]["tokens"][1] == {"sha256": OTHER_HASH, "role": "admin"}
    assert Settings.from_dict(plain) == settings
    assert Settings.from_dict(build({}).to_dict()) == build({})


def test_diff_of_equal_settings_is_empty() -> None:
    assert build({}).diff(build({})) == []
    example = tomllib.loads(CONFIG_MD_EXAMPLE)
    assert build(example).diff(build(example)) == []


def test_diff_lines() -> None:
    old = build(
        {
            "queues": {"sales": {}, "support": {"policy": "least_active"}},
            "agents": {"alice": {"skills": {"fr": 1}}, "bob": {}},
            "auth": {"tokens": [{"sha256": H, "role": "agent", "agent_id": "alice"}]},
        }
    )
    new = build(
        {
            "server": {"port": 7500},
            "queues": {
                "sales": {"acw_seconds": 120, "require_disposition": True},
                "support": {"policy": "skills_best", "dispositions": ["fixed"]},
                "vip": {"priority": 5},
            },
            "agents": {"alice": {"skills": {"fr": 2, "de": 1}, "acw_seconds": 60}, "carol": {}},
            "auth": {"tokens": [{"sha256": OTHER_HASH, "role": "admin"}]},
        }
    )
    assert old.diff(new) == [
        "server.port: 7400 -> 7500",
        f"auth.tokens.{H[:12]}: removed",
        f"auth.tokens.{OTHER_HASH[:12]}: added",
        "queues.sales.acw_seconds: 90.0 -> 120.0",
        "queues.sales.require_disposition: false -> true",
        'queues.support.policy: "least_active" -> "skills_best"',
        'queues.support.dispositions: [] -> ["fixed"]',
        "queues.vip: added",
        "agents.alice.skills.fr: 1 -> 2",
        "agents.alice.skills.de: unset -> 1",
        "agents.alice.acw_seconds: unset -> 60.0",
        "agents.bob: removed",
        "agents.carol: added",
    ]
    assert new.diff(old)[-2:] == ["agents.carol: removed", "agents.bob: added"]
    assert "agents.alice.acw_seconds: 60.0 -> unset" in new.diff(old)


def test_diff_of_a_default_shows_where_it_reaches() -> None:
    old, new = build({}), build({"defaults": {"acw_seconds": 60}})
    assert old.diff(new) == [
        "defaults.acw_seconds: 90.0 -> 60.0",
        "channels.chat.acw_seconds: 90.0 -> 60.0",  # voice sets its own 30 s
        "queues.default.acw_seconds: 90.0 -> 60.0",
    ]
    token_role = build({"auth": {"tokens": [{"sha256": H, "role": "admin"}]}})
    token_agent = build({"auth": {"tokens": [{"sha256": H, "role": "agent", "agent_id": "al"}]}})
    assert token_role.diff(token_agent) == [
        f'auth.tokens.{H[:12]}.role: "admin" -> "agent"',
        f'auth.tokens.{H[:12]}.agent_id: "" -> "al"',
    ]


def test_config_objects_built_directly_have_no_overrides() -> None:
    queue = QueueConfig("sales")
    assert (queue.channel, queue.policy, dict(queue.overrides)) == ("chat", Policy.LONGEST_IDLE, {})
    assert dict(ChannelConfig("chat").overrides) == {}
    assert AgentConfig("alice").capacity is None
