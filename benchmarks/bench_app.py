"""The care manager's web app on a panel of 500 patients: page load and the worklist query in
Debian's chromium, against `fhircare serve`, with the server-side worklist
(`GET /care/worklist`) measured in the same run as the baseline. Prints `name=value` lines.

    python benchmarks/bench_app.py [--patients 500 --runs 7 --chromium /usr/bin/chromium]

The panel is demo-like: each patient has type 2 diabetes and hypertension, two HbA1c
results, the diabetes plan applied (`PlanDefinition/t2dm/$apply` with the care manager:
CarePlan, Goals, Tasks, CareTeam) and two follow-up calls (`/care/followups`), about nine
open Tasks each, a third of them overdue. Loading uses fsync off (it is not measured);
the measured server runs with its stock settings otherwise.

Figures: `app_worklist_load_ms` is navigation start to the rendered worklist (fresh browser
context each run: HTML, scripts, the SMART client, the FHIR searches, rendering);
`app_worklist_data_ms` is the app's own timing of its FHIR searches;
`app_worklist_requests` counts every request the app made to show the worklist;
`care_worklist_ms` is `GET /care/worklist` (the same list computed in the server) and
`ratio_care_over_app_data` divides it by the app's data time (above 1: the app is faster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
CM = "Practitioner/bench-cm"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fhircare serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def patient_entries(n: int, now: datetime) -> list[dict[str, Any]]:
    """Patient n with her Conditions and two HbA1c results, as PUT entries."""
    pid = f"bench-p{n:04d}"
    ref = {"reference": f"Patient/{pid}"}
    born = f"{1940 + n % 45}-{1 + n % 12:02d}-{1 + n % 27:02d}"

    def condition(cid: str, code: str, display: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition", "id": f"{pid}-{cid}", "subject": ref,
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        }

    def hba1c(oid: str, value: float, days_ago: int) -> dict[str, Any]:
        return {
            "resourceType": "Observation", "id": f"{pid}-{oid}", "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "4548-4",
                                 "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
            "subject": ref,
            "effectiveDateTime": (now - timedelta(days=days_ago)).isoformat()[:19] + "Z",
            "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org",
                              "code": "%"},
        }

    resources = [
        {"resourceType": "Patient", "id": pid, "gender": "female" if n % 2 else "male",
         "birthDate": born, "name": [{"family": f"Panel{n:04d}", "given": ["Sam"]}]},
        condition("dm", "44054006", "Diabetes mellitus type 2"),
        condition("htn", "59621000", "Essential hypertension"),
        hba1c("a1c-1", 8.0 + (n % 20) / 10, 120),
        hba1c("a1c-2", 7.0 + (n % 20) / 10, 10),
    ]
    return [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources
    ]


def load_panel(http: httpx.Client, patients: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    practitioner = {"resourceType": "Practitioner", "id": "bench-cm",
                    "name": [{"family": "Rivera", "given": ["Morgan"], "suffix": ["RN"]}]}
    http.put(f"/fhir/{CM}", json=practitioner, headers=FHIR).raise_for_status()
    for start in range(0, patients, 50):
        chunk = range(start, min(start + 50, patients))
        entries = [e for n in chunk for e in patient_entries(n, now)]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        http.post("/fhir", json=bundle, headers=FHIR).raise_for_status()
    for n in range(patients):
        pid = f"Patient/bench-p{n:04d}"
        http.post("/fhir/PlanDefinition/t2dm/$apply", params={"subject": pid, "practitioner": CM},
                  headers=FHIR).raise_for_status()
        start = now - timedelta(days=21) if n % 3 == 0 else now  # a third fall overdue
        http.post("/care/followups", json={"patient": pid, "owner": CM, "tier": "moderate",
                                           "count": 2},
                  headers={"Content-Type": "application/json"}).raise_for_status()
        if start != now:  # move this patient's calls three weeks back
            tasks = http.get("/fhir/Task", params={"patient": pid, "owner": CM, "_count": "50",
                                                   "code": "http://fhircare.org/fhir/CodeSystem/"
                                                   "care-task|follow-up-call"}).json()
            for e in tasks.get("entry") or []:
                task = e["resource"]
                end = task["restriction"]["period"]["end"]
                due = datetime.fromisoformat(end.replace("Z", "+00:00"))
                task["restriction"]["period"]["end"] = (due - timedelta(days=21)).isoformat()
                http.put(f"/fhir/Task/{task['id']}", json=task, headers={
                    **FHIR, "If-Match": f'W/"{task["meta"]["versionId"]}"'}).raise_for_status()


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(root: str, runs: int, chromium: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {}
    url = f"{root}/app/?practitioner={CM}#/worklist"
    with httpx.Client(base_url=root, timeout=120) as http:
        care = []
        http.get("/care/worklist", params={"practitioner": CM}).raise_for_status()  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            r = http.get("/care/worklist", params={"practitioner": CM})
            care.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        out["care_worklist_items"] = r.json()["count"]
    out["care_worklist_ms"] = median(care)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        loads, data, requests, patient_loads = [], [], [], []
        for i in range(runs + 1):  # the first, unmeasured, warms the server's caches
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("document.body.dataset.ready === '#/worklist'", timeout=120_000)
            load = page.evaluate("performance.now()")
            got = page.evaluate("window.fhircareApp.fhir.requests")
            data_ms = float(page.locator("#load-time").inner_text().split()[2])
            rows = page.locator("tbody tr[data-task]").count()
            page.locator("tbody tr[data-task] a").first.click()
            started = page.evaluate("performance.now()")
            page.wait_for_function("document.body.dataset.ready.startsWith('#/patient/')")
            patient_ms = page.evaluate("performance.now()") - started
            context.close()
            if i:
                loads.append(load)
                data.append(data_ms)
                requests.append(got)
                patient_loads.append(patient_ms)
        browser.close()
    out["app_worklist_rows"] = rows
    out["app_worklist_load_ms"] = median(loads)
    out["app_worklist_data_ms"] = median(data)
    out["app_worklist_requests"] = max(requests)
    out["app_patient_screen_ms"] = median(patient_loads)
    out["ratio_care_over_app_data"] = out["care_worklist_ms"] / out["app_worklist_data_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        env = {**os.environ, "FHIRCARE_FSYNC": "false", "FHIRCARE_SWEEP_INTERVAL": "0"}
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "fhircare", "serve", "--port", str(port), "--data",
             str(Path(tmp) / "data")], env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait(f"{root}/fhir/metadata", proc)
            t = time.perf_counter()
            with httpx.Client(base_url=root, timeout=300) as http:
                load_panel(http, args.patients)
            print(f"patients={args.patients}")
            print(f"panel_load_s={time.perf_counter() - t:.1f}")
            for name, value in run(root, args.runs, args.chromium).items():
                print(f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}")
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()


if __name__ == "__main__":
    main()
