"""MessagePack-RPC framing, sans IO: a request decoder with hard limits, and the encoders.

The decoder never holds more than one message's worth of bytes in the unpacker (our own
``_pending`` buffer holds what was fed but not yet needed), so a client that pipelines many small
requests in one read is not mistaken for one that sends an oversized message.

Nesting: msgpack's C unpacker keeps an explicit stack of 1024 containers and raises
``StackError`` past it (100,000 nested arrays fail in well under a millisecond, also while the
message is still incomplete; the pure-Python fallback has the same limit), so nothing recurses
on the Python or C stack. Within those 1024 levels ``max_depth`` is enforced after decoding by an
iterative walk, which also rejects binary, extension types and non-string map keys.

Amplification: an empty array is one byte on the wire and some 60 bytes as a Python list, so a
1 MiB message of nested empty arrays decodes into ~65 MB and holds the event loop for ~0.5 s.
``max_containers`` caps the arrays and maps of one message; it is counted by the unpacker's hooks
as each container completes, so the decoder stops there, not after building everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]

from acwd.core.errors import ErrorCode

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2
MAX_MSGID: Final = 2**32 - 1

# An array header (<= 5 bytes), the type (<= 9) and a msgid (<= 9) fit in 32 bytes; kept per
# message so an error found mid-message can still name its msgid.
_HEAD_BYTES: Final = 32
# Bytes handed to the unpacker per step, so it never buffers far past the message in progress.
_FEED_STEP: Final = 65_536

_SCALARS: Final = frozenset({type(None), bool, int, float, str})
_REQUEST_SHAPE: Final = "[0, msgid, method, params]"


class ProtocolError(Exception):
    """A message that breaks the wire protocol: answer ``protocol`` and close the connection."""

    def __init__(self, message: str, msgid: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.msgid = msgid

    def to_wire(self) -> dict[str, Any]:
        """The error map of the protocol: ``{code, message}``."""
        return {"code": ErrorCode.PROTOCOL.value, "message": self.message}


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed request; ``params`` is ``[]`` or ``[{named arguments}]``."""

    msgid: int
    method: str
    params: list[Any]


def wire_kind(value: object) -> str:
    """The msgpack name of a decoded value's type, for error messages (never its contents)."""
    if value is None:
        return "nil"
    for kind, name in _KIND_NAMES:
        if isinstance(value, kind):
            return name
    return "extension type"


_KIND_NAMES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),  # before int: bool is an int subclass
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (bytes, "binary"),
    (list, "array"),
    (dict, "map"),
)


def _is_msgid(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_MSGID


class FrameDecoder:
    """Turns a byte stream into `Request` objects; any violation raises `ProtocolError`.

    After a `ProtocolError` the decoder is poisoned: every later call raises it again.
    """

    def __init__(
        self,
        max_message_bytes: int = 1_048_576,
        max_depth: int = 32,
        max_map_keys: int = 1024,
        max_array_items: int = 10_000,
        max_str_bytes: int = 1_048_576,
        max_containers: int = 10_000,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_containers = max_containers
        self._containers = 0  # arrays and maps completed in the message in progress
        self.max_depth = max_depth
        self.max_map_keys = max_map_keys
        self.max_array_items = max_array_items
        self.max_str_bytes = max_str_bytes
        self._unpacker = msgpack.Unpacker(
            raw=False,
            # Non-str keys are decoded and refused by the walk, which can still name the msgid.
            strict_map_key=False,
            max_buffer_size=max_message_bytes + 1,
            max_str_len=max_str_bytes,
            max_bin_len=max_str_bytes,
            max_ext_len=max_str_bytes,
            max_array_len=max_array_items,
            max_map_len=max_map_keys,
            list_hook=self._count_container,
            object_hook=self._count_container,
        )
        # The C unpacker resumes an incomplete message where it stopped; the pure-Python one
        # parses it again from its start (calling the hooks again), so it counts from zero.
        self._recounts = type(self._unpacker).__module__.startswith("msgpack.fallback")
        self._pending = bytearray()  # received, not yet given to the unpacker
        self._fed = 0  # stream offset up to which the unpacker has been fed
        self._msg_start = 0  # stream offset where the message in progress starts
        self._head = bytearray()  # its first bytes, up to _HEAD_BYTES
        self._last_chunk = b""  # the bytes last fed; every message in progress starts in it
        self._last_chunk_start = 0
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes; they are decoded by `next_message`."""
        if self._error is not None:
            raise self._error
        self._pending += data

    def next_message(self) -> Request | None:
        """The next complete request, or None until more bytes are fed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_message()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next_message(self) -> Request | None:
        while True:
            if self._recounts:
                self._containers = 0
            try:
                message = self._unpacker.unpack()
            except msgpack.OutOfData:
                if self._fed - self._msg_start > self.max_message_bytes:
                    raise self._too_large(self._peek_msgid()) from None
                if not self._pending:
                    return None
                self._feed_unpacker()
                continue
            except Exception as exc:
                # Untrusted bytes: whatever the unpacker raises means the input is bad, and its
                # state is then undefined, so the connection must go.
                raise ProtocolError(self._decode_problem(exc), self._peek_msgid()) from None
            self._containers = 0
            end: int = self._unpacker.tell()
            if end - self._msg_start > self.max_message_bytes:
                raise self._too_large(_msgid_of(message))
            offset = end - self._last_chunk_start
            self._msg_start = end
            self._head = bytearray(self._last_chunk[offset : offset + _HEAD_BYTES])
            return self._request_from(message)

    def _count_container(self, container: Any) -> Any:
        self._containers += 1
        if self._containers > self.max_containers:
            raise _TooManyContainers
        return container

    def _feed_unpacker(self) -> None:
        room = self.max_message_bytes + 1 - (self._fed - self._msg_start)
        chunk = bytes(self._pending[: min(room, _FEED_STEP)])
        del self._pending[: len(chunk)]
        self._unpacker.feed(chunk)
        if len(self._head) < _HEAD_BYTES:
            self._head += chunk[: _HEAD_BYTES - len(self._head)]
        self._last_chunk, self._last_chunk_start = chunk, self._fed
        self._fed += len(chunk)

    def _too_large(self, msgid: int | None) -> ProtocolError:
        return ProtocolError(f"The message is larger than {self.max_message_bytes} bytes.", msgid)

    def _decode_problem(self, exc: Exception) -> str:
        if isinstance(exc, _TooManyContainers):
            return f"The message has more than {self.max_containers} arrays and maps."
        if isinstance(exc, msgpack.StackError | RecursionError):
            return f"The message is nested deeper than {self.max_depth} levels."
        if isinstance(exc, msgpack.FormatError):
            return "The bytes are not MessagePack (byte 0xc1 is never used)."
        if isinstance(exc, UnicodeDecodeError):
            return "A string is not valid UTF-8."
        if isinstance(exc, TypeError) and "unhashable" in str(exc):
            return "A map key is an array or map; map keys must be strings."
        text = str(exc)
        for marker, problem in (
            ("max_array_len", f"An array has more than {self.max_array_items} items."),
            ("max_map_len", f"A map has more than {self.max_map_keys} keys."),
            ("max_str_len", f"A string is longer than {self.max_str_bytes} bytes."),
            ("max_bin_len", "Binary data is not accepted; strings must be UTF-8 str."),
            ("max_ext_len", "MessagePack extension types are not used in this protocol."),
        ):
            if marker in text:
                return problem
        return f"The bytes are not valid MessagePack ({type(exc).__name__}: {text[:200]})."

    def _peek_msgid(self) -> int | None:
        """The msgid of the message in progress, read from its first bytes, if they show one."""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_HEAD_BYTES)
        unpacker.feed(bytes(self._head))
        try:
            if unpacker.read_array_header() < 2:
                return None
            kind, msgid = unpacker.unpack(), unpacker.unpack()
        except Exception:
            return None
        return msgid if type(kind) is int and kind == REQUEST and _is_msgid(msgid) else None

    def _request_from(self, message: object) -> Request:
        msgid = _msgid_of(message)
        if not isinstance(message, list) or not message:
            got = "an empty array" if message == [] else wire_kind(message)
            raise ProtocolError(f"A message must be an array {_REQUEST_SHAPE}, got {got}.")
        kind = message[0]
        if type(kind) is not int or kind != REQUEST:
            if type(kind) is int and kind == NOTIFICATION:
                problem = "Notifications from a client are not used in protocol v1"
            elif type(kind) is int and kind == RESPONSE:
                problem = "A client does not send responses"
            else:
                problem = f"Message type must be 0 (request), got {_describe(kind)}"
            raise ProtocolError(f"{problem}; send a request {_REQUEST_SHAPE}.")
        if len(message) != 4:
            raise ProtocolError(
                f"A request has 4 items {_REQUEST_SHAPE}, got {len(message)}.", msgid
            )
        _, raw_msgid, method, params = message
        if msgid is None:
            raise ProtocolError(
                f"msgid must be an integer from 0 to {MAX_MSGID}, got {_describe(raw_msgid)}."
            )
        if not isinstance(method, str):
            raise ProtocolError(f"method must be a string, got {wire_kind(method)}.", msgid)
        if not isinstance(params, list):
            raise ProtocolError(f"params must be an array, got {wire_kind(params)}.", msgid)
        self._check_values(message, msgid)
        if len(params) > 1 or (params and not isinstance(params[0], dict)):
            raise ProtocolError(
                "params must be [] or [{named arguments}], "
                f"got an array of {len(params)} item(s) starting with {wire_kind(params[0])}.",
                msgid,
            )
        return Request(msgid, method, params)

    def _check_values(self, message: list[Any], msgid: int) -> None:
        """Depth, map keys and value types, walked with an explicit stack (never recursion)."""
        max_depth = self.max_depth
        stack: list[tuple[list[Any] | dict[Any, Any], int]] = [(message, 1)]
        while stack:
            container, depth = stack.pop()
            if depth > max_depth:
                raise ProtocolError(f"The message is nested deeper than {max_depth} levels.", msgid)
            if type(container) is dict:
                for key in container:
                    if type(key) is not str:
                        raise ProtocolError(
                            f"Map keys must be strings, got {wire_kind(key)}.", msgid
                        )
                items: Any = container.values()
            else:
                items = container
            # Exact types: the unpacker makes no subclasses. Empty containers need a visit only
            # when they are one level too deep; skipping the rest halves the cost of a message
            # that is mostly empty arrays (the cheapest way to make msgpack allocate).
            for item in items:
                kind = type(item)
                if kind is list or kind is dict:
                    if item or depth >= max_depth:
                        stack.append((item, depth + 1))
                elif kind not in _SCALARS:
                    raise ProtocolError(_bad_value(item), msgid)


class _TooManyContainers(Exception):
    """Raised from the unpacker's hooks past ``max_containers``."""


def _msgid_of(message: object) -> int | None:
    """The msgid of a decoded message that looks like a request, else None."""
    if (
        isinstance(message, list)
        and len(message) >= 2
        and type(message[0]) is int
        and message[0] == REQUEST
        and _is_msgid(message[1])
    ):
        msgid: int = message[1]
        return msgid
    return None


def _describe(value: object) -> str:
    if type(value) is int:
        return str(value)
    return wire_kind(value)


def _bad_value(value: object) -> str:
    if isinstance(value, bytes):
        return "Binary data is not accepted; strings must be UTF-8 str."
    return "MessagePack extension types are not used in this protocol."


def _pack(message: object) -> bytes:
    # A Packer per call: the encoders may be used from any thread, and a Packer is not reentrant.
    packed: bytes = msgpack.Packer(use_bin_type=True, use_single_float=False).pack(message)
    return packed


def encode_request(msgid: int, method: str, params: list[Any]) -> bytes:
    """``[0, msgid, method, params]``, as a client sends it."""
    if not _is_msgid(msgid):
        raise ValueError(f"msgid must be an integer from 0 to {MAX_MSGID}, got {msgid!r}")
    return _pack([REQUEST, msgid, method, params])


def encode_response(msgid: int, error: dict[str, Any] | None, result: Any) -> bytes:
    """``[1, msgid, error, result]``; exactly one of error and result is sent as nil."""
    if error is not None and result is not None:
        raise ValueError("a response carries an error or a result, not both")
    return _pack([RESPONSE, msgid, error, result])


def encode_notification(method: str, params: list[Any]) -> bytes:
    """``[2, method, params]``."""
    return _pack([NOTIFICATION, method, params])


def encode_event(event: dict[str, Any]) -> bytes:
    """The notification ``[2, "event", [event]]``."""
    return encode_notification("event", [event])
