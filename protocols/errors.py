"""Errors that may cross the wire, and the boundary between them and our own bugs.

A ``PublicError`` carries a code from the contract and a message that is safe to show to the
other party. Anything else raised while handling a message is a bug on our side: it is logged
in full locally and leaves as ``INTERNAL`` with a fixed text, so that a stack trace (which could
quote data) never crosses the node boundary.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    PROTOCOL_VERSION_MISMATCH = "PROTOCOL_VERSION_MISMATCH"
    IDENTITY_MISMATCH = "IDENTITY_MISMATCH"
    DUPLICATE_SESSION = "DUPLICATE_SESSION"
    PROTOCOL_VIOLATION = "PROTOCOL_VIOLATION"
    UNSUPPORTED_TASK = "UNSUPPORTED_TASK"
    INVALID_TASK = "INVALID_TASK"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    POLICY_REFUSED = "POLICY_REFUSED"
    TASK_ID_CONFLICT = "TASK_ID_CONFLICT"
    DATA_UNAVAILABLE = "DATA_UNAVAILABLE"
    DEADLINE_EXPIRED = "DEADLINE_EXPIRED"
    INTERNAL = "INTERNAL"
    SECAGG_REFUSED = "SECAGG_REFUSED"


INTERNAL_MESSAGE = (
    "internal error on the answering side; its operator can find the detail in its log"
)

# Maximum length of a message we put on the wire, so that an error cannot smuggle data out.
MAX_MESSAGE_CHARS = 1000


class PublicError(Exception):
    """An error whose code and message may be sent to the other party."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_MESSAGE_CHARS]

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class MalformedMessage(PublicError):
    """A message that does not decode into a valid value of the contract."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_VIOLATION) -> None:
        super().__init__(code, message)
