"""FrameDecoder and the encoders: framing, limits, hostile input, msgid recovery."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgpack  # type: ignore[import-untyped]
import msgpack.fallback  # type: ignore[import-untyped]
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from acwd.core.errors import DomainError
from acwd.protocol.framing import (
    MAX_MSGID,
    FrameDecoder,
    ProtocolError,
    Request,
    encode_event,
    encode_notification,
    encode_request,
    encode_response,
)
from acwd.protocol.messages import ARGUMENT_RULES, METHODS, parse_request


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def drain(decoder: FrameDecoder) -> list[Request]:
    out = []
    while (request := decoder.next_message()) is not None:
        out.append(request)
    return out


def decode(data: bytes, **limits: int) -> list[Request]:
    decoder = FrameDecoder(**limits)
    decoder.feed(data)
    return drain(decoder)


def protocol_error(data: bytes, **limits: int) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, **limits)
    return info.value


@pytest.fixture(params=["c", "python"])
def unpacker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test against the C unpacker and msgpack's pure-Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(msgpack, "Unpacker", msgpack.fallback.Unpacker)
    yield request.param


PIPELINE = [
    Request(0, "ping", []),
    Request(7, "agent.login", [{"agent_id": "a-1", "skills": {"en": 3}, "queues": ["q1"]}]),
    Request(MAX_MSGID, "work.submit", [{"queue": "q", "attributes": {"x": [1.5, None, "é"]}}]),
]
PIPELINE_BYTES = b"".join(encode_request(r.msgid, r.method, r.params) for r in PIPELINE)


# --- Framing ------------------------------------------------------------------------------------


def test_pipelined_messages_in_one_feed(unpacker: str) -> None:
    assert decode(PIPELINE_BYTES) == PIPELINE


def test_pipelined_messages_split_at_every_byte_boundary(unpacker: str) -> None:
    for cut in range(len(PIPELINE_BYTES) + 1):
        decoder = FrameDecoder()
        decoder.feed(PIPELINE_BYTES[:cut])
        first = drain(decoder)
        decoder.feed(PIPELINE_BYTES[cut:])
        assert first + drain(decoder) == PIPELINE, cut


def test_byte_at_a_time(unpacker: str) -> None:
    decoder = FrameDecoder()
    got = []
    for byte in PIPELINE_BYTES:
        decoder.feed(bytes([byte]))
        got += drain(decoder)
    assert got == PIPELINE


def test_no_message_until_complete() -> None:
    decoder = FrameDecoder()
    assert decoder.next_message() is None
    decoder.feed(PIPELINE_BYTES[:-1])
    assert drain(decoder) == PIPELINE[:2]
    assert decoder.next_message() is None


def test_many_small_messages_may_exceed_the_message_limit_together(unpacker: str) -> None:
    one = encode_request(1, "ping", [])
    assert decode(one * 1000, max_message_bytes=len(one)) == [Request(1, "ping", [])] * 1000


# --- Limits: exactly at, and one past -----------------------------------------------------------


def request_of_size(size: int, msgid: int = 9) -> bytes:
    """A ping request padded with a string argument to exactly ``size`` bytes."""
    for pad in range(size, -1, -1):
        data = encode_request(msgid, "ping", [{"pad": "x" * pad}])
        if len(data) == size:
            return data
    raise AssertionError(size)


@pytest.mark.parametrize("size", [100, 300, 70_000])
def test_message_size_limit(unpacker: str, size: int) -> None:
    data = request_of_size(size)
    assert decode(data + data, max_message_bytes=size)[0].msgid == 9
    error = protocol_error(request_of_size(size + 1), max_message_bytes=size)
    assert error.message == f"The message is larger than {size} bytes."
    assert error.msgid == 9


def test_oversized_message_is_refused_before_it_is_complete(unpacker: str) -> None:
    decoder = FrameDecoder(max_message_bytes=1000)
    head = request_of_size(5000, msgid=4)[:1001]  # the first 1001 bytes only
    decoder.feed(head)
    with pytest.raises(ProtocolError, match="larger than 1000 bytes") as info:
        decoder.next_message()
    assert info.value.msgid == 4


def nested(depth: int, msgid: int = 3) -> bytes:
    """A request whose deepest container is at ``depth`` (the envelope is depth 1)."""
    value: Any = []  # at depth 4: inside the envelope, params and the arguments map
    for _ in range(depth - 4):
        value = [value]
    return encode_request(msgid, "ping", [{"deep": value}])


def test_depth_limit(unpacker: str) -> None:
    assert decode(nested(32))[0].msgid == 3
    error = protocol_error(nested(33))
    assert error.message == "The message is nested deeper than 32 levels."
    assert error.msgid == 3
    assert decode(nested(5), max_depth=5)
    assert protocol_error(nested(6), max_depth=5).msgid == 3


def test_depth_limit_counts_empty_maps() -> None:
    at_limit = encode_request(1, "ping", [{"a": {}}])  # envelope, params, map, map
    assert decode(at_limit, max_depth=4)
    assert "nested deeper than 3" in protocol_error(at_limit, max_depth=3).message


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"])  # array of 1; map of 1 with key "k"
def test_100k_levels_rejected_without_crashing(unpacker: str, opener: bytes) -> None:
    data = b"\x94\x00\x05\xa4ping\x91" + opener * 100_000 + b"\xc0"
    error = protocol_error(data)
    assert error.message == "The message is nested deeper than 32 levels."
    assert error.msgid == 5


def test_deep_nesting_rejected_while_incomplete(unpacker: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x94\x00\x06\xa4ping\x91" + b"\x91" * 100_000)  # never completes
    with pytest.raises(ProtocolError, match="nested deeper") as info:
        decoder.next_message()
    assert info.value.msgid == 6


def test_1024_levels_inside_msgpack_stack_rejected_by_the_walk() -> None:
    data = b"\x94\x00\x05\xa4ping\x91" + b"\x91" * 1018 + b"\xc0"  # 1020 levels in all
    assert protocol_error(data).msgid == 5


def test_map_keys_limit(unpacker: str) -> None:
    at = {f"k{i}": i for i in range(1024)}
    assert decode(encode_request(2, "ping", [{"m": at}]))
    error = protocol_error(encode_request(2, "ping", [{"m": {**at, "one": 1}}]))
    assert error.message == "A map has more than 1024 keys."
    assert error.msgid == 2
    assert protocol_error(encode_request(2, "ping", [{"a": 1, "b": 2}]), max_map_keys=1).msgid == 2


def test_array_items_limit(unpacker: str) -> None:
    assert decode(encode_request(2, "ping", [{"a": [0] * 10_000}]))
    error = protocol_error(encode_request(2, "ping", [{"a": [0] * 10_001}]))
    assert error.message == "An array has more than 10000 items."
    assert error.msgid == 2


def test_containers_limit(unpacker: str) -> None:
    # The envelope, params, the map and "a" are 4 containers; 9_996 more arrays make 10_000.
    at = encode_request(4, "ping", [{"a": [[] for _ in range(9_996)]}])
    assert decode(at)
    error = protocol_error(encode_request(4, "ping", [{"a": [[] for _ in range(9_997)]}]))
    assert error.message == "The message has more than 10000 arrays and maps."
    assert error.msgid == 4
    assert protocol_error(encode_request(4, "ping", [{"a": [{}, {}]}]), max_containers=4)


def test_a_1mib_bomb_of_empty_arrays_stops_at_the_containers_limit(unpacker: str) -> None:
    """1 MiB of nested empty arrays would be ~65 MB of lists and ~0.5 s of decoding."""
    inner = b"\xdc" + (10_000).to_bytes(2, "big") + b"\x90" * 10_000
    data = b"\x94\x00\x08\xa4ping\x91\x81\xa1x\xdc" + (100).to_bytes(2, "big") + inner * 100
    assert len(data) < 1_048_576
    error = protocol_error(data)
    assert error.message == "The message has more than 10000 arrays and maps."
    assert error.msgid == 8


def test_containers_are_counted_per_message_and_once_when_fed_in_pieces(unpacker: str) -> None:
    message = encode_request(5, "ping", [{"a": [[1] for _ in range(6_000)]}])
    decoder = FrameDecoder()
    stream, got = message * 3, []
    for i in range(0, len(stream), 997):  # in pieces (the fallback re-parses on every piece)
        decoder.feed(stream[i : i + 997])
        got += drain(decoder)
    assert [r.msgid for r in got] == [5, 5, 5]
    decoder = FrameDecoder()
    decoder.feed(message * 3)
    assert [r.msgid for r in drain(decoder)] == [5, 5, 5]


def test_string_bytes_limit(unpacker: str) -> None:
    assert decode(encode_request(2, "ping", [{"s": "é" * 50}]), max_str_bytes=100)
    error = protocol_error(encode_request(2, "ping", [{"s": "x" * 101}]), max_str_bytes=100)
    assert error.message == "A string is longer than 100 bytes."
    assert error.msgid == 2


# --- Garbage and wrong shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x94\x00\x01\xc1", "The bytes are not MessagePack (byte 0xc1 is never used)."),
        (b"\x94\x00\x01\xa2\xff\xfe\x90", "A string is not valid UTF-8."),
        (pack([0, 1, b"ping", []]), "method must be a string, got binary."),
        (pack([0, 1, "ping", [{"a": b"\x00"}]]), "Binary data is not accepted"),
        (pack([0, 1, "ping", [{"a": msgpack.ExtType(5, b"x")}]]), "extension types"),
        (pack([0, 1, "ping", [{"t": msgpack.Timestamp(1)}]]), "extension types"),
        (b"\x94\x00\x01\xa4ping\x91\x81\xa1t\xd5\xff\x00\x00", "not valid MessagePack"),
        (pack([0, 1, "ping", [{1: "x"}]]), "Map keys must be strings, got integer."),
        (pack([0, 1, "ping", [{"a": {b"k": 1}}]]), "Map keys must be strings, got binary."),
        (pack([0, 1, "ping", [{"a": {None: 1}}]]), "Map keys must be strings, got nil."),
        (b"\x94\x00\x01\xa4ping\x91\x81\x91\x01\x02", "A map key is an array or map"),
    ],
)
def test_bad_bytes(unpacker: str, data: bytes, message: str) -> None:
    error = protocol_error(data)
    assert message in error.message
    assert error.msgid == 1


@pytest.mark.parametrize(
    ("message", "text", "msgid"),
    [
        ({"a": 1}, "A message must be an array [0, msgid, method, params], got map.", None),
        (5, "got integer", None),
        ([], "got an empty array", None),
        ([2, "event", []], "Notifications from a client are not used in protocol v1", None),
        ([1, 4, None, "ok"], "A client does not send responses", None),
        ([3, 1, "ping", []], "Message type must be 0 (request), got 3", None),
        ([True, 1, "ping", []], "got boolean", None),
        (["0", 1, "ping", []], "got string", None),
        ([0, -1, "ping", []], "msgid must be an integer from 0 to 4294967295, got -1.", None),
        ([0, 2**32, "ping", []], "got 4294967296", None),
        ([0, True, "ping", []], "got boolean", None),
        ([0, 1.0, "ping", []], "got float", None),
        ([0, 8, "ping"], "A request has 4 items [0, msgid, method, params], got 3.", 8),
        ([0, 8, "ping", [], None], "got 5", 8),
        ([0, 8, 5, []], "method must be a string, got integer.", 8),
        ([0, 8, None, []], "got nil", 8),
        ([0, 8, "ping", {}], "params must be an array, got map.", 8),
        ([0, 8, "ping", None], "got nil", 8),
        (
            [0, 8, "ping", [{}, {}]],
            "params must be [] or [{named arguments}], got an array of 2",
            8,
        ),
        ([0, 8, "ping", [5]], "starting with integer", 8),
        ([0, 8, "ping", [[]]], "starting with array", 8),
    ],
)
def test_wrong_shapes(unpacker: str, message: Any, text: str, msgid: int | None) -> None:
    error = protocol_error(pack(message))
    assert text in error.message
    assert error.msgid == msgid


def test_msgid_bounds_accepted() -> None:
    assert [r.msgid for r in decode(pack([0, 0, "ping", []]) + pack([0, MAX_MSGID, "p", []]))] == [
        0,
        MAX_MSGID,
    ]


def test_error_after_good_messages_names_the_bad_ones_msgid(unpacker: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(PIPELINE_BYTES + b"\x94\xcd\x00\x00\xcd\x01\x00\xa4ping\x91\xc1")
    assert [decoder.next_message() for _ in PIPELINE] == PIPELINE
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.msgid == 256  # type and msgid in non-minimal encodings


def test_garbage_has_no_msgid() -> None:
    assert protocol_error(b"\xc1").msgid is None
    assert protocol_error(b"\x92\x00\xc1").msgid is None  # a msgid that never arrived


def test_poisoned_after_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(pack([0, 1, 5, []]))
    with pytest.raises(ProtocolError) as first:
        decoder.next_message()
    with pytest.raises(ProtocolError) as again:
        decoder.next_message()
    assert again.value is first.value
    with pytest.raises(ProtocolError):
        decoder.feed(PIPELINE_BYTES)


def test_protocol_error_to_wire() -> None:
    error = ProtocolError("The bytes are not MessagePack.", 3)
    assert error.to_wire() == {"code": "protocol", "message": "The bytes are not MessagePack."}
    assert str(error) == "The bytes are not MessagePack."


# --- Encoders -----------------------------------------------------------------------------------


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def test_encode_response() -> None:
    assert unpack(encode_response(5, None, {"time": 1.5})) == [1, 5, None, {"time": 1.5}]
    error = {"code": "not_found", "message": "No agent a1."}
    assert unpack(encode_response(6, error, None)) == [1, 6, error, None]
    with pytest.raises(ValueError):
        encode_response(7, error, {"x": 1})


def test_encode_notification_and_event() -> None:
    event = {"type": "acw.started", "at": 10.0, "agent_id": "a1"}
    assert unpack(encode_event(event)) == [2, "event", [event]]
    assert encode_event(event) == encode_notification("event", [event])


def test_encode_request_round_trips_through_the_decoder() -> None:
    data = encode_request(MAX_MSGID, "agent.get", [{"agent_id": "a1"}])
    assert decode(data) == [Request(MAX_MSGID, "agent.get", [{"agent_id": "a1"}])]
    for msgid in (-1, MAX_MSGID + 1):
        with pytest.raises(ValueError):
            encode_request(msgid, "ping", [])


def test_encoding_uses_float64_str_and_bin_types() -> None:
    data = encode_response(1, None, [0.1, "s", b"b"])
    assert b"\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a" in data  # 0.1 as float64
    assert b"\xa1s" in data and b"\xc4\x01b" in data
    assert unpack(data)[3] == [0.1, "s", b"b"]


# --- Properties ---------------------------------------------------------------------------------


@settings(max_examples=300)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_message_bytes=200, max_depth=4, max_map_keys=8, max_array_items=8)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.feed(data[start:end])
            drain(decoder)
    except ProtocolError as exc:
        assert exc.message
        assert exc.msgid is None or 0 <= exc.msgid <= MAX_MSGID


def msgpack_values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> Any:
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=30,
    )


plain = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
values = msgpack_values(plain | st.binary(max_size=5), st.text(max_size=10) | st.integers(-5, 5))
names = st.sampled_from(sorted(ARGUMENT_RULES))
arguments = st.dictionaries(
    names,
    st.sampled_from(["a1", "available", "agent", "", "x y"])
    | st.integers(-2, 3)
    | msgpack_values(plain, st.text(max_size=10)),
    max_size=4,
)
envelopes = st.tuples(
    st.sampled_from([0, 1, 2, -1, 2**32]),
    st.integers(-1, 2**32),
    st.sampled_from(sorted(METHODS)) | st.text(max_size=10) | st.binary(max_size=3),
    st.lists(arguments, max_size=2) | values,
).map(list)
# Well-formed envelopes with arbitrary arguments: these reach parse_request.
requests = st.tuples(
    st.just(0),
    st.integers(0, MAX_MSGID),
    st.sampled_from(sorted(METHODS)),
    st.lists(arguments, max_size=1),
).map(list)


def decode_and_parse(message: Any) -> None:
    """Feed one packed value; only ProtocolError and DomainError may come out."""
    decoder = FrameDecoder(max_depth=6)
    decoder.feed(pack(message))
    try:
        request = decoder.next_message()
        assert request is not None
        parse_request(request.method, request.params)
        event("parsed")
    except (ProtocolError, DomainError) as exc:
        event(type(exc).__name__)
        assert str(exc)


@settings(max_examples=500)
@given(message=values | envelopes)
def test_arbitrary_values_raise_only_protocol_or_domain_errors(message: Any) -> None:
    decode_and_parse(message)


@settings(max_examples=500)
@given(message=requests)
def test_arbitrary_arguments_raise_only_protocol_or_domain_errors(message: Any) -> None:
    decode_and_parse(message)
