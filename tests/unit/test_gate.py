"""The access gate on a real embedded store: every WriteOp checked at commit, history version
by version, searches restricted in the store query (fhircare.security.gate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhircare.fhir.errors import Forbidden
from fhircare.security.context import AuthContext
from fhircare.security.gate import GatedStore
from fhircare.security.policy import AccessPolicy
from fhircare.security.scopes import ScopeSet
from fhircare.store.base import WriteOp
from fhircare.store.embedded import EmbeddedStore

A, B = "pat-a", "pat-b"
LOINC = "http://loinc.org"


def ref(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def obs(pid: str, code: str = "8867-4", **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": ref(pid),
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "db", fsync=False)
    s.commit(
        [
            WriteOp("update", "Patient", id=A, resource={"resourceType": "Patient"}),
            WriteOp("update", "Patient", id=B, resource={"resourceType": "Patient"}),
            WriteOp("update", "Observation", id="a1", resource=obs(A, effectiveDateTime="2024")),
            WriteOp("update", "Observation", id="a2", resource=obs(B, performer=[ref(A)])),
            WriteOp("update", "Observation", id="b1", resource=obs(B, effectiveDateTime="2023")),
        ]
    )
    yield s
    s.close()


def gated(store: EmbeddedStore, scope: str, patient: str | None = A, **kw: object) -> GatedStore:
    ctx = AuthContext("u", "app", ScopeSet.parse(scope), patient=patient)
    return GatedStore(store, AccessPolicy(ctx), **kw)  # type: ignore[arg-type]


def test_every_write_op_is_checked_whatever_wrote_it(store: EmbeddedStore) -> None:
    view = gated(store, "patient/Observation.cruds")
    view.commit([WriteOp("create", "Observation", resource=obs(A))])
    with pytest.raises(Forbidden, match="another patient"):
        view.commit([WriteOp("create", "Observation", resource=obs(B, performer=[ref(A)]))])
    with pytest.raises(Forbidden, match="Task"):  # not in the R4 Patient compartment
        view.commit([WriteOp("create", "Task", resource={"resourceType": "Task"})])
    # an update is checked on the stored version as well as on the new body
    with pytest.raises(Forbidden):
        view.commit([WriteOp("update", "Observation", id="b1", resource=obs(A))])
    assert store.read("Observation", "b1")["subject"] == ref(B)
    with pytest.raises(Forbidden):
        view.commit([WriteOp("delete", "Observation", id="a2")])  # B's, performed by A
    # all or nothing: one refused op refuses the commit
    with pytest.raises(Forbidden):
        view.commit(
            [
                WriteOp("create", "Observation", resource=obs(A)),
                WriteOp("create", "Observation", resource=obs(B)),
            ]
        )
    assert len(store.search("Observation", [("subject", f"Patient/{A}")])) == 2


def test_cascading_deletes_and_the_change_log_need_an_unrestricted_scope(
    store: EmbeddedStore,
) -> None:
    view = gated(store, "user/Observation.cruds", patient=None)
    with pytest.raises(Forbidden, match="cascading"):
        view.commit([WriteOp("delete", "Observation", id="a1", cascade=True)])
    with pytest.raises(Forbidden):
        view.changes(0)
    assert gated(store, "system/*.cruds", patient=None).changes(0)


def test_searches_are_the_union_of_compartment_links_in_the_query(store: EmbeddedStore) -> None:
    view = gated(store, "patient/Observation.rs")
    page = view.search_page("Observation", [("_sort", "-date")], offset=0, count=1)
    assert page.total == 2 and [r["id"] for r in page.resources] == ["a1"]
    assert {r["id"] for r in view.search("Observation", [])} == {"a1", "a2"}
    assert view.search("Observation", [("_id", "b1")]) == []
    assert view.search_page("Observation", [("code", f"{LOINC}|8867-4")], count=0).total == 2


def test_history_is_filtered_version_by_version(store: EmbeddedStore) -> None:
    store.commit([WriteOp("update", "Observation", id="b1", resource=obs(A))])  # moved to A
    store.commit([WriteOp("delete", "Observation", id="a1")])
    view = gated(store, "patient/Observation.rs")
    versions = [e["resource"]["meta"]["versionId"] for e in view.history("Observation", "b1")]
    assert versions == ["2"]
    with pytest.raises(Forbidden):
        view.vread("Observation", "b1", "1")
    typed = view.history("Observation")
    assert all("resource" in e for e in typed)  # a deletion shows only to whole-type readers
    assert not any(e["fullUrl"].endswith("/a1") and "resource" not in e for e in typed)
    whole = gated(store, "user/Observation.rs", patient=None).history("Observation")
    assert any("resource" not in e for e in whole)


def test_writes_are_audited_from_the_gate(store: EmbeddedStore) -> None:
    seen: list[tuple[str, str]] = []
    view = gated(
        store, "patient/Observation.cruds", on_write=lambda a, r: seen.append((a, r["id"]))
    )
    (created,) = view.commit([WriteOp("create", "Observation", resource=obs(A))])
    view.commit([WriteOp("delete", "Observation", id=created.id)])
    assert seen == [("C", created.id), ("D", created.id)]


def test_unrestricted_callers_go_straight_through(store: EmbeddedStore) -> None:
    view = gated(store, "system/*.cruds", patient=None)
    assert view.policy.unrestricted
    assert len(view.search("Observation", [])) == 3
    view.commit([WriteOp("delete", "Observation", id="b1", cascade=True)])
