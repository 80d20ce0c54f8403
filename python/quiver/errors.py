"""One exception hierarchy for every call, gRPC and Arrow Flight alike.

Every error the server answers is a :class:`QuiverError` subclass named after its gRPC status
code (``InvalidArgument``, ``NotFound``, ...), carrying the server's message (which names the
field or setting at fault) and the request id the server logged it under.
"""

from __future__ import annotations

import re
from typing import Optional

import grpc


class QuiverError(Exception):
    """An error answered by the server (or the transport to it)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}: {self.message}{suffix}"


class Cancelled(QuiverError):
    code = grpc.StatusCode.CANCELLED


class Unknown(QuiverError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(QuiverError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(QuiverError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(QuiverError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(QuiverError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(QuiverError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(QuiverError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(QuiverError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(QuiverError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(QuiverError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(QuiverError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(QuiverError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(QuiverError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(QuiverError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(QuiverError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE = {cls.code: cls for cls in QuiverError.__subclasses__()}
_BY_NAME = {code.name: cls for code, cls in _BY_CODE.items()}


def error_for(code: grpc.StatusCode, message: str, request_id: Optional[str] = None) -> QuiverError:
    """The exception for a gRPC status."""
    return _BY_CODE.get(code, Unknown)(message, request_id)


def from_rpc_error(error: grpc.RpcError) -> QuiverError:
    """The exception for a failed gRPC call (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    request_id = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "x-request-id":
            request_id = value
    return error_for(code or grpc.StatusCode.UNKNOWN, details or "", request_id)


# pyarrow.flight reports a server's status as "Flight returned <name> error, with message:
# <message>", sometimes followed by the gRPC client's debug context.
_FLIGHT_STATUS = re.compile(r"(?:Flight|gRPC) returned ([a-z ]+) error, with message: (.*)", re.S)
_FLIGHT_TAILS = (". gRPC client debug context:", ". Client context:", ". Detail:")


def from_flight_error(error: Exception) -> QuiverError:
    """The exception for a failed Arrow Flight call."""
    text = str(error)
    match = _FLIGHT_STATUS.search(text)
    if match:
        name = match.group(1).strip().upper().replace(" ", "_")
        message = match.group(2)
        for tail in _FLIGHT_TAILS:
            message = message.split(tail)[0]
        return _BY_NAME.get(name, Unknown)(message.strip())
    import pyarrow.flight as flight  # only needed here

    for kind, cls in (
        (flight.FlightUnauthenticatedError, Unauthenticated),
        (flight.FlightUnauthorizedError, PermissionDenied),
        (flight.FlightTimedOutError, DeadlineExceeded),
        (flight.FlightUnavailableError, Unavailable),
        (flight.FlightCancelledError, Cancelled),
        (flight.FlightInternalError, Internal),
    ):
        if isinstance(error, kind):
            return cls(text)
    return Unknown(text)


class JobFailed(QuiverError):
    """A materialization job that ended FAILED or CANCELLED; ``job`` is its summary."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, job: dict) -> None:
        super().__init__(f"job {job.get('id')} {job.get('state')}: {job.get('error') or 'no error given'}")
        self.job = job
