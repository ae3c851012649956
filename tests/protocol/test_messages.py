"""parse_request: every method's arguments, every validation rule, and the role table."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acwd.core.errors import DomainError, ErrorCode
from acwd.protocol.messages import (
    ADMIN,
    AGENT,
    ARGUMENT_RULES,
    INTEGRATION,
    METHODS,
    ROLES,
    SUPERVISOR,
    AcwComplete,
    AcwExtend,
    AcwForceEnd,
    AcwRequest,
    AgentGet,
    AgentList,
    AgentLogin,
    AgentLogout,
    AgentSetStatus,
    Args,
    ConfigReload,
    FollowUp,
    Hello,
    Limits,
    Ping,
    QueueList,
    QueueStats,
    Subscribe,
    Unsubscribe,
    WorkAccept,
    WorkCancel,
    WorkDecline,
    WorkEnd,
    WorkGet,
    WorkSubmit,
    WorkTransfer,
    WrapupGet,
    WrapupList,
    parse_request,
)

PROTOCOL_METHODS = [
    "hello",
    "ping",
    "subscribe",
    "unsubscribe",
    "agent.login",
    "agent.logout",
    "agent.set_status",
    "agent.get",
    "agent.list",
    "work.submit",
    "work.accept",
    "work.decline",
    "work.end",
    "work.transfer",
    "work.cancel",
    "work.get",
    "acw.request",
    "acw.extend",
    "acw.complete",
    "acw.force_end",
    "wrapup.get",
    "wrapup.list",
    "queue.list",
    "queue.stats",
    "config.reload",
]


def parse(method: str, limits: Limits | None = None, /, **arguments: Any) -> Args:
    spec, args = parse_request(method, [arguments], *([limits] if limits else []))
    assert spec is METHODS[method]
    assert isinstance(args, spec.args)
    return args


def invalid(method: str, limits: Limits | None = None, /, **arguments: Any) -> DomainError:
    with pytest.raises(DomainError) as info:
        parse(method, limits, **arguments)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    argument = info.value.data["argument"]
    assert info.value.message.startswith(f"{argument}: ")
    return info.value


def problem(method: str, argument: str, **arguments: Any) -> str:
    """The problem text of an invalid_params error about ``argument``."""
    error = invalid(method, **arguments)
    assert error.data == {"argument": argument}
    return error.message.removeprefix(f"{argument}: ")


# --- Every method's happy path ------------------------------------------------------------------

HAPPY = [
    ("hello", {}, Hello()),
    ("hello", {"token": "s3cret", "client": "acwctl/0.1"}, Hello("s3cret", "acwctl/0.1")),
    ("ping", {}, Ping()),
    ("subscribe", {"topics": ["agent", "acw"]}, Subscribe(("agent", "acw"))),
    (
        "subscribe",
        {"topics": ["queue", "queue"], "queue": "sales", "agent_id": "a1"},
        Subscribe(("queue",), "sales", "a1"),
    ),
    ("unsubscribe", {"topics": ["work"]}, Unsubscribe(("work",))),
    ("agent.login", {"agent_id": "a1"}, AgentLogin("a1")),
    (
        "agent.login",
        {
            "agent_id": "jane.doe@acme:7",
            "status": "away",
            "reason": "training",
            "capacity": 3,
            "skills": {"en": 5, "fr": 0},
            "queues": ["sales", "support"],
        },
        AgentLogin(
            "jane.doe@acme:7", "away", "training", 3, {"en": 5, "fr": 0}, ("sales", "support")
        ),
    ),
    ("agent.logout", {"agent_id": "a1"}, AgentLogout("a1", force=False)),
    ("agent.logout", {"agent_id": "a1", "force": True}, AgentLogout("a1", force=True)),
    ("agent.set_status", {"agent_id": "a1", "status": "offline"}, AgentSetStatus("a1", "offline")),
    (
        "agent.set_status",
        {"agent_id": "a1", "status": "away", "reason": "lunch"},
        AgentSetStatus("a1", "away", "lunch"),
    ),
    ("agent.get", {"agent_id": "a1"}, AgentGet("a1")),
    ("agent.list", {}, AgentList()),
    ("agent.list", {"state": "acw", "queue": "q"}, AgentList("acw", "q")),
    ("work.submit", {"queue": "q"}, WorkSubmit("q")),
    (
        "work.submit",
        {
            "queue": "q",
            "work_id": "w-1",
            "channel": "voice",
            "priority": -3,
            "skills": {"en": 2},
            "size": 2,
            "attributes": {"customer": {"tier": "gold"}, "n": [1, 2]},
        },
        WorkSubmit(
            "q", "w-1", "voice", -3, {"en": 2}, 2, {"customer": {"tier": "gold"}, "n": [1, 2]}
        ),
    ),
    ("work.accept", {"work_id": "w1"}, WorkAccept("w1")),
    ("work.decline", {"work_id": "w1"}, WorkDecline("w1")),
    ("work.decline", {"work_id": "w1", "reason": "busy"}, WorkDecline("w1", "busy")),
    ("work.end", {"work_id": "w1"}, WorkEnd("w1")),
    ("work.transfer", {"work_id": "w1", "queue": "q2"}, WorkTransfer("w1", "q2")),
    ("work.cancel", {"work_id": "w1", "reason": "abandoned"}, WorkCancel("w1", "abandoned")),
    ("work.get", {"work_id": "w1"}, WorkGet("w1")),
    ("acw.request", {"work_id": "w1"}, AcwRequest("w1")),
    ("acw.extend", {"work_id": "w1"}, AcwExtend("w1")),
    ("acw.complete", {"work_id": "w1"}, AcwComplete("w1")),
    (
        "acw.complete",
        {
            "work_id": "w1",
            "disposition": "resolved",
            "notes": "Customer happy.",
            "fields": {"case": 12, "ok": True, "x": None, "f": 1.5, "s": "t"},
            "follow_ups": [
                {"title": "Call back"},
                {"title": "Mail", "due_at": 10, "assignee": "b"},
            ],
        },
        AcwComplete(
            "w1",
            "resolved",
            "Customer happy.",
            {"case": 12, "ok": True, "x": None, "f": 1.5, "s": "t"},
            (FollowUp("Call back"), FollowUp("Mail", 10.0, "b")),
        ),
    ),
    ("acw.force_end", {"work_id": "w1"}, AcwForceEnd("w1")),
    ("wrapup.get", {"work_id": "w1"}, WrapupGet("w1")),
    ("wrapup.list", {}, WrapupList()),
    (
        "wrapup.list",
        {"since": 1, "until": 2.5, "agent_id": "a1", "queue": "q", "limit": 10},
        WrapupList(1.0, 2.5, "a1", "q", 10),
    ),
    ("queue.list", {}, QueueList()),
    ("queue.stats", {"queue": "q"}, QueueStats("q")),
    ("config.reload", {}, ConfigReload()),
]


@pytest.mark.parametrize(("method", "arguments", "expected"), HAPPY)
def test_happy_path(method: str, arguments: dict[str, Any], expected: Args) -> None:
    assert parse(method, **arguments) == expected


def test_every_method_has_a_happy_path_and_empty_params_work_where_nothing_is_required() -> None:
    assert {method for method, _, _ in HAPPY} == set(METHODS)
    spec, args = parse_request("ping", [])
    assert (spec.name, args) == ("ping", Ping())
    with pytest.raises(DomainError, match="agent_id: is required"):
        parse_request("agent.get", [])


def test_int_is_converted_to_float() -> None:
    args = parse("wrapup.list", since=5)
    assert isinstance(args, WrapupList)
    assert type(args.since) is float


def test_nil_for_an_optional_argument_means_its_default() -> None:
    assert parse("agent.login", agent_id="a1", status=None, capacity=None) == AgentLogin("a1")
    assert parse("work.submit", queue="q", priority=None) == WorkSubmit("q", priority=0)


# --- Methods, params shape, argument names ------------------------------------------------------


def test_methods_are_exactly_those_of_the_protocol() -> None:
    assert sorted(METHODS) == sorted(PROTOCOL_METHODS)


def test_every_argument_has_one_rule_and_every_rule_is_used() -> None:
    used = {f.name for spec in METHODS.values() for f in dataclasses.fields(spec.args)}
    assert used == set(ARGUMENT_RULES)


@pytest.mark.parametrize("method", ["nope", "", "agent.Login", "x" * 1000])
def test_unknown_method(method: str) -> None:
    with pytest.raises(DomainError) as info:
        parse_request(method, [])
    assert info.value.code is ErrorCode.METHOD_NOT_FOUND
    assert len(info.value.message) < 200


@pytest.mark.parametrize("params", [[1], [{}, {}], ["agent_id"], [None]])
def test_params_shape(params: list[Any]) -> None:
    with pytest.raises(DomainError) as info:
        parse_request("ping", params)
    assert info.value.code is ErrorCode.INVALID_PARAMS
    assert info.value.message == "params: must be [] or [{named arguments}]"


def test_argument_names_must_be_strings() -> None:
    with pytest.raises(DomainError, match="params: argument names must be strings, got integer"):
        parse_request("ping", [{1: 2}])


def test_unknown_argument() -> None:
    error = invalid("agent.get", agent_id="a1", colour="red")
    assert error.data == {"argument": "colour"}
    assert error.message == "colour: unknown argument of agent.get, which takes agent_id"
    assert "which takes no arguments" in invalid("ping", x=1).message


def test_missing_required_argument() -> None:
    assert problem("agent.set_status", "status", agent_id="a1") == "is required"
    assert problem("work.transfer", "work_id", work_id=None, queue="q") == "is required"


# --- Validation rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "A-z_0.9:@", "x" * 128, "user@example.com", "sip:1001"])
def test_ids_accepted(good: str) -> None:
    assert parse("agent.get", agent_id=good) == AgentGet(good)
    assert parse("work.get", work_id=good) == WorkGet(good)


@pytest.mark.parametrize("bad", ["", "x" * 129, "a b", "é", "a\n", "a/b", "a#", 5, True, b"a"])
def test_ids_refused(bad: Any) -> None:
    assert problem("agent.get", "agent_id", agent_id=bad).startswith(
        "must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ -, got "
    )
    assert problem("work.end", "work_id", work_id=bad).startswith("must be 1 to 128 characters")
    assert problem("wrapup.list", "agent_id", agent_id=bad).startswith("must be 1 to 128")


def test_long_refused_values_are_not_echoed_in_full() -> None:
    assert len(problem("agent.get", "agent_id", agent_id="é" * 10_000)) < 120


@pytest.mark.parametrize("status", ["available", "away", "offline"])
def test_status_accepted(status: str) -> None:
    assert parse("agent.set_status", agent_id="a", status=status) == AgentSetStatus("a", status)


@pytest.mark.parametrize("bad", ["busy", "Available", "", 1, True, ["away"]])
def test_status_refused(bad: Any) -> None:
    text = problem("agent.set_status", "status", agent_id="a", status=bad)
    assert text.startswith("must be one of available, away, offline; got")
    assert problem("agent.login", "status", agent_id="a", status=bad).startswith("must be one of")


def test_agent_list_state() -> None:
    for state in ("offline", "away", "available", "busy", "acw"):
        assert parse("agent.list", state=state) == AgentList(state=state)
    assert problem("agent.list", "state", state="wrapping").startswith("must be one of offline")


@pytest.mark.parametrize(
    ("method", "argument", "extra"),
    [
        ("agent.login", "capacity", {"agent_id": "a"}),
        ("work.submit", "size", {"queue": "q"}),
        ("wrapup.list", "limit", {}),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, True, False, 1.0, "1"])
def test_positive_integers(method: str, argument: str, extra: dict[str, Any], bad: Any) -> None:
    text = problem(method, argument, **extra, **{argument: bad})
    assert text.startswith("must be a positive integer, got ")
    assert getattr(parse(method, **extra, **{argument: 1}), argument) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_attributes_and_fields_hold_finite_numbers_only(bad: float) -> None:
    # The journal stores JSON: a NaN here used to crash the daemon (found fuzzing the daemon).
    nested = {"a": [1, {"b": [2.5, bad]}]}
    assert "numbers must be finite" in problem(
        "work.submit", "attributes", queue="q", attributes=nested
    )
    assert "numbers must be finite" in problem(
        "acw.complete", "fields", work_id="w", fields={"x": bad}
    )
    assert parse("work.submit", queue="q", attributes={"a": [1e308, -0.0]}).attributes


def test_limit_fits_an_sql_parameter() -> None:
    # Found by benchmarks/fuzz.py: 2**63 reached SQLite and was answered `internal`.
    assert parse("wrapup.list", limit=2**31 - 1).limit == 2**31 - 1
    for bad in (2**31, 2**63, 2**64 - 1):
        assert problem("wrapup.list", "limit", limit=bad).startswith("must be at most 2147483647")


@pytest.mark.parametrize("bad", [True, 1.0, "1", [1]])
def test_priority_is_an_integer(bad: Any) -> None:
    assert problem("work.submit", "priority", queue="q", priority=bad).startswith(
        "must be an integer, got "
    )
    assert parse("work.submit", queue="q", priority=-(2**63)) == WorkSubmit("q", priority=-(2**63))


@pytest.mark.parametrize("argument", ["since", "until"])
@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ("1", "must be a number of Unix seconds, got string"),
        (True, "must be a number of Unix seconds, got boolean"),
        (float("nan"), "must be a finite number, got nan"),
        (float("inf"), "must be a finite number, got inf"),
    ],
)
def test_times(argument: str, bad: Any, text: str) -> None:
    assert problem("wrapup.list", argument, **{argument: bad}) == text


def test_force_is_a_boolean() -> None:
    assert (
        problem("agent.logout", "force", agent_id="a", force=1) == "must be a boolean, got integer"
    )


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (["en"], "must be a map of skill name to level, got array"),
        ({"en": -1}, "level of 'en' must be an integer >= 0, got -1"),
        ({"en": True}, "level of 'en' must be an integer >= 0, got boolean"),
        ({"en": 1.5}, "level of 'en' must be an integer >= 0, got 1.5"),
        ({"en": None}, "level of 'en' must be an integer >= 0, got nil"),
        ({"": 1}, "skill names must not be empty"),
        ({1: 1}, "keys must be strings, got integer"),
    ],
)
def test_skills(bad: Any, text: str) -> None:
    assert problem("agent.login", "skills", agent_id="a", skills=bad) == text
    assert problem("work.submit", "skills", queue="q", skills=bad) == text


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ("q", "must be an array of queue names, got string"),
        (["q", ""], "item 1 must be a string of 1 to 128 characters, got 0 characters"),
        ([5], "item 0 must be a string of 1 to 128 characters, got integer"),
    ],
)
def test_queues(bad: Any, text: str) -> None:
    assert problem("agent.login", "queues", agent_id="a", queues=bad) == text


def test_queue_and_channel_names() -> None:
    assert parse("queue.stats", queue="Sales EMEA") == QueueStats("Sales EMEA")
    assert parse("queue.stats", queue="q" * 128) == QueueStats("q" * 128)
    assert "got 129 characters" in problem("queue.stats", "queue", queue="q" * 129)
    assert "got 0 characters" in problem("work.transfer", "queue", work_id="w", queue="")
    assert "got integer" in problem("work.submit", "channel", queue="q", channel=1)


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (["agent", "presence"], "unknown topic 'presence'; topics are agent, work, acw, queue"),
        ([1], "unknown topic 1; topics are agent, work, acw, queue"),
        ([], "must name at least one of agent, work, acw, queue"),
        ("agent", "must be an array of topics, got string"),
    ],
)
def test_topics(bad: Any, text: str) -> None:
    assert problem("subscribe", "topics", topics=bad) == text
    assert problem("unsubscribe", "topics", topics=bad) == text


def test_notes_limit_in_utf8_bytes() -> None:
    for notes in ("x" * 32_768, "é" * 16_384, "😀" * 8_192):
        assert parse("acw.complete", work_id="w", notes=notes) == AcwComplete("w", notes=notes)
    for notes in ("x" * 32_769, "é" * 16_385, "😀" * 8_192 + "x"):
        assert problem("acw.complete", "notes", work_id="w", notes=notes) == (
            f"is {len(notes.encode())} bytes of UTF-8; at most 32768 allowed"
        )
    assert problem("acw.complete", "notes", work_id="w", notes=5) == "must be a string, got integer"


def test_fields_limits() -> None:
    at = {f"k{i}": i for i in range(64)}
    assert parse("acw.complete", work_id="w", fields=at) == AcwComplete("w", fields=at)
    too_many = {**at, "k64": 0}
    assert problem("acw.complete", "fields", work_id="w", fields=too_many) == (
        "has 65 keys; at most 64 allowed"
    )


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ({1: "x"}, "keys must be strings, got integer"),
        ({"a": [1]}, "value of 'a' must be nil, boolean, integer, float or string, got array"),
        ({"a": {"b": 1}}, "value of 'a' must be nil, boolean, integer, float or string, got map"),
        ({"a": b"x"}, "value of 'a' must be nil, boolean, integer, float or string, got binary"),
        ([1], "must be a map of field name to scalar, got array"),
    ],
)
def test_fields_values(bad: Any, text: str) -> None:
    assert problem("acw.complete", "fields", work_id="w", fields=bad) == text


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ({"title": "x"}, "must be an array of maps {title, due_at?, assignee?}, got map"),
        (["x"], "item 0: must be a map of title, due_at?, assignee?, got string"),
        ([{"title": "a"}, {}], "item 1: title is missing"),
        ([{"title": None}], "item 0: title is missing"),
        ([{"title": 5}], "item 0: title must be a string, got integer"),
        ([{"title": "a", "due_at": "tomorrow"}], "item 0: due_at must be a number of Unix seconds"),
        ([{"title": "a", "assignee": 7}], "item 0: assignee must be a string, got integer"),
        ([{"title": "a", "owner": "b"}], "item 0: unknown key 'owner'; a follow-up has title"),
        ([{"title": "a", 1: "b"}], "item 0: keys must be strings, got integer"),
    ],
)
def test_follow_ups(bad: Any, text: str) -> None:
    assert problem("acw.complete", "follow_ups", work_id="w", follow_ups=bad).startswith(text)


def test_follow_up_optional_parts_may_be_nil() -> None:
    args = parse("acw.complete", work_id="w", follow_ups=[{"title": "t", "due_at": None}])
    assert args == AcwComplete("w", follow_ups=(FollowUp("t"),))


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        ([1], "must be a map of string keys to values, got array"),
        ({1: 1}, "keys must be strings, got integer"),
    ],
)
def test_attributes(bad: Any, text: str) -> None:
    assert problem("work.submit", "attributes", queue="q", attributes=bad) == text


@pytest.mark.parametrize(
    ("method", "argument", "extra"),
    [
        ("hello", "token", {}),
        ("hello", "client", {}),
        ("agent.set_status", "reason", {"agent_id": "a", "status": "away"}),
        ("work.cancel", "reason", {"work_id": "w"}),
        ("acw.complete", "disposition", {"work_id": "w"}),
    ],
)
def test_strings(method: str, argument: str, extra: dict[str, Any]) -> None:
    assert problem(method, argument, **extra, **{argument: b"x"}) == "must be a string, got binary"


def test_limits_are_parameters() -> None:
    small = Limits(max_notes_bytes=4, max_field_keys=1)
    assert parse("acw.complete", small, work_id="w", notes="abcd") == AcwComplete("w", notes="abcd")
    assert invalid("acw.complete", small, work_id="w", notes="abcde").data == {"argument": "notes"}
    assert invalid("acw.complete", small, work_id="w", fields={"a": 1, "b": 2}).message == (
        "fields: has 2 keys; at most 1 allowed"
    )


# --- Roles --------------------------------------------------------------------------------------


def roles_of(method: str) -> frozenset[str]:
    return METHODS[method].roles


def test_agent_role_methods() -> None:
    agent = {name for name, spec in METHODS.items() if AGENT in spec.roles}
    assert agent == {
        "hello",
        "ping",
        "subscribe",
        "unsubscribe",
        "agent.login",
        "agent.logout",
        "agent.set_status",
        "agent.get",
        "work.accept",
        "work.decline",
        "work.end",
        "work.transfer",
        "work.get",
        "acw.request",
        "acw.extend",
        "acw.complete",
        "wrapup.get",
        "queue.list",
    }


def test_role_table() -> None:
    everyone = ROLES
    assert roles_of("hello") == roles_of("ping") == everyone
    assert roles_of("config.reload") == {ADMIN}
    assert roles_of("acw.force_end") == {SUPERVISOR, ADMIN}
    assert roles_of("work.submit") == roles_of("work.cancel") == {INTEGRATION, ADMIN}
    assert INTEGRATION in roles_of("work.transfer")
    assert roles_of("agent.set_status") == roles_of("agent.logout") == {AGENT, SUPERVISOR, ADMIN}
    reads = ["agent.get", "agent.list", "work.get", "wrapup.get", "wrapup.list", "queue.list"]
    for read in [*reads, "queue.stats"]:
        assert {INTEGRATION, SUPERVISOR, ADMIN} <= roles_of(read), read


def test_admin_may_call_everything_and_roles_are_known() -> None:
    for spec in METHODS.values():
        assert ADMIN in spec.roles
        assert spec.roles <= ROLES


def test_agent_scoping() -> None:
    for spec in METHODS.values():
        if spec.agent_scoped:
            assert AGENT in spec.roles, spec.name
            assert spec.scope_argument in spec.argument_names, spec.name
        else:
            assert spec.scope_argument is None
    assert METHODS["agent.login"].scope_argument == "agent_id"
    assert METHODS["subscribe"].scope_argument == "agent_id"
    assert METHODS["work.accept"].scope_argument == "work_id"
    assert METHODS["wrapup.get"].scope_argument == "work_id"
    assert not METHODS["queue.list"].agent_scoped


# --- Properties ---------------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500)
@given(
    method=st.sampled_from(sorted(METHODS)),
    arguments=st.dictionaries(
        st.sampled_from(sorted(ARGUMENT_RULES)) | st.text(max_size=5), json_like, max_size=5
    ),
)
def test_parse_request_raises_only_domain_errors(method: str, arguments: dict[str, Any]) -> None:
    try:
        spec, args = parse_request(method, [arguments])
    except DomainError as exc:
        assert exc.code is ErrorCode.INVALID_PARAMS
        assert exc.message.startswith(f"{exc.data['argument']}: ")
    else:
        assert isinstance(args, spec.args)
        assert set(arguments) <= set(spec.argument_names)
