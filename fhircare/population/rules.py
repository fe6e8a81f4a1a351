"""The case-finding rules of mappings/case-finding.yaml: typed definitions, the facts of one
patient from view rows (the per-patient path) and the decision both paths share.

The Spark path (`spark_rules`) compiles the same `Fact` definitions into DataFrame queries;
`decide` turns either path's facts into an `Eligibility` with its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhircare.care.common import mapping, utcnow
from fhircare.fhir.datetimes import parse_datetime_lenient
from fhircare.population.views import Row, View, load_view

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
EPOCH = datetime(1, 1, 1, tzinfo=UTC)


@dataclass
class Eligibility:
    patient: str
    ccm_eligible: bool
    high_risk: bool
    chronic_conditions: list[str] = field(default_factory=list)  # condition keys
    behavioural: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why high risk (or not eligible)
    tier_name: str | None = None

    @property
    def tier(self) -> str:
        """Follow-up risk tier (mappings/followup.yaml): high, moderate or low."""
        if self.tier_name:
            return self.tier_name
        if self.high_risk:
            return "high"
        return "moderate" if self.ccm_eligible else "low"


@dataclass(frozen=True)
class Test:
    """One `where` test of a fact (see mappings/case-finding.yaml)."""

    columns: tuple[str, ...]
    op: str  # in, not_in, is, coding_in, within_days
    values: tuple[Any, ...] = ()
    days: int = 0


@dataclass(frozen=True)
class Fact:
    name: str
    view: str
    where: tuple[Test, ...]
    collect: str  # distinct | latest
    classify: str | None = None
    value: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, columns); name "" = single
    default: Any = None
    order: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseFinding:
    panel: View
    views: dict[str, View]
    facts: tuple[Fact, ...]
    conditions: dict[str, Any]  # chronic-conditions.yaml `conditions`
    ccm: dict[str, Any]
    signals: tuple[dict[str, Any], ...]
    tiers: tuple[dict[str, Any], ...]

    def chronic_codes(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """(key -> ICD-10-CM prefixes without dots, SNOMED code -> keys) of the code lists."""
        prefixes: dict[str, list[str]] = {}
        snomed: dict[str, list[str]] = {}
        for key, spec in self.conditions.items():
            prefixes[key] = [p.replace(".", "").upper() for p in spec.get("icd10_prefixes") or []]
            for code in spec.get("snomed") or []:
                snomed.setdefault(str(code), []).append(key)
        return prefixes, snomed


def _test(data: dict[str, Any]) -> Test:
    if "columns" in data:
        pairs = tuple((c["system"], str(c["code"])) for c in data["in"])
        return Test(tuple(data["columns"]), "coding_in", pairs)
    column = (data["column"],)
    for op in ("in", "not_in"):
        if op in data:
            return Test(column, op, tuple(str(v) for v in data[op]))
    if "is" in data:
        return Test(column, "is", (bool(data["is"]),))
    if "within_days" in data:
        return Test(column, "within_days", days=int(data["within_days"]))
    raise ValueError(f"case-finding: unknown test {data}")


def _value(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if data is None:
        return ()
    if isinstance(data, dict):
        return tuple((k, tuple(_as_list(v))) for k, v in data.items())
    return (("", tuple(_as_list(data))),)


def _as_list(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


@lru_cache(maxsize=1)
def case_finding() -> CaseFinding:
    """The definitions of mappings/case-finding.yaml with their views, loaded once."""
    cfg = mapping("case-finding")
    facts = tuple(
        Fact(
            name=name,
            view=spec["view"],
            where=tuple(_test(t) for t in spec.get("where") or []),
            collect=spec["collect"],
            classify=spec.get("classify"),
            value=_value(spec.get("value")),
            default=spec.get("default"),
            order=tuple(spec.get("order") or ()),
        )
        for name, spec in cfg["facts"].items()
    )
    views = {vid: load_view(vid) for vid in cfg["views"]}
    for fact in facts:
        if fact.view not in views:
            raise ValueError(f"case-finding: fact {fact.name} uses unknown view {fact.view}")
        if fact.collect not in ("distinct", "latest"):
            raise ValueError(f"case-finding: fact {fact.name}: collect {fact.collect}")
    return CaseFinding(
        panel=load_view(cfg["panel"]),
        views=views,
        facts=facts,
        conditions=mapping("chronic-conditions")["conditions"],
        ccm=cfg["ccm_eligible"],
        signals=tuple(cfg["high_risk"]),
        tiers=tuple(cfg["tiers"]),
    )


# ---- the per-patient path ----------------------------------------------------------------


def classify_chronic(system: str | None, code: str | None) -> set[str]:
    """The chronic-condition keys one coding matches (ICD-10-CM prefix or SNOMED CT)."""
    if not code:
        return set()
    prefixes, snomed = _codes()
    if system == SNOMED:
        return set(snomed.get(code, ()))
    if system == ICD10:
        plain = code.replace(".", "").upper()
        return {k for k, options in prefixes.items() if any(plain.startswith(p) for p in options)}
    return set()


@lru_cache(maxsize=1)
def _codes() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    return case_finding().chronic_codes()


def _passes(test: Test, row: Row, at: datetime) -> bool:
    if test.op == "coding_in":
        return tuple(row.get(c) for c in test.columns) in test.values
    value = row.get(test.columns[0])
    if test.op == "in":
        return value is not None and str(value) in test.values
    if test.op == "not_in":
        return value is None or str(value) not in test.values
    if test.op == "is":
        return bool(value) is test.values[0]
    when = parse_datetime_lenient(value) if isinstance(value, str) else None
    return when is not None and at - timedelta(days=test.days) <= when <= at


def _first(row: Row, columns: tuple[str, ...]) -> Any:
    return next((row[c] for c in columns if row.get(c) is not None), None)


def _fact_value(fact: Fact, rows: list[Row]) -> Any:
    if fact.collect == "distinct":
        if fact.classify:
            found = {r["_key"] for r in rows}
        else:
            cols = fact.value[0][1]
            found = {v if (v := _first(r, cols)) is not None else fact.default for r in rows} - {
                None
            }
        return sorted(found)
    if not rows:
        return None

    def order(r: Row) -> tuple[datetime, str]:
        text = _first(r, fact.order)
        return (parse_datetime_lenient(text) or EPOCH if text else EPOCH, r.get("id") or "")

    latest = max(rows, key=order)
    return {name: _first(latest, cols) for name, cols in fact.value}


def patient_facts(
    rows_by_view: dict[str, list[Row]], *, now: datetime | None = None
) -> dict[str, Any]:
    """The facts of one patient from the rows of each view."""
    at = utcnow(now)
    out: dict[str, Any] = {}
    for fact in case_finding().facts:
        rows = [
            r for r in rows_by_view.get(fact.view, []) if all(_passes(t, r, at) for t in fact.where)
        ]
        if fact.classify:
            rows = [
                {**r, "_key": key}
                for r in rows
                for key in classify_chronic(r.get("system"), r.get("code"))
            ]
        out[fact.name] = _fact_value(fact, rows)
    return out


# ---- the decision both paths share ------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def decide(patient_ref: str, facts: dict[str, Any]) -> Eligibility:
    """Eligibility, high risk, tier and reasons from a patient's facts."""
    cf = case_finding()
    chronic: list[str] = sorted(facts.get("chronic") or [])
    names = ", ".join(cf.conditions[k]["display"] for k in chronic)
    behavioural = [k for k in chronic if cf.conditions[k].get("behavioural")]
    fmt = {"count": len(chronic), "names": names, "names_paren": f" ({names})" if names else ""}
    eligible = len(chronic) >= cf.ccm["min_count"]
    reasons: list[str] = []
    for sig in cf.signals:
        name = sig["signal"]
        if name == "chronic":
            if len(chronic) >= sig["min_count"]:
                reasons.append(sig["reason"].format(**fmt))
        elif name == "behavioural":
            if behavioural:
                shown = ", ".join(cf.conditions[k]["display"] for k in behavioural)
                reasons.append(sig["reason"].format(names=shown))
        elif isinstance(facts.get(name), list):
            reasons += [sig["reason"].format(value=v) for v in facts[name]]
        elif isinstance(value := facts.get(name), dict) and _signal_holds(sig, value):
            extra = {
                k: (sig[k].format(**value) if _number(value.get("count")) is not None else "")
                for k in sig
                if k.endswith("_paren")
            }
            reasons.append(sig["reason"].format(**value, **extra))
    high = bool(reasons)
    if not eligible:
        reasons.append(cf.ccm["otherwise"].format(**fmt))
    flags = {"high_risk": high, "ccm_eligible": eligible, "always": True}
    tier = next(t["tier"] for t in cf.tiers if flags[t["when"]])
    return Eligibility(
        patient=patient_ref,
        ccm_eligible=eligible,
        high_risk=high,
        chronic_conditions=chronic,
        behavioural=behavioural,
        reasons=reasons,
        tier_name=tier,
    )


def _signal_holds(sig: dict[str, Any], value: dict[str, Any]) -> bool:
    if "min" in sig:
        n = _number(value.get(sig["column"]))
        return n is not None and n >= sig["min"]
    if "any" in sig:
        for cond in sig["any"]:
            v = value.get(cond["column"])
            if "is" in cond and v is cond["is"]:
                return True
            if "min" in cond and (n := _number(v)) is not None and n >= cond["min"]:
                return True
        return False
    return True
