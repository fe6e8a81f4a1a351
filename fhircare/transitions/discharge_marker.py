"""The discharge marker: what fhircare did with one Encounter's discharge, kept in store meta
`discharge.<encounter-id>` and written in the same commit as the outputs.

    {"signature": "...", "processed": "...", "plan": "home", "state": "open", "episode": 1,
     "opened": ["Task/...", "List/...", ...], "lace": 4, "complexity": "moderate"}

States:
* `open`: follow-up opened; `opened` lists every output the discharge owns;
* `no-follow-up`: nothing opened, `reason` says why ({"code": "deceased" | "outside-window",
  "text": ...}); after a death disposition on a visit whose follow-up was open, `opened` and
  `closed` say what it closed, and the next discharge of the Encounter is a new `episode`;
* `cancelled`: the discharge was cancelled (A13, A11, the Encounter no longer finished) and what
  it opened was closed (`closed` counts it). The next discharge of the same Encounter is a new
  `episode`: its outputs get new identifiers (`<encounter>/...#<episode>`), since cancelled
  Tasks are final in the FHIR Task state machine and a retired List stays retired.

A marker written before states existed has no `state`: it reads as `open`, episode 1.
"""

from __future__ import annotations

import inspect
from typing import Any

from fhircare.store.base import Store, WriteOp

KEY = "discharge.{}"
OPEN = "open"
NO_FOLLOW_UP = "no-follow-up"
CANCELLED = "cancelled"

Marker = dict[str, Any]


def key(encounter_id: str) -> str:
    return KEY.format(encounter_id)


def read(store: Store, encounter_id: str) -> Marker | None:
    """The marker with its defaults filled in, or None when the discharge was never seen."""
    value = store.get_meta(key(encounter_id))
    if not isinstance(value, dict):
        return None
    return {"state": OPEN, "episode": 1, **value}


def is_current(marker: Marker | None, signature: str) -> bool:
    """True when this discharge (signature) was handled and not cancelled since."""
    return (
        marker is not None and marker.get("signature") == signature and marker["state"] != CANCELLED
    )


def episode_for(marker: Marker | None) -> int:
    """The episode the next processing of this Encounter belongs to: a new one after a
    cancel, and after a death that closed what the episode had opened (a later corrected
    discharge of the living patient then opens new follow-up, not the cancelled Tasks)."""
    if marker is None:
        return 1
    ended = marker["state"] == CANCELLED or (
        marker["state"] == NO_FOLLOW_UP and bool(marker.get("closed"))
    )
    return int(marker["episode"]) + (1 if ended else 0)


def episode_value(value: str, episode: int) -> str:
    """An output identifier value in its episode (`e1/list`, then `e1/list#2`, ...)."""
    return value if episode == 1 else f"{value}#{episode}"


def episode_key(encounter_id: str, episode: int) -> str:
    return episode_value(encounter_id, episode)


def outcome_text(marker: Marker | None) -> str:
    """One line for an ACK or a notification response (no patient data beyond the reason)."""
    if marker is None:
        return "discharge not processed"
    state = marker["state"]
    if state == NO_FOLLOW_UP:
        return str((marker.get("reason") or {}).get("text") or "No follow-up")
    if state == CANCELLED:
        closed = marker.get("closed") or {}
        return (
            f"Discharge cancelled: {closed.get('cancelled', 0)} follow-up task(s) cancelled, "
            f"{closed.get('reviews', 0)} for review"
        )
    return "Discharge processed: follow-up opened"


def commit_with_marker(store: Store, ops: list[WriteOp], meta: dict[str, Any]) -> list[Any]:
    """Commit `ops` and the `meta` marker(s) atomically when the store can (EmbeddedStore's
    `commit(ops, meta=...)`); otherwise ops first, markers second. The fallback is still
    crash-safe: outputs have deterministic ids and are only created when absent, so a re-run
    after a crash between the two writes the marker without duplicating anything."""
    try:
        accepts_meta = "meta" in inspect.signature(store.commit).parameters
    except (TypeError, ValueError):
        accepts_meta = False
    if accepts_meta:
        return store.commit(ops, meta=meta)  # type: ignore[call-arg]
    results = store.commit(ops) if ops else []
    for k, v in meta.items():
        store.set_meta(k, v)
    return results
