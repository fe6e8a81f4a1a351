"""Sync engine against a fake FHIR server (httpx MockTransport) and the embedded store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from fhircare.remote.client import FhirClient, RemoteUnavailable, ServerError
from fhircare.remote.retry import RetryPolicy
from fhircare.remote.sync import (
    PUSH_SEQ,
    SubscriptionNotActive,
    dependency_order,
    pull,
    pull_resource,
    push,
    remote_key,
    resolve,
    status,
    subscribe,
)
from fhircare.store.base import Change, WriteOp
from fhircare.store.embedded import EmbeddedStore

BASE = "http://hapi.test/fhir"


class FakeFhir:
    """Just enough of a FHIR server: transactions of PUT/DELETE, sorted paged search.

    Like HAPI, a PUT whose `ifMatch` names another version than the current one fails the
    whole transaction (with `stale_status`: HAPI's 409 by default), and DELETE ignores it.
    """

    def __init__(self) -> None:
        self.db: dict[tuple[str, str], dict] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.clock = datetime(2024, 5, 1, tzinfo=UTC)
        self.bundles: list[dict] = []
        self.fail: list[Exception | int] = []  # faults for the next transactions
        self.subscription_polls = 0
        self.stale_status = 409
        self.resthook = True  # False: Subscriptions stay "requested", as on a stock HAPI
        self.lose_answer = 0  # transactions applied whose answer is then lost (read timeout)

    def tick(self) -> str:
        self.clock += timedelta(milliseconds=1)
        return self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def put(self, resource: dict, *, at: str | None = None) -> str:
        key = (resource["resourceType"], resource["id"])
        vid = self.versions.get(key, 0) + 1
        self.versions[key] = vid
        stored = json.loads(json.dumps(resource))
        stored["meta"] = {"versionId": str(vid), "lastUpdated": at or self.tick()}
        self.db[key] = stored
        return str(vid)

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        path = url.path.removeprefix("/fhir").strip("/")
        params = parse_qsl(url.query)
        if request.method == "POST" and path == "":
            return self.transaction(json.loads(request.content))
        if request.method == "POST" and path == "Subscription":
            return self.create_subscription(request)
        if request.method == "GET" and path.startswith("Subscription/"):
            self.subscription_polls += 1
            sub = dict(self.db[("Subscription", path.split("/")[1])])
            if self.subscription_polls >= 2 and self.resthook:
                sub["status"] = "active"
            return httpx.Response(200, json=sub)
        if request.method == "DELETE" and path.count("/") == 1:
            self.db.pop(tuple(path.split("/")), None)  # type: ignore[arg-type]
            return httpx.Response(204)
        if request.method == "GET" and path.count("/") == 1:
            found = self.db.get(tuple(path.split("/")))  # type: ignore[arg-type]
            if found is None:
                return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
            return httpx.Response(200, json=found)
        if request.method == "GET" and "/" not in path:
            return self.search(path, params)
        return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})

    def transaction(self, bundle: dict) -> httpx.Response:
        if self.fail:
            fault = self.fail.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return httpx.Response(fault)
        for e in bundle["entry"]:
            if (e.get("resource") or {}).get("valueQuantity", {}).get("value", 0) < 0:
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": "error", "code": "invariant", "diagnostics": "negative weight"}
                    ],
                }
                return httpx.Response(422, json=outcome)
        for e in bundle["entry"]:
            wanted = e["request"].get("ifMatch")
            key = tuple(e["request"]["url"].split("/"))
            current = self.versions.get(key)  # type: ignore[call-overload]
            put = e["request"]["method"] == "PUT"
            if wanted and put and current is not None and wanted != f'W/"{current}"':
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "conflict", "diagnostics": "stale"}],
                }
                return httpx.Response(self.stale_status, json=outcome)
        self.bundles.append(bundle)
        out = []
        for e in bundle["entry"]:
            rtype, rid = e["request"]["url"].split("/")
            if e["request"]["method"] == "DELETE":
                self.db.pop((rtype, rid), None)
                self.versions[(rtype, rid)] = self.versions.get((rtype, rid), 0) + 1
                out.append({"response": {"status": "204 No Content"}})
            else:
                vid = self.put(e["resource"])
                out.append({"response": {"status": "200 OK", "etag": f'W/"{vid}"'}})
        if self.lose_answer:
            self.lose_answer -= 1
            raise httpx.ReadTimeout("applied, but the answer was lost")
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": out}
        )

    def search(self, rtype: str, params: list[tuple[str, str]]) -> httpx.Response:
        p = dict(params)
        found = [r for (t, _), r in self.db.items() if t == rtype]
        if "_lastUpdated" in p:
            since = p["_lastUpdated"].removeprefix("ge")
            found = [r for r in found if _dt(r["meta"]["lastUpdated"]) >= _dt(since)]
        if "_id" in p:
            found = [r for r in found if r["id"] in p["_id"].split(",")]
        if "patient" in p:
            refs = p["patient"].split(",")
            found = [r for r in found if (r.get("subject") or {}).get("reference") in refs]
        found.sort(key=lambda r: r["meta"]["lastUpdated"])
        count, offset = int(p.get("_count", 50)), int(p.get("_offset", 0))
        page = found[offset : offset + count]
        body = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in page],
        }
        if offset + count < len(found):
            rest = [(k, v) for k, v in params if k != "_offset"] + [("_offset", offset + count)]
            nxt = rtype + "?" + "&".join(f"{k}={v}" for k, v in rest)
            body["link"] = [{"relation": "next", "url": nxt}]  # relative on purpose
        return httpx.Response(200, json=body)

    def create_subscription(self, request: httpx.Request) -> httpx.Response:
        tag = request.headers["If-None-Exist"].split("|")[1]
        for (t, _), r in self.db.items():
            if t == "Subscription" and r["meta"]["tag"][0]["code"] == tag:
                return httpx.Response(200, json=r)
        sub = json.loads(request.content)
        sub["id"] = f"sub{len(self.db)}"
        self.put(sub)
        stored = dict(self.db[("Subscription", sub["id"])])
        stored["meta"] = {**stored["meta"], "tag": sub["meta"]["tag"]}
        self.db[("Subscription", sub["id"])] = stored
        return httpx.Response(201, json=stored)


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def server() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def client(server: FakeFhir):
    policy = RetryPolicy(max_attempts=3, sleep=lambda s: None)
    with FhirClient(BASE, transport=httpx.MockTransport(server.handler), retry=policy) as c:
        yield c


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore(tmp_path / "data", fsync=False)
    yield s
    s.close()


def patient(pid: str, family: str = "Doe") -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def obs(oid: str, pid: str, value: float = 1.0) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": value},
    }


def put_local(store: EmbeddedStore, *resources: dict) -> None:
    store.commit([WriteOp("update", r["resourceType"], id=r["id"], resource=r) for r in resources])


# ---- ordering -------------------------------------------------------------------------------


def change(seq: int, resource: dict, deleted: bool = False) -> Change:
    return Change(
        seq, resource["resourceType"], resource["id"], "1", deleted, "local", "", resource
    )


def test_dependency_order_follows_references_then_type_rank() -> None:
    task = {"resourceType": "Task", "id": "t", "focus": {"reference": "CarePlan/cp"}}
    plan = {
        "resourceType": "CarePlan",
        "id": "cp",
        "subject": {"reference": "Patient/p"},
        "goal": [{"reference": "Goal/g"}],
    }
    goal = {"resourceType": "Goal", "id": "g", "subject": {"reference": f"{BASE}/Patient/p"}}
    pat = patient("p")
    # a Goal that (unusually) points at a Task: references beat the type rank
    odd = {"resourceType": "Goal", "id": "g2", "addresses": [{"reference": "Task/t"}]}
    items = [change(1, task), change(2, plan), change(3, goal), change(4, pat), change(5, odd)]
    order = [c.id for c in dependency_order(items)]
    assert order.index("p") < order.index("g") < order.index("cp") < order.index("t")
    assert order.index("t") < order.index("g2")


def test_dependency_order_survives_cycles() -> None:
    a = {"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}}]}
    b = {"resourceType": "Patient", "id": "b", "link": [{"other": {"reference": "Patient/a"}}]}
    assert sorted(c.id for c in dependency_order([change(1, a), change(2, b)])) == ["a", "b"]


# ---- push -----------------------------------------------------------------------------------


def test_push_sends_dependencies_first_and_advances_watermark(store, client, server) -> None:
    put_local(store, obs("o1", "p1"))  # written before its patient
    put_local(store, patient("p1"))
    report = push(store, client)
    assert report.pushed == 2 and report.bundles == 1
    [bundle] = server.bundles
    assert [e["request"] for e in bundle["entry"]] == [
        {"method": "PUT", "url": "Patient/p1"},
        {"method": "PUT", "url": "Observation/o1"},
    ]
    assert "versionId" not in bundle["entry"][0]["resource"].get("meta", {})
    assert store.get_meta(PUSH_SEQ) == store.last_seq
    assert store.get_meta(remote_key("Patient", "p1")) == "1"
    assert push(store, client).pushed == 0  # nothing new
    assert len(server.bundles) == 1


def test_push_coalesces_versions_to_the_latest(store, client, server) -> None:
    put_local(store, patient("p1", "A"))
    put_local(store, patient("p1", "B"))
    put_local(store, patient("p1", "C"))
    report = push(store, client)
    assert report.changes == 3 and report.pushed == 1
    assert server.db[("Patient", "p1")]["name"] == [{"family": "C"}]
    assert server.versions[("Patient", "p1")] == 1


def test_push_batches_and_progress(store, client, server) -> None:
    put_local(store, *[patient(f"p{i}") for i in range(5)])
    seen: list[tuple[int, int]] = []
    report = push(store, client, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert report.bundles == 3 and [len(b["entry"]) for b in server.bundles] == [2, 2, 1]
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_push_deletes_after_upserts(store, client, server) -> None:
    put_local(store, patient("p1"), obs("o1", "p1"))
    push(store, client)
    store.commit([WriteOp("delete", "Observation", id="o1"), WriteOp("delete", "Patient", id="p1")])
    put_local(store, patient("p2"))
    push(store, client)
    last = server.bundles[-1]["entry"]
    assert [e["request"]["method"] for e in last] == ["PUT", "DELETE", "DELETE"]
    assert [e["request"]["url"] for e in last[1:]] == ["Observation/o1", "Patient/p1"]
    assert set(server.db) == {("Patient", "p2")}


def test_outage_mid_push_resumes_without_loss_or_duplicates(store, client, server) -> None:
    put_local(store, *[patient(f"p{i}") for i in range(6)])
    # the second bundle meets a server that is down for longer than the retries last
    calls = {"n": 0}
    original = server.transaction

    def flaky(bundle: dict) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise httpx.ConnectError("connection refused")
        return original(bundle)

    server.transaction = flaky  # type: ignore[method-assign]
    with pytest.raises(RemoteUnavailable):
        push(store, client, batch_size=2)
    assert store.get_meta(PUSH_SEQ, 0) == 0  # not advanced: the push did not finish
    assert len(server.db) == 2
    server.transaction = original  # type: ignore[method-assign]
    report = push(store, client, batch_size=2)
    assert report.pushed == 4 and report.skipped == 2  # the first bundle is not resent
    assert sorted(i for _, i in server.db) == [f"p{i}" for i in range(6)]
    assert all(v == 1 for v in server.versions.values())
    assert store.get_meta(PUSH_SEQ) == store.last_seq


def test_ambiguous_failure_retries_the_idempotent_bundle(store, client, server) -> None:
    put_local(store, patient("p1"))
    server.fail = [httpx.ReadTimeout("lost answer"), 503]
    report = push(store, client)
    assert report.pushed == 1
    assert server.versions == {("Patient", "p1"): 1}


def test_remote_origin_changes_are_not_pushed(store, client, server) -> None:
    store.commit([WriteOp("update", "Patient", id="r1", resource=patient("r1"), origin="remote")])
    report = push(store, client)
    assert report.pushed == 0 and report.skipped == 1
    assert server.bundles == []
    assert store.get_meta(PUSH_SEQ) == store.last_seq


def test_refused_resources_are_isolated_recorded_and_retried(store, client, server) -> None:
    put_local(store, *[patient(f"p{i}") for i in range(6)], obs("bad", "p0", -1.0))
    report = push(store, client, batch_size=4)
    assert report.rejected == {"Observation/bad": "negative weight"}
    assert report.pushed == 6 and len(server.db) == 6
    assert store.get_meta(PUSH_SEQ) == store.last_seq  # the rest went through
    assert list(status(store)["rejected"]) == ["Observation/bad"]
    again = push(store, client)  # tried again, still refused
    assert list(again.rejected) == ["Observation/bad"] and again.pushed == 0
    put_local(store, obs("bad", "p0", 70.0))  # fixed locally
    fixed = push(store, client)
    assert fixed.pushed == 1 and fixed.rejected == {}
    assert status(store)["rejected"] == {} and ("Observation", "bad") in server.db
    assert push(store, client).pushed == 0


# ---- push against concurrent edits on the server ----------------------------------------------


def pushed_once(store, client, server, *resources: dict) -> None:
    put_local(store, *resources)
    assert push(store, client).pushed == len(resources)


def test_push_is_conditional_on_the_remote_version_last_seen(store, client, server) -> None:
    pushed_once(store, client, server, patient("p1"))
    put_local(store, patient("p1", "Local"), patient("p2"))
    push(store, client)
    entries = {e["request"]["url"]: e["request"] for e in server.bundles[-1]["entry"]}
    assert entries["Patient/p1"]["ifMatch"] == 'W/"1"'
    assert "ifMatch" not in entries["Patient/p2"]  # never seen on the server: plain PUT


@pytest.mark.parametrize("stale_status", [409, 412])
def test_push_flags_an_edit_made_on_the_server_and_holds_it(
    store, client, server, stale_status
) -> None:
    server.stale_status = stale_status
    pushed_once(store, client, server, patient("p1"), patient("p2"))
    server.put(patient("p1", "Theirs"))  # edited on the server after our push
    put_local(store, patient("p1", "Mine"), patient("p2", "Also mine"), patient("p3"))
    report = push(store, client)
    assert report.conflicts == ["Patient/p1"] and report.held == ["Patient/p1"]
    assert report.pushed == 2  # the others went through
    assert server.db[("Patient", "p1")]["name"] == [{"family": "Theirs"}]  # not overwritten
    assert server.db[("Patient", "p2")]["name"] == [{"family": "Also mine"}]
    open_conflict = status(store)["conflicts"]["Patient/p1"]
    assert open_conflict["remote_version"] == "2" and open_conflict["found_by"] == "push"
    again = push(store, client)
    assert again.pushed == 0 and list(status(store)["conflicts"]) == ["Patient/p1"]
    resolve(store, client, "Patient", "p1", keep="local")
    assert server.db[("Patient", "p1")]["name"] == [{"family": "Mine"}]
    assert status(store)["conflicts"] == {}


def test_push_remote_wins_takes_the_servers_version(store, client, server) -> None:
    pushed_once(store, client, server, patient("p1"))
    server.put(patient("p1", "Theirs"))
    put_local(store, patient("p1", "Mine"))
    report = push(store, client, policy="remote-wins")
    assert report.remote_wins == 1 and report.conflicts == []
    assert store.read("Patient", "p1")["name"] == [{"family": "Theirs"}]
    assert push(store, client).pushed == 0  # taken from the server: nothing to send back


def test_push_local_wins_overwrites_knowingly(store, client, server) -> None:
    pushed_once(store, client, server, patient("p1"))
    server.put(patient("p1", "Theirs"))
    put_local(store, patient("p1", "Mine"))
    report = push(store, client, policy="local-wins")
    assert report.local_wins == 1
    assert server.db[("Patient", "p1")]["name"] == [{"family": "Mine"}]
    assert store.get_meta(remote_key("Patient", "p1")) == "3"


def test_lost_answer_then_stale_retry_is_our_own_write(store, client, server) -> None:
    """The Bundle was applied but its answer lost; the retry meets its own new version
    (stale If-Match): that is not a conflict."""
    pushed_once(store, client, server, patient("p1"))
    put_local(store, patient("p1", "Mine"))
    server.lose_answer = 1
    report = push(store, client)
    assert report.pushed == 1 and report.conflicts == [] and status(store)["conflicts"] == {}
    assert server.versions[("Patient", "p1")] == 2
    assert store.get_meta(remote_key("Patient", "p1")) == "2"


def test_delete_of_a_resource_edited_on_the_server_is_a_conflict(store, client, server) -> None:
    pushed_once(store, client, server, patient("p1"))
    server.put(patient("p1", "Theirs"))
    store.commit([WriteOp("delete", "Patient", id="p1")])
    report = push(store, client)
    assert report.conflicts == ["Patient/p1"] and report.deleted == 0
    assert ("Patient", "p1") in server.db  # HAPI ignores If-Match on DELETE: we checked first


def test_server_error_stops_the_push_without_advancing(store, client, server) -> None:
    put_local(store, patient("p1"))
    server.fail = [500]
    with pytest.raises(ServerError):
        push(store, client)
    assert store.get_meta(PUSH_SEQ, 0) == 0 and status(store)["pending"] == 1


# ---- pull -----------------------------------------------------------------------------------


def test_pull_brings_remote_changes_and_does_not_echo_them(store, client, server) -> None:
    for i in range(7):
        server.put(patient(f"r{i}"))
    seen: list[tuple[int, int]] = []
    report = pull(
        store, client, types=["Patient"], count=3, progress=lambda d, t: seen.append((d, t))
    )
    assert report.created == 7 and report.pages == 3
    assert seen[-1] == (7, 7)
    assert store.read("Patient", "r3")["name"] == [{"family": "Doe"}]
    assert [c.origin for c in store.changes(0)] == ["remote"] * 7
    assert push(store, client).pushed == 0  # not pushed back
    again = pull(store, client, types=["Patient"])
    assert again.created == again.updated == 0
    assert store.last_seq == 7


def test_pull_does_not_miss_same_millisecond_writes(store, client, server) -> None:
    server.put(patient("a"), at="2024-05-01T00:00:01.000Z")
    pull(store, client, types=["Patient"])
    server.put(patient("b"), at="2024-05-01T00:00:01.000Z")  # same instant, after our pull
    report = pull(store, client, types=["Patient"], overlap=0)
    assert report.created == 1 and report.unchanged == 1
    assert store.exists("Patient", "b")


def test_pull_of_our_own_push_is_not_a_change(store, client, server) -> None:
    put_local(store, patient("p1"))
    push(store, client)
    report = pull(store, client, types=["Patient"])
    assert report.unchanged == 1 and report.updated == 0 and report.conflicts == []


def test_pull_filters_by_patient(store, client, server) -> None:
    server.put(patient("a"))
    server.put(obs("oa", "a"))
    server.put(obs("ob", "b"))
    pull(store, client, types=["Patient", "Observation"], patients=["a"])
    assert store.exists("Observation", "oa") and not store.exists("Observation", "ob")
    assert store.get_meta("sync.pull.Observation") is None  # the unfiltered watermark is untouched


def _both_changed(store: EmbeddedStore, client: FhirClient, server: FakeFhir) -> None:
    put_local(store, obs("o1", "p1", 1.0), patient("p1"))
    push(store, client)
    put_local(store, obs("o1", "p1", 2.0))  # local edit, not pushed
    server.put(obs("o1", "p1", 3.0))  # remote edit


def test_pull_resource_brings_what_a_notification_names(store, client, server) -> None:
    server.put(obs("o1", "p1", 70.0))
    report = pull_resource(store, client, "Observation", "o1", version="1")
    assert report.created == 1 and store.read("Observation", "o1")["valueQuantity"]["value"] == 70.0
    assert pull_resource(store, client, "Observation", "o1", version="1").unchanged == 1
    server.put(obs("o1", "p1", 71.0))
    assert pull_resource(store, client, "Observation", "o1", version="2").updated == 1
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 71.0
    assert push(store, client).pushed == 0  # not echoed back


def test_conflict_flag_keeps_local_and_holds_it_back(store, client, server) -> None:
    _both_changed(store, client, server)
    report = pull(store, client, types=["Observation"], policy="flag")
    assert report.conflicts == ["Observation/o1"]
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 2.0
    st = status(store)
    assert "Observation/o1" in st["conflicts"] and st["held"] == 1 and st["pending"] == 0
    pushed = push(store, client)
    assert pushed.held == ["Observation/o1"]
    assert server.db[("Observation", "o1")]["valueQuantity"]["value"] == 3.0
    # the same conflict is not reported twice
    assert pull(store, client, types=["Observation"]).conflicts == []
    resolve(store, client, "Observation", "o1", keep="local")
    assert status(store)["conflicts"] == {}
    push(store, client)
    assert server.db[("Observation", "o1")]["valueQuantity"]["value"] == 2.0


def test_conflict_resolved_keeping_remote(store, client, server) -> None:
    _both_changed(store, client, server)
    pull(store, client, types=["Observation"])
    resolve(store, client, "Observation", "o1", keep="remote")
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 3.0
    assert push(store, client).pushed == 0


def test_conflict_remote_wins(store, client, server) -> None:
    _both_changed(store, client, server)
    report = pull(store, client, types=["Observation"], policy="remote-wins")
    assert report.remote_wins == 1 and report.conflicts == []
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 3.0
    assert push(store, client).pushed == 0  # the local edit was overruled
    assert server.db[("Observation", "o1")]["valueQuantity"]["value"] == 3.0


def test_conflict_local_wins(store, client, server) -> None:
    _both_changed(store, client, server)
    report = pull(store, client, types=["Observation"], policy="local-wins")
    assert report.local_wins == 1
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 2.0
    push(store, client)
    assert server.db[("Observation", "o1")]["valueQuantity"]["value"] == 2.0
    assert pull(store, client, types=["Observation"]).conflicts == []


def test_remote_change_without_local_change_is_not_a_conflict(store, client, server) -> None:
    put_local(store, patient("p1"), obs("o1", "p1", 1.0))
    push(store, client)
    server.put(obs("o1", "p1", 5.0))
    report = pull(store, client, types=["Observation"])
    assert report.updated == 1 and report.conflicts == []
    assert store.read("Observation", "o1")["valueQuantity"]["value"] == 5.0


def test_status_counts_the_outbox(store, client) -> None:
    put_local(store, patient("p1"), patient("p2"))
    put_local(store, patient("p1", "X"))
    st = status(store)
    assert st["pending"] == 2 and st["push_seq"] == 0 and st["last_seq"] == 3


# ---- subscriptions --------------------------------------------------------------------------


def test_subscribe_is_idempotent_and_waits_for_active(client, server) -> None:
    waits: list[float] = []
    sub = subscribe(
        client,
        endpoint="https://care.example/hook",
        header="Authorization: Bearer s3cret",
        sleep=waits.append,
    )
    assert sub["status"] == "active" and waits
    assert sub["channel"]["type"] == "rest-hook"
    assert sub["channel"]["payload"] == "application/fhir+json"
    assert sub["channel"]["header"] == ["Authorization: Bearer s3cret"]
    again = subscribe(client, endpoint="https://care.example/hook", sleep=waits.append)
    assert again["id"] == sub["id"]
    assert sum(1 for t, _ in server.db if t == "Subscription") == 1


def test_subscribe_that_never_activates_is_deleted_and_names_the_setting(client, server) -> None:
    server.resthook = False
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(SubscriptionNotActive) as err:
        subscribe(
            client,
            endpoint="https://care.example/hook",
            timeout=5,
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert "hapi.fhir.subscription.resthook_enabled=true" in err.value.diagnostics
    assert "was deleted" in err.value.diagnostics
    assert now[0] >= 5 and server.subscription_polls >= 5  # polled until the deadline
    assert not any(t == "Subscription" for t, _ in server.db)  # nothing left "requested"


# ---- the remote store's transaction ---------------------------------------------------------


def test_remote_store_builds_one_transaction() -> None:
    from fhircare.store.remote import RemoteStore

    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bundle = json.loads(request.content)
        sent.append(bundle)
        entries = [
            {"response": {"status": "201 Created", "location": "Patient/kept/_history/1"}},
            {"response": {"status": "201 Created", "location": "Goal/srv1/_history/1"}},
            {"response": {"status": "200 OK", "etag": 'W/"4"', "location": "Goal/g/_history/4"}},
            {"response": {"status": "204 No Content"}},
        ]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        )

    with FhirClient(BASE, transport=httpx.MockTransport(handler)) as c:
        results = RemoteStore(c).commit(
            [
                WriteOp("create", "Patient", id="kept", resource=patient("kept"), keep_id=True),
                WriteOp("create", "Goal", id="ignored", resource={"id": "ignored"}),
                WriteOp(
                    "update", "Goal", id="g", resource={"lifecycleStatus": "active"}, if_match="3"
                ),
                WriteOp("delete", "Task", id="t"),
            ]
        )
    requests = [e["request"] for e in sent[0]["entry"]]
    assert requests == [
        {"method": "PUT", "url": "Patient/kept"},
        {"method": "POST", "url": "Goal"},
        {"method": "PUT", "url": "Goal/g", "ifMatch": 'W/"3"'},
        {"method": "DELETE", "url": "Task/t"},
    ]
    assert "id" not in sent[0]["entry"][1]["resource"]
    assert sent[0]["entry"][1]["fullUrl"].startswith("urn:uuid:")
    assert [(r.id, r.version_id, r.created) for r in results] == [
        ("kept", "1", True),
        ("srv1", "1", True),
        ("g", "4", False),
        ("t", "", False),
    ]
    assert results[3].deleted
