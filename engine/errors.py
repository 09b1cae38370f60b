"""Errors a flow can raise, each with the HTTP status and RFC 9457 type it maps to.

Connectors and steps raise these; the front turns an unhandled one into a
problem+json answer, and a flow's error handlers see it as ``${error.*}``.
Messages never carry secrets or stack traces: they are shown to callers.

The backend errors, by ``category`` (what error handlers, retries and the breaker key off)::

    BackendError                 502 backend-error
     ├─ BackendUnreachable       502 backend-unreachable    unavailable (alias BackendUnavailable)
     │   └─ CircuitOpen          503 circuit-open           unavailable (never retried)
     ├─ BackendTimeout           504 backend-timeout        timeout
     ├─ BackendRejected          502 backend-rejected       rejected: the backend refused this request
     │   └─ ConstraintViolation  409 constraint-violation   rejected
     └─ BackendFault             502 backend-fault          fault: an application fault answer
         └─ BackendStatusError   502 backend-status         fault
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

PROBLEM_BASE = "https://interlace.dev/problems/"


class FlowError(Exception):
    """Base of every error a flow can meet at request time."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    category: ClassVar[str | None] = None

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 extra: dict[str, Any] | None = None, internal: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        # response headers the answer must carry (Retry-After, WWW-Authenticate), never a secret
        self.headers = headers or {}
        # what only the logs may see (addresses, library messages): never sent to callers
        self.internal = internal
        if status is not None:
            self.status = status  # type: ignore[misc]  # per-instance override of the class default
            if type(self).title == FlowError.title and status != FlowError.status:
                # a plain FlowError given another status is not an "Internal error": its reason phrase
                self.title = _phrase(status)  # type: ignore[misc]
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra = extra or {}

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.code

    def as_dict(self) -> dict[str, Any]:
        """The view a flow's error handler reads as ``${error.*}``."""
        view = {"status": self.status, "code": self.code, "title": self.title,
                "message": self.detail, "type": self.type_uri, **self.extra}
        if self.category is not None:
            view.setdefault("category", self.category)
        return view


class BadRequest(FlowError):
    status = 400
    code = "bad-request"
    title = "Bad request"


# What a path parameter may hold, as a JSON Schema pattern: no C0 control character, no DEL.
# The front refuses the rest (BadPathParameter); the OpenAPI export and a data service's string
# key (which becomes a path segment) declare it.
PATH_PARAMETER_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"


class BadPathParameter(BadRequest):
    """A path parameter holding a control character: no URL path segment means one."""

    code = "bad-path-parameter"
    title = "Bad path parameter"


class MissingBody(BadRequest):
    """No body where the route declares the one it takes (``request.content_type``)."""

    code = "missing-body"
    title = "Missing request body"


class RequestInvalid(FlowError):
    """A well-formed body that breaks the schema the flow declares for its requests."""

    status = 422
    code = "request-invalid"
    title = "Request does not match the schema"


class MalformedBody(BadRequest):
    code = "malformed-body"
    title = "Malformed request body"


class PayloadShapeError(FlowError):
    """The payload is JSON, but not of the shape a step writes into (an array, a number, a
    string where an object is needed).  From the request: the caller's mistake (422)."""

    status = 422
    code = "payload-shape"
    title = "Payload has the wrong shape"


class UnencodableValue(BadRequest):
    """A value that cannot be written where the flow puts it (a control character in XML, a
    line break in a header)."""

    code = "unencodable-value"
    title = "Value cannot be encoded"


class UnsupportedMediaType(FlowError):
    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class PayloadTooLarge(FlowError):
    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class NotFound(FlowError):
    status = 404
    code = "not-found"
    title = "Not found"


class MethodNotAllowed(FlowError):
    status = 405
    code = "method-not-allowed"
    title = "Method not allowed"


class Unauthorized(FlowError):
    """The caller did not prove who it is (no credential, or one that does not verify)."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(FlowError):
    """The caller is known but may not do this (a claim or scope is missing)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class Conflict(FlowError):
    status = 409
    code = "conflict"
    title = "Conflict"


class TooManyRequests(FlowError):
    """A rate or concurrency limit was reached; the answer carries Retry-After."""

    status = 429
    code = "rate-limited"
    title = "Too many requests"


class ServiceUnavailable(FlowError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class BackendError(FlowError):
    """A backend could not be used; subclasses say how (see the tree above)."""

    status = 502
    code = "backend-error"
    title = "Backend error"


class BackendUnreachable(BackendError):
    """The request did not reach the backend (refused, reset, DNS, down): safe to retry elsewhere."""

    status = 502
    code = "backend-unreachable"
    title = "Backend unreachable"
    category = "unavailable"


BackendUnavailable = BackendUnreachable


class BackendTimeout(BackendError):
    """No answer in time.  ``reached=False`` when the request never reached the backend
    (a connect timeout), which is retried like an unreachable backend."""

    status = 504
    code = "backend-timeout"
    title = "Backend timeout"
    category = "timeout"

    def __init__(self, detail: str, *, reached: bool = True, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.reached = reached


class CircuitOpen(BackendUnreachable):
    status = 503
    code = "circuit-open"
    title = "Circuit breaker open"


class BackendRejected(BackendError):
    """The backend is up and refused this request (invalid statement, not allowed, bad data)."""

    status = 502
    code = "backend-rejected"
    title = "Backend rejected the request"
    category = "rejected"


class ConstraintViolation(BackendRejected):
    """A write broke a constraint of the data (a duplicate key, a missing reference)."""

    status = 409
    code = "constraint-violation"
    title = "Constraint violation"


class BackendFault(BackendError):
    """The backend answered with an application fault (a SOAP fault, a status the flow refuses)."""

    status = 502
    code = "backend-fault"
    title = "Backend fault"
    category = "fault"


class BackendStatusError(BackendFault):
    """A backend answered with a status the endpoint treats as failure."""

    status = 502
    code = "backend-status"
    title = "Backend returned an error"


class RaisedError(FlowError):
    """Raised on purpose by a flow's ``fail`` step."""

    code = "flow-error"
    title = "Flow error"


class ExpressionError(FlowError):
    """An expression could not be evaluated against this message."""

    code = "expression-error"
    title = "Expression error"


class RequestDataInvalid(ExpressionError):
    """An expression that reads only the caller's data (the request's body, headers, query or path
    parameters) met a value of a type it cannot take there: the caller's mistake, not the flow's
    (engine/expression_blame.py says when)."""

    status = 422
    code = "request-data-invalid"
    title = "Request data does not fit the flow"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

