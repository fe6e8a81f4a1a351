"""What a reconciliation returns: items (one per medication) and issues (for a person)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhircare.transitions.medications import MedInfo

CONTINUED, CHANGED, NEW, DISCONTINUED = "continued", "changed", "new", "discontinued"
SEVERITY_RANK = {"high": 0, "moderate": 1, "low": 2}


@dataclass(slots=True)
class RecItem:
    """One reconciled medication."""

    status: str
    ingredient: str
    rxnorm: list[str] | None
    before: str | None
    after: str | None
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    before_info: MedInfo | None = None
    after_info: MedInfo | None = None
    stop_reason: str | None = None
    stop_recorded: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ingredient": self.ingredient,
            "rxnorm": self.rxnorm,
            "before": self.before,
            "after": self.after,
            "changes": list(self.changes),
        }


@dataclass(slots=True)
class RecIssue:
    """A problem for a person to review; `items` index ReconciliationResult.items."""

    type: str  # duplicate-therapy | omission | high-risk | interaction | unverifiable | unmatched
    severity: str  # high | moderate | low
    detail: str
    items: list[int]
    basis: str = ""  # duplicate-therapy: same-ingredient | same-class | class-group

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "severity": self.severity,
            "detail": self.detail,
            "items": list(self.items),
        }


@dataclass(slots=True)
class ReconciliationResult:
    """The reconciliation of one discharge."""

    encounter: str
    items: list[RecItem]
    issues: list[RecIssue]

    def to_json(self) -> dict[str, Any]:
        return {
            "encounter": self.encounter,
            "items": [i.to_json() for i in self.items],
            "issues": [i.to_json() for i in self.issues],
        }


def issue_order(x: RecIssue) -> tuple[int, list[int], str]:
    """Issues sort by severity, then by the items they name, then by type."""
    return SEVERITY_RANK[x.severity], x.items, x.type
