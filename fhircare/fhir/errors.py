"""Typed FHIR errors, each carrying its HTTP status and an OperationOutcome."""

from __future__ import annotations

from typing import Any


class FhirError(Exception):
    """An error that becomes an OperationOutcome with an HTTP status."""

    status: int = 400
    code: str = "processing"  # http://hl7.org/fhir/issue-type
    severity: str = "error"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: list[str] | None = None,
        code: str | None = None,
        status: int | None = None,
        issues: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression or []
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra_issues = issues or []

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome describing this error."""
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = self.expression
        return {"resourceType": "OperationOutcome", "issue": [issue, *self.extra_issues]}


class BadRequest(FhirError):
    status = 400
    code = "invalid"


class Unauthorized(FhirError):
    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class Gone(FhirError):
    status = 410
    code = "deleted"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    code = "invalid"


class StoreLocked(Exception):
    """Another process owns the data folder."""


def outcome(severity: str, code: str, diagnostics: str, **extra: Any) -> dict[str, Any]:
    """A one-issue OperationOutcome (information, warning or error)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics, **extra}],
    }
