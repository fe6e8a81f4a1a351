"""Discharge medication reconciliation: pre-admission list vs discharge list, by ingredient.

Stages, one module each: `collect` (the two lists of a stay), `pairing` (same ingredient set,
else same text), `compare` (strength, dose, frequency/PRN, route, form and release, salt, hold
status), `issues` (what a person must review) and `reconcile` (the whole run). `model` holds
what callers get back.
"""

from fhircare.transitions.medrec.compare import compare
from fhircare.transitions.medrec.model import (
    CHANGED,
    CONTINUED,
    DISCONTINUED,
    NEW,
    SEVERITY_RANK,
    RecIssue,
    RecItem,
    ReconciliationResult,
)
from fhircare.transitions.medrec.reconcile import reconcile

__all__ = [
    "CHANGED",
    "CONTINUED",
    "DISCONTINUED",
    "NEW",
    "SEVERITY_RANK",
    "RecIssue",
    "RecItem",
    "ReconciliationResult",
    "compare",
    "reconcile",
]
