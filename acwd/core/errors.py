"""Domain errors: every refusal carries a code from PROTOCOL.md and one sentence."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The error codes of the public protocol (PROTOCOL.md, "Error codes")."""

    PROTOCOL = "protocol"
    METHOD_NOT_FOUND = "method_not_found"
    INVALID_PARAMS = "invalid_params"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_STATE = "invalid_state"
    CONFLICT = "conflict"
    EXTENSION_LIMIT = "extension_limit"
    DISPOSITION_REQUIRED = "disposition_required"
    INVALID_DISPOSITION = "invalid_disposition"
    HAS_ACTIVE_WORK = "has_active_work"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"


class DomainError(Exception):
    """An illegal request. Raised before any state changes, so the caller's state is untouched."""

    def __init__(self, code: ErrorCode, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}

    def to_wire(self) -> dict[str, Any]:
        """The error map of the protocol: ``{code, message, data?}``."""
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.data:
            out["data"] = self.data
        return out


class ConfigError(Exception):
    """A configuration value that cannot be used; the message names the key and the reason."""

    def __init__(self, key: str, reason: str, source: str = "<config>") -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.key = key
        self.reason = reason
        self.source = source
