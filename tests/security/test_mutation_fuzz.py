"""Mutations of valid requests through the frame decoder and the request validator.

tests/protocol covers arbitrary bytes and arbitrary msgpack values; here the inputs start as
well-formed requests of every method and are changed a little (bytes flipped, inserted, cut;
values swapped for hostile ones; keys dropped or added), which reaches the deep branches that
random input rarely does. Only `ProtocolError` and `DomainError` may come out, errors name
nothing larger than a bounded excerpt of the input, and the messages before a corruption in a
stream are decoded exactly as sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from acwd.core.errors import DomainError, ErrorCode
from acwd.protocol.framing import MAX_MSGID, FrameDecoder, ProtocolError, Request
from acwd.protocol.messages import METHODS, Limits, parse_request
from benchmarks.fuzz import paths, replace_at, value_at

LIMITS = Limits(max_notes_bytes=64, max_field_keys=4)
DECODER = {"max_message_bytes": 4096, "max_depth": 6, "max_map_keys": 16, "max_array_items": 16}
MAX_ERROR_CHARS = 400

# One valid request of every method, with every argument it takes where that is possible.
VALID: dict[str, dict[str, Any]] = {
    "hello": {"token": "t0k3n", "client": "fuzz/1"},
    "ping": {},
    "subscribe": {"topics": ["agent", "work"], "queue": "q1", "agent_id": "a1"},
    "unsubscribe": {"topics": ["acw"]},
    "agent.login": {
        "agent_id": "a1",
        "status": "available",
        "reason": "start",
        "capacity": 2,
        "skills": {"en": 3},
        "queues": ["q1", "q2"],
    },
    "agent.logout": {"agent_id": "a1", "force": True},
    "agent.set_status": {"agent_id": "a1", "status": "away", "reason": "lunch"},
    "agent.get": {"agent_id": "a1"},
    "agent.list": {"state": "available", "queue": "q1"},
    "work.submit": {
        "queue": "q1",
        "work_id": "w1",
        "channel": "chat",
        "priority": 3,
        "skills": {"en": 1},
        "size": 1,
        "attributes": {"customer": {"tier": "gold"}, "n": [1, 2.5, None]},
    },
    "work.accept": {"work_id": "w1"},
    "work.decline": {"work_id": "w1", "reason": "busy"},
    "work.end": {"work_id": "w1"},
    "work.transfer": {"work_id": "w1", "queue": "q2"},
    "work.cancel": {"work_id": "w1", "reason": "gone"},
    "work.get": {"work_id": "w1"},
    "acw.request": {"work_id": "w1"},
    "acw.extend": {"work_id": "w1"},
    "acw.complete": {
        "work_id": "w1",
        "disposition": "resolved",
        "notes": "fine",
        "fields": {"case": 12, "ok": True},
        "follow_ups": [{"title": "call back", "due_at": 1.5, "assignee": "a2"}],
    },
    "acw.force_end": {"work_id": "w1"},
    "wrapup.get": {"work_id": "w1"},
    "wrapup.list": {"since": 0, "until": 10.5, "agent_id": "a1", "queue": "q1", "limit": 5},
    "queue.list": {},
    "queue.stats": {"queue": "q1"},
    "config.reload": {},
}

HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    float("nan"),
    float("inf"),
    -0.0,
    "",
    "\x00",
    "a" * 129,
    "x" * 5000,
    "é" * 40,
    "\U0001f600" * 20,
    "../../etc/passwd",
    "a1\n",
    " a1",
    [],
    [[]],
    {},
    {"": None},
    {"title": None},
    [{"title": "t", "due_at": "soon"}],
    {"k" * 3000: 1},
    {"k" * 3000: [-1]},
    b"\x00\x01",
    msgpack.ExtType(1, b"x"),
]

HOSTILE = st.sampled_from(HOSTILE_VALUES)
HOSTILE_KEY_NAMES = ["", "k" * 3000, "\x00", "é" * 100, "work_id", "__init__"]
HOSTILE_KEYS = st.sampled_from(HOSTILE_KEY_NAMES)


@st.composite
def mutated_messages(draw: st.DrawFn) -> Any:
    method = draw(st.sampled_from(sorted(VALID)))
    message: Any = [0, draw(st.integers(0, MAX_MSGID)), method, [dict(VALID[method])]]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "rekey", "drop", "add", "method", "wrap"]))
        event(kind)
        if kind == "replace":
            path = draw(st.sampled_from(paths(message)))
            message = replace_at(message, path, draw(HOSTILE))
        elif kind == "rekey":
            maps = [p for p in paths(message) if isinstance(value_at(message, p), dict)]
            maps = [p for p in maps if value_at(message, p)]
            if maps:
                path = draw(st.sampled_from(maps))
                old = value_at(message, path)
                key = draw(st.sampled_from(sorted(old)))
                renamed = {k: v for k, v in old.items() if k != key}
                value = draw(st.just(old[key]) | HOSTILE)
                renamed[draw(HOSTILE_KEYS)] = value
                message = replace_at(message, path, renamed)
        elif kind == "drop" and isinstance(message, list) and len(message) == 4:
            params = message[3]
            if isinstance(params, list) and params and isinstance(params[0], dict) and params[0]:
                key = draw(st.sampled_from(sorted(params[0], key=str)))
                kept = {k: v for k, v in params[0].items() if k != key}
                message = replace_at(message, (3, 0), kept)
        elif kind == "add" and isinstance(message, list) and len(message) == 4:
            params = message[3]
            if isinstance(params, list) and params and isinstance(params[0], dict):
                name = draw(st.sampled_from(["work_id", "agent_id", "notes", "x", "token", ""]))
                message = replace_at(message, (3, 0), {**params[0], name: draw(HOSTILE)})
        elif kind == "method" and isinstance(message, list) and len(message) == 4:
            other = draw(st.sampled_from([*METHODS, "", "ping ", "PING", "work.", "__class__"]))
            message = replace_at(message, (2,), other)
        elif kind == "wrap":
            message = draw(st.sampled_from([[message], {"m": message}, [0, 1, "ping", message]]))
    return message


def check(message: Any, record: Callable[[str], None] = event) -> None:
    decoder = FrameDecoder(**DECODER)
    try:
        decoder.feed(msgpack.packb(message, use_bin_type=True))
        request = decoder.next_message()
        assert request is not None
        spec, args = parse_request(request.method, request.params, LIMITS)
    except ProtocolError as exc:
        record("protocol")
        assert 0 < len(exc.message) <= MAX_ERROR_CHARS, exc.message
        assert exc.msgid is None or 0 <= exc.msgid <= MAX_MSGID
    except DomainError as exc:
        record(exc.code.value)
        assert exc.code in (ErrorCode.METHOD_NOT_FOUND, ErrorCode.INVALID_PARAMS)
        assert 0 < len(exc.message) <= MAX_ERROR_CHARS, exc.message
    else:
        record("valid")
        assert isinstance(args, spec.args)
        # What is accepted can be journalled: the journal stores JSON without NaN or infinity
        # (a NaN in work.submit attributes used to crash the daemon's journal).
        json.dumps(dataclasses.asdict(args), allow_nan=False)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(message=mutated_messages())
def test_mutated_requests_raise_only_protocol_or_domain_errors(message: Any) -> None:
    check(message)


def test_every_valid_request_is_valid() -> None:
    assert set(VALID) == set(METHODS)
    for method, arguments in VALID.items():
        spec, args = parse_request(method, [arguments], LIMITS)
        assert spec.name == method
        assert isinstance(args, spec.args)


STREAM = [
    msgpack.packb([0, i, method, [arguments]])
    for i, (method, arguments) in enumerate(VALID.items())
]


@settings(max_examples=500)
@given(
    at=st.integers(0, sum(map(len, STREAM)) - 1),
    mutation=st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]),
    byte=st.integers(0, 255),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
)
def test_a_corrupted_byte_leaves_the_messages_before_it_intact(
    at: int, mutation: str, byte: int, cuts: list[int]
) -> None:
    data = bytearray(b"".join(STREAM))
    if mutation == "flip":
        data[at] ^= byte or 0xFF
    elif mutation == "insert":
        data[at:at] = bytes([byte])
    elif mutation == "delete":
        del data[at]
    elif mutation == "truncate":
        del data[at:]
    else:
        data[at:at] = data[at : at + 40]
    event(mutation)
    ends = itertools.accumulate(map(len, STREAM))
    intact = sum(1 for end in ends if end <= at)  # messages wholly before the corrupted byte
    decoder = FrameDecoder(**(DECODER | {"max_message_bytes": 1 << 16}))
    got: list[Request] = []
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.feed(bytes(data[start:end]))
            while (request := decoder.next_message()) is not None:
                got.append(request)
    except ProtocolError as exc:
        assert exc.message
    expected = [msgpack.unpackb(message) for message in STREAM[:intact]]
    assert [[0, r.msgid, r.method, r.params] for r in got[:intact]] == expected
    for request in got:  # whatever came out after the corruption is still a well-formed request
        with contextlib.suppress(DomainError):
            parse_request(request.method, request.params, LIMITS)


def ignore(_: str) -> None:
    pass


def test_every_argument_of_every_method_against_every_hostile_value_and_key() -> None:
    """The exhaustive sweep that the random mutations above only sample."""
    checked = 0
    for method, arguments in VALID.items():
        message = [0, 1, method, [arguments]]
        for path in paths(message)[1:]:
            for value in HOSTILE_VALUES:
                check(replace_at(message, path, value), ignore)
                checked += 1
            original = value_at(message, path)
            if isinstance(original, dict):
                for key in HOSTILE_KEY_NAMES:
                    for value in [*original.values()][:1] + HOSTILE_VALUES:
                        check(replace_at(message, path, {**original, key: value}), ignore)
                        checked += 1
    assert checked > 5000
