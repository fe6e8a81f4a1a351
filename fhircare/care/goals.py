"""Goal progress: a new Observation updates the achievementStatus of matching Goals.

For each active Goal of the patient with a target whose measure matches the Observation
code (or one of its components, e.g. the blood-pressure panel), the latest value per target
measure is compared with the target (detailQuantity with comparator, or detailRange), and
with the previous Observation of the same measure:

* all evaluable targets met -> achieved (sustaining when it was achieved already);
* otherwise, no previous value -> in-progress; closer to target -> improving; further away ->
  worsening; same distance -> no-change.

The Observation (versioned reference) is appended to Goal.outcomeReference; a Goal that
already lists it is skipped, so the handler is idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhircare.care.common import (
    GOAL_ACHIEVEMENT,
    Resource,
    coding,
    codings_of,
    commit,
    fhir_date,
    parse_datetime,
    update_op,
    utcnow,
)
from fhircare.store.base import Store

FINAL = ("final", "amended", "corrected")
DISPLAY = {
    "in-progress": "In Progress",
    "improving": "Improving",
    "worsening": "Worsening",
    "no-change": "No Change",
    "achieved": "Achieved",
    "sustaining": "Sustaining",
}


def _values(obs: Resource) -> dict[tuple[str | None, str | None], float]:
    """Numeric values of an Observation by (system, code), incl. its components."""
    out: dict[tuple[str | None, str | None], float] = {}

    def value(node: Resource) -> float | None:
        if isinstance(node.get("valueQuantity"), dict):
            v = node["valueQuantity"].get("value")
            return float(v) if isinstance(v, int | float) else None
        if isinstance(node.get("valueInteger"), int):
            return float(node["valueInteger"])
        return None

    v = value(obs)
    if v is not None:
        for key in codings_of(obs.get("code")):
            out[key] = v
    for comp in obs.get("component") or []:
        cv = value(comp)
        if cv is not None:
            for key in codings_of(comp.get("code")):
                out[key] = cv
    return out


def _when(obs: Resource) -> datetime:
    text = (
        obs.get("effectiveDateTime")
        or (obs.get("effectivePeriod") or {}).get("start")
        or obs.get("effectiveInstant")
        or obs.get("issued")
        or obs["meta"]["lastUpdated"]
    )
    return parse_datetime(text)


def meets(value: float, target: Resource) -> bool | None:
    """Whether a value meets a Goal target's detail; None when the target has no detail."""
    if "detailQuantity" in target:
        q = target["detailQuantity"]
        limit = float(q["value"])
        op = q.get("comparator")
        return {
            "<": value < limit,
            "<=": value <= limit,
            ">": value > limit,
            ">=": value >= limit,
            None: value == limit,
        }.get(op, False)
    if "detailRange" in target:
        rng = target["detailRange"]
        low = (rng.get("low") or {}).get("value")
        high = (rng.get("high") or {}).get("value")
        return (low is None or value >= low) and (high is None or value <= high)
    return None


def distance(value: float, target: Resource) -> float:
    """How far a value is from meeting the target (0 when met)."""
    if meets(value, target):
        return 0.0
    if "detailQuantity" in target:
        return abs(value - float(target["detailQuantity"]["value"]))
    rng = target["detailRange"]
    low = (rng.get("low") or {}).get("value")
    high = (rng.get("high") or {}).get("value")
    if low is not None and value < low:
        return low - value
    return value - high if high is not None else 0.0


def _measure_keys(target: Resource) -> set[tuple[str | None, str | None]]:
    return set(codings_of(target.get("measure"))) if target.get("measure") else set()


def _previous_value(
    store: Store,
    patient_ref: str,
    key: tuple[str | None, str | None],
    before: datetime,
    exclude: str,
) -> float | None:
    best: tuple[datetime, float] | None = None
    code = f"{key[0]}|{key[1]}" if key[0] else str(key[1])
    candidates = store.search("Observation", [("patient", patient_ref), ("code", code)])
    # the blood-pressure panel carries the measure as a component
    candidates += [
        o
        for o in store.search(
            "Observation", [("patient", patient_ref), ("code", "http://loinc.org|85354-9")]
        )
        if key[0] == "http://loinc.org"
    ]
    for obs in candidates:
        if obs["id"] == exclude or obs.get("status") not in FINAL:
            continue
        vals = _values(obs)
        if key not in vals:
            continue
        when = _when(obs)
        if when < before and (best is None or when > best[0]):
            best = (when, vals[key])
    return best[1] if best else None


def progress(store: Store, goal: Resource, obs: Resource) -> str | None:
    """The new achievement status of a Goal given an Observation, or None if unrelated."""
    patient_ref = obs["subject"]["reference"]
    values = _values(obs)
    when = _when(obs)
    evaluated: list[tuple[Resource, float]] = []
    for target in goal.get("target") or []:
        keys = _measure_keys(target) & set(values)
        if keys and meets(0.0, target) is not None:
            evaluated.append((target, values[next(iter(keys))]))
    if not evaluated:
        return None
    current = (
        {c for _, c in codings_of(goal.get("achievementStatus"))}
        if goal.get("achievementStatus")
        else set()
    )
    if all(meets(v, t) for t, v in evaluated):
        return "sustaining" if current & {"achieved", "sustaining"} else "achieved"
    now_dist = sum(distance(v, t) for t, v in evaluated)
    prev_dist = 0.0
    for target, _ in evaluated:
        key = next(iter(_measure_keys(target) & set(values)))
        prev = _previous_value(store, patient_ref, key, when, obs["id"])
        if prev is None:
            return "in-progress"
        prev_dist += distance(prev, target)
    if now_dist < prev_dist:
        return "improving"
    if now_dist > prev_dist:
        return "worsening"
    return "no-change"


def on_observation(store: Store, obs: Resource, *, now: datetime | None = None) -> list[Resource]:
    """Bus handler: update the achievementStatus of the patient's matching active Goals."""
    subject = (obs.get("subject") or {}).get("reference", "")
    if obs.get("status") not in FINAL or not subject.startswith("Patient/") or not _values(obs):
        return []
    obs_ref = f"Observation/{obs['id']}/_history/{obs.get('meta', {}).get('versionId', '1')}"
    ops = []
    for goal in store.search("Goal", [("patient", subject), ("lifecycle-status", "active")]):
        refs = {r.get("reference") for r in goal.get("outcomeReference") or []}
        if obs_ref in refs:
            continue
        status = progress(store, goal, obs)
        if status is None:
            continue
        version = goal["meta"]["versionId"]
        goal["meta"] = {"profile": goal["meta"].get("profile", [])}
        goal["achievementStatus"] = {"coding": [coding(GOAL_ACHIEVEMENT, status, DISPLAY[status])]}
        goal["statusDate"] = fhir_date(utcnow(now))
        goal["outcomeReference"] = [*(goal.get("outcomeReference") or []), {"reference": obs_ref}]
        ops.append(update_op(goal, if_match=version))
    return commit(store, ops) if ops else []


def _handler(store: Store, resource: Resource) -> list[Resource]:
    return on_observation(store, resource)


def register(bus: Any) -> None:
    """Wire the goal-progress handler for new Observations."""
    bus.on("Observation", _handler)
