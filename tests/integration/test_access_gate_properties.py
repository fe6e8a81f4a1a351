"""Property-based probes of the access gate (issue 16), as a hostile SMART app would send.

Random resources for patients A and B across the care types are written with a system
token; then random requests of every interaction (read, vread, search with counts and
includes, history, create with If-None-Exist, update, conditional update, patch,
conditional patch, delete, conditional delete, transaction and batch entries,
$everything) are sent with one of A's tokens (SMART v1 read, v1 read+write, v2 cruds,
v2 granular with a `?category=` query). After each request:

- nothing returned is outside what the token may see (A's compartment, scope query);
- a search's total is the number of visible matches (an independent count over the
  resources a system token finds with the same criteria);
- nothing in B's record changed, nothing was written that the token's scopes do not
  allow, and no answer is a 5xx.

The oracle below knows the generated shapes (which elements name a patient); it does not
use fhircare's compartment code. The counts are printed by the last test (`-s`).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from fhircare.api.app import create_app
from fhircare.config import Settings

ISS = "https://auth.example.org"
AUD = "http://testserver/fhir"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CARE_TYPES = (
    "Condition",
    "Observation",
    "CarePlan",
    "Goal",
    "MedicationRequest",
    "Encounter",
    "QuestionnaireResponse",
    "ServiceRequest",
    "AuditEvent",
    "Task",
)
ALL_TYPES = ("Patient", *CARE_TYPES)
LAB = f"{OBS_CAT}|laboratory"
TOKENS = {
    "v1-read": "patient/*.read",
    "v1-write": "patient/*.read patient/*.write",
    "v2-cruds": "patient/*.cruds",
    "v2-granular": f"patient/Observation.rs?category={LAB} patient/Condition.cruds "
    "patient/Patient.r",
}
COUNTS: Counter[str] = Counter()

settings.register_profile(
    "access-gate",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)


# ---- the server and the two patients -----------------------------------------------------------


class Server:
    def __init__(self, client: TestClient, key: Any) -> None:
        self.c = client
        self.key = key
        self.admin = self.bearer("system/*.cruds")
        self.a = self._post({"resourceType": "Patient", "name": [{"family": "A"}]})["id"]
        self.b = self._post({"resourceType": "Patient", "name": [{"family": "B"}]})["id"]
        self.store = client.app.state.container.store

    def bearer(self, scope: str, **claims: Any) -> dict[str, str]:
        now = int(time.time())
        body = {"iss": ISS, "aud": AUD, "sub": "u", "client_id": "probe", "scope": scope}
        body.update(iat=now, exp=now + 3600, **claims)
        return {"Authorization": "Bearer " + jwt.encode(body, self.key, "RS256", {"kid": "k"})}

    def _post(self, body: dict) -> dict:
        r = self.c.post(f"/fhir/{body['resourceType']}", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return r.json()

    def snapshot(self) -> dict[tuple[str, str], dict]:
        """Every live resource of the probed types, straight from the store."""
        return {(t, r["id"]): r for t in ALL_TYPES for r in self.store.iter_resources(t)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("gate-props")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k", alg="RS256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    conf = Settings(
        data=tmp / "d",
        base_url=AUD,
        auth="smart",
        auth_jwks=str(tmp / "jwks.json"),
        auth_issuer=ISS,
        auth_audience=AUD,
        fsync=False,
        audit=False,  # AuditEvents are generated data here, not the server's own
        sweep_interval=0,
    )
    with TestClient(create_app(conf), raise_server_exceptions=False) as c:
        yield Server(c, key)


# ---- generated resources ----------------------------------------------------------------------


def _ref(pid: str) -> dict[str, str]:
    return {"reference": f"Patient/{pid}"}


def resource(rtype: str, owner: str, other: str | None, variant: int) -> dict[str, Any]:
    """A valid R4 resource of the type whose subject is `owner`; `other` (a patient) appears
    in a compartment element too (performer, asserter, author) where the type has one."""
    code = {"coding": [{"system": LOINC, "code": ("8867-4", "2339-0")[variant % 2]}]}
    cat = ("laboratory", "vital-signs")[variant % 2]
    body: dict[str, Any]
    if rtype == "Condition":
        body = {
            "subject": _ref(owner),
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
        }
        if other:
            body["asserter"] = _ref(other)
    elif rtype == "Observation":
        body = {
            "status": "final",
            "code": code,
            "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
            "subject": _ref(owner),
        }
        if other:
            body["performer"] = [_ref(other)]
    elif rtype == "CarePlan":
        body = {"status": "active", "intent": "plan", "subject": _ref(owner)}
        if other:
            body["activity"] = [{"detail": {"status": "scheduled", "performer": [_ref(other)]}}]
    elif rtype == "Goal":
        body = {"lifecycleStatus": "active", "description": {"text": f"g{variant}"}}
        body["subject"] = _ref(owner)
    elif rtype == "MedicationRequest":
        body = {
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "metformin"},
            "subject": _ref(owner),
        }
    elif rtype == "Encounter":
        body = {
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "subject": _ref(owner),
        }
    elif rtype == "QuestionnaireResponse":
        body = {"status": "in-progress", "subject": _ref(owner)}
        if other:
            body["author"] = _ref(other)
    elif rtype == "ServiceRequest":
        body = {"status": "active", "intent": "order", "code": code, "subject": _ref(owner)}
        if other:
            body["performer"] = [_ref(other)]
    elif rtype == "AuditEvent":
        body = {
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
            "recorded": "2025-01-01T00:00:00Z",
            "agent": [{"requestor": True, "who": {"display": "probe"}}],
            "source": {"observer": {"display": "probe"}},
            "entity": [{"what": _ref(owner)}],
        }
    else:  # Task: not in the R4 Patient compartment
        body = {"status": "requested", "intent": "order", "for": _ref(owner)}
    return {"resourceType": rtype, **body}


def patients_named(resource_: Any) -> set[str]:
    """The oracle: the patients a generated resource names (its id, for a Patient)."""
    found: set[str] = set()
    if resource_.get("resourceType") == "Patient" and "id" in resource_:
        found.add(resource_["id"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.startswith("Patient/"):
                found.add(ref.split("/")[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in resource_.items() if k != "id"})
    return found


def visible(token: str, server: Server, r: dict) -> bool:
    """May `token` (A's) see this resource? Shared definitions (profiles/) are visible."""
    rtype = r.get("resourceType")
    if rtype not in ALL_TYPES:
        return True
    if rtype == "Task" or server.a not in patients_named(r):
        return False
    if token == "v2-granular":
        if rtype == "Observation":
            return any(
                c.get("code") == "laboratory" and c.get("system") == OBS_CAT
                for cat in r.get("category") or []
                for c in cat.get("coding") or []
            )
        return rtype in ("Condition", "Patient")
    return True


def may_write(token: str, rtype: str) -> bool:
    if token == "v1-read":
        return False
    if token == "v2-granular":
        return rtype == "Condition"
    return rtype != "Task"


# ---- requests -----------------------------------------------------------------------------------

owners = st.sampled_from(["A", "B"])
specs = st.tuples(
    st.sampled_from(CARE_TYPES), owners, st.sampled_from([None, "A", "B"]), st.integers(0, 3)
)
INTERACTIONS = (
    "read",
    "vread",
    "search",
    "count",
    "include",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "create-if-none-exist",
    "update",
    "update-move",
    "conditional-update",
    "patch",
    "conditional-patch",
    "delete",
    "conditional-delete",
    "transaction",
    "batch",
    "everything",
    "chain",
)
requests = st.tuples(
    st.sampled_from(INTERACTIONS),
    st.sampled_from(CARE_TYPES),
    owners,
    st.sampled_from([None, "A", "B"]),
    st.integers(0, 3),
    st.integers(0, 1000),
)


def _criteria(server: Server, rtype: str, who: str, variant: int, target: dict | None) -> str:
    pid = server.a if who == "A" else server.b
    choices = [
        ("_id", target["id"] if target else pid),
        ("_lastUpdated", "gt2000-01-01"),
    ]
    if rtype in ("Observation", "ServiceRequest"):
        choices.append(("code", f"{LOINC}|{('8867-4', '2339-0')[variant % 2]}"))
    if rtype not in ("AuditEvent", "Task"):
        choices.append(("patient" if rtype != "QuestionnaireResponse" else "subject", pid))
    if rtype == "Observation":
        choices.append(("category", f"{OBS_CAT}|{('laboratory', 'vital-signs')[variant % 2]}"))
    k, v = choices[variant % len(choices)]
    if k == "patient" or (k == "subject" and rtype == "QuestionnaireResponse"):
        v = f"Patient/{v}"
    return urllib.parse.urlencode([(k, v)])


def send(server: Server, headers: dict, token: str, req: tuple, known: list[dict]) -> Any:
    """Send one probe; return (response, criteria of a search to count, or None)."""
    kind, rtype, who, other, variant, pick = req
    c = server.c
    target = known[pick % len(known)] if known else None
    trtype = target["resourceType"] if target else rtype
    owner = server.a if who == "A" else server.b
    other_id = {None: None, "A": server.a, "B": server.b}[other]
    body = resource(rtype, owner, other_id, variant)
    crit = _criteria(server, rtype, who, variant, target if target and trtype == rtype else None)
    json_patch = {"Content-Type": "application/json-patch+json"}
    patch = json.dumps([{"op": "add", "path": "/language", "value": "en"}])
    if kind == "read" and target:
        return c.get(f"/fhir/{trtype}/{target['id']}", headers=headers), None
    if kind == "vread" and target:
        return c.get(f"/fhir/{trtype}/{target['id']}/_history/1", headers=headers), None
    if kind in ("search", "count", "include"):
        extra = {"count": "&_summary=count", "include": "&_include=*&_revinclude=*"}.get(kind, "")
        extra += "&_count=3" if variant % 2 else ""
        return c.get(f"/fhir/{rtype}?{crit}{extra}", headers=headers), (rtype, crit)
    if kind == "history-instance" and target:
        return c.get(f"/fhir/{trtype}/{target['id']}/_history", headers=headers), None
    if kind == "history-type":
        return c.get(f"/fhir/{rtype}/_history", headers=headers), None
    if kind == "history-system":
        return c.get("/fhir/_history", headers=headers), None
    if kind == "create":
        return c.post(f"/fhir/{rtype}", json=body, headers=headers), None
    if kind == "create-if-none-exist":
        h = {**headers, "If-None-Exist": crit}
        return c.post(f"/fhir/{rtype}", json=body, headers=h), (rtype, crit)
    if kind in ("update", "update-move") and target:
        new = {**target, "subject": _ref(owner)} if kind == "update-move" else {**body}
        new["id"] = target["id"]
        new.pop("meta", None)
        if kind == "update" and new["resourceType"] != trtype:
            new = {**resource(trtype, owner, other_id, variant), "id": target["id"]}
        return c.put(f"/fhir/{trtype}/{target['id']}", json=new, headers=headers), None
    if kind == "conditional-update":
        return c.put(f"/fhir/{rtype}?{crit}", json=body, headers=headers), (rtype, crit)
    if kind == "patch" and target:
        h = {**headers, **json_patch}
        return c.patch(f"/fhir/{trtype}/{target['id']}", content=patch, headers=h), None
    if kind == "conditional-patch":
        h = {**headers, **json_patch}
        return c.patch(f"/fhir/{rtype}?{crit}", content=patch, headers=h), (rtype, crit)
    if kind == "delete" and target:
        return c.delete(f"/fhir/{trtype}/{target['id']}", headers=headers), None
    if kind == "conditional-delete":
        return c.delete(f"/fhir/{rtype}?{crit}", headers=headers), None
    if kind in ("transaction", "batch"):
        entries = [
            {"resource": body, "request": {"method": "POST", "url": rtype, "ifNoneExist": crit}},
            {"resource": body, "request": {"method": "PUT", "url": f"{rtype}?{crit}"}},
            {"request": {"method": "GET", "url": f"{rtype}?{crit}"}},
        ]
        if target:
            entries.append({"request": {"method": "DELETE", "url": f"{trtype}/{target['id']}"}})
            entries.append({"request": {"method": "GET", "url": f"{trtype}/{target['id']}"}})
        chosen = entries[variant % len(entries) :] if kind == "transaction" else entries
        bundle = {"resourceType": "Bundle", "type": kind, "entry": chosen}
        h = {**headers, "Prefer": "return=representation"}
        return c.post("/fhir", json=bundle, headers=h), None
    if kind == "chain":
        chained = urllib.parse.urlencode([("subject:Patient.name", "B")])
        return c.get(f"/fhir/{rtype}?{chained}", headers=headers), None
    if kind == "everything":
        return c.get(f"/fhir/Patient/{owner}/$everything", headers=headers), None
    return None, None


def returned_resources(node: Any) -> Iterator[dict]:
    """Every resource in an answer (the body, Bundle entries, nested Bundles)."""
    if isinstance(node, dict):
        if node.get("resourceType") not in (None, "OperationOutcome", "Bundle"):
            yield node
        for key in ("entry", "resource"):
            value = node.get(key)
            if isinstance(value, list):
                for item in value:
                    yield from returned_resources(item)
            elif isinstance(value, dict):
                yield from returned_resources(value)


def visible_total(server: Server, token: str, rtype: str, crit: str) -> int:
    r = server.c.get(f"/fhir/{rtype}?{crit}&_count=1000", headers=server.admin)
    assert r.status_code == 200, r.text
    return sum(1 for e in r.json().get("entry", []) if visible(token, server, e["resource"]))


def _changed_unlawfully(
    server: Server, token: str, before: dict[tuple[str, str], dict], after: dict
) -> list[str]:
    bad = []
    for key in set(before) | set(after):
        old, new = before.get(key), after.get(key)
        if old is not None and new is not None and old["meta"] == new["meta"]:
            continue
        versions = [v for v in (old, new) if v is not None]
        named = set().union(*(patients_named(v) for v in versions))
        if server.b in named:
            bad.append(f"{key} of B changed")
        elif not may_write(token, key[0]) and key[0] != "Task":
            bad.append(f"{key} written without a scope")
        elif key[0] == "Patient" and (old is None or new is None):
            bad.append(f"{key} created or deleted by a patient token")
    return bad


# ---- the property -------------------------------------------------------------------------------


@settings(settings.get_profile("access-gate"))
@given(
    world=st.lists(specs, min_size=1, max_size=4),
    token=st.sampled_from(sorted(TOKENS)),
    probes=st.lists(requests, min_size=1, max_size=4),
)
def test_nothing_of_b_is_returned_counted_matched_or_changed(
    server: Server, world: list[tuple], token: str, probes: list[tuple]
) -> None:
    known = []
    for rtype, who, other, variant in world:
        owner = server.a if who == "A" else server.b
        other_id = {None: None, "A": server.a, "B": server.b}[other]
        known.append(server._post(resource(rtype, owner, other_id, variant)))
    known += [
        {"resourceType": "Patient", "id": server.a},
        {"resourceType": "Patient", "id": server.b},
    ]
    headers = server.bearer(TOKENS[token], patient=server.a)
    for probe in probes:
        before = server.snapshot()
        response, search = send(server, headers, token, probe, known)
        if response is None:
            continue
        COUNTS["probes"] += 1
        after = server.snapshot()
        if response.status_code >= 500:
            COUNTS["5xx"] += 1
        assert response.status_code < 500, (probe, response.text)
        body = response.json() if response.content else None
        leaked = [
            f"{r['resourceType']}/{r.get('id')}"
            for r in returned_resources(body)
            if not visible(token, server, r)
        ]
        COUNTS["leaks"] += len(leaked)
        assert not leaked, (token, probe, leaked)
        if search is not None and response.status_code == 412:
            matched = re.search(r"matched (\d+)", response.text)
            if matched:  # the count of a conditional match: only what the token may see
                expected = visible_total(server, token, *search)
                if int(matched[1]) != expected:
                    COUNTS["wrong totals"] += 1
                assert int(matched[1]) == expected, (token, probe, response.text)
        if search is not None and response.status_code == 200 and body.get("type") == "searchset":
            expected = visible_total(server, token, *search)
            if body.get("total") != expected:
                COUNTS["wrong totals"] += 1
            assert body.get("total") == expected, (token, probe, body.get("total"), expected)
        bad = _changed_unlawfully(server, token, before, after)
        COUNTS["unauthorized writes"] += len(bad)
        assert not bad, (token, probe, bad, response.status_code, response.text[:300])


def test_probe_counts() -> None:
    """The figures of the run above (printed with -s): every probe, and every failure."""
    print(  # noqa: T201 - the report's figures
        "access-gate probes={probes} leaks={leaks} unauthorized_writes={uw} "
        "wrong_totals={wt} server_errors={e}".format(
            probes=COUNTS["probes"],
            leaks=COUNTS["leaks"],
            uw=COUNTS["unauthorized writes"],
            wt=COUNTS["wrong totals"],
            e=COUNTS["5xx"],
        )
    )
    assert COUNTS["probes"] >= 100
    assert COUNTS["leaks"] == COUNTS["unauthorized writes"] == COUNTS["5xx"] == 0
