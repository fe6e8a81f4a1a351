"""The care manager's web app in a real browser, against a real `fhircare serve`: each path a
care manager walks, then what the FHIR API holds afterwards."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import CM, check_screen, entries, open_screen, wait_rendered
from tests.conftest import ServerProcess

LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DEMO = "demo-patient"


def test_morning_path_worklist_patient_and_a_follow_up_call_by_keyboard(
    page: Page, app_server: ServerProcess, api: httpx.Client
) -> None:
    open_screen(page, app_server, "#/worklist")
    rows = page.locator("tbody tr[data-task]")
    expect(rows.first).to_have_class("overdue")  # overdue first
    expect(rows.first).to_contain_text("overdue since")
    # the whole worklist is a few searches (with _include), not a request per task or patient
    requests = page.evaluate("window.fhircareApp.fhir.requests")
    assert requests <= 6, requests
    call_row = page.locator("tr[data-task]", has_text="Follow-up call 2 of 2")
    expect(call_row).to_have_count(1)
    expect(call_row).to_contain_text("assigned to you")
    task_id = call_row.get_attribute("data-task")
    check_screen(page, "worklist")

    # filter by patient: only the discharged example patient's tasks remain
    page.get_by_label("Patient", exact=True).fill("Robin")
    expect(page.locator(".count")).to_contain_text("of")
    for text in rows.all_inner_texts():
        assert "Robin Example" in text
    page.get_by_label("Patient", exact=True).fill("")

    call_row.get_by_role("link", name="Dana Sample").click()
    wait_rendered(page, f"#/patient/{DEMO}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dana Sample")
    expect(page.locator("#s-risk").locator("..")).to_contain_text("high risk")
    hba1c = page.locator("svg.chart[aria-label^='Hemoglobin A1c']")
    expect(hba1c).to_have_attribute("aria-label", "Hemoglobin A1c/Hemoglobin.total in Blood: "
                                    + hba1c.get_attribute("aria-label").split(": ", 1)[1])
    assert "7.8 %" in hba1c.get_attribute("aria-label")
    assert "target below 7 %" in hba1c.get_attribute("aria-label")
    check_screen(page, "patient")

    page.go_back()
    wait_rendered(page, "#/worklist")
    call_row = page.locator(f"tr[data-task='{task_id}']")
    call_row.get_by_role("button", name="Complete call").focus()
    page.keyboard.press("Enter")
    summary = "Reviewed the new furosemide dose; weight stable; transport to the clinic booked."
    page.keyboard.type(summary)  # the form took focus on its first field
    page.keyboard.press("Tab")
    page.keyboard.type("medications, transport")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("Call documented")
    expect(page.locator(f"tr[data-task='{task_id}']")).to_have_count(0)

    task = api.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    calls = api.get("/Communication", params={"based-on": f"Task/{task_id}"}).json()
    (communication,) = entries(calls)
    assert communication["payload"][0]["contentString"] == summary
    assert {"contentString": "Topic: transport"} in communication["payload"]
    record = task["output"][0]["valueReference"]["reference"]
    assert record == f"Communication/{communication['id']}"


def fill_phq9(page: Page, answers: list[str]) -> None:
    """Answer the nine PHQ-9 items in LHC-Forms' own answer lists."""
    items = page.locator("lhc-item.lhc-datatype-CODING input[role=combobox]")
    for index, text in enumerate(answers):
        items.nth(index).click()
        page.locator("#lhc-tools-searchResults li", has_text=text).first.click()
        expect(items.nth(index)).to_have_value(re.compile(f"^{re.escape(text)}"))


def test_phq9_filled_in_lhc_forms_is_saved_and_scored(
    page: Page, app_server: ServerProcess, api: httpx.Client
) -> None:
    open_screen(page, app_server, f"#/patient/{DEMO}/assess/phq-9")
    expect(page.locator("#screen-title")).to_contain_text("PHQ-9")
    answers = ["Several days", "More than half the days", "Nearly every day", "Nearly every day",
               "Several days", "More than half the days", "Several days", "Not at all",
               "Not at all"]  # 1 + 2 + 3 + 3 + 1 + 2 + 1 = 13, item 9 negative
    fill_phq9(page, answers)
    check_screen(page, "assessment")
    page.get_by_role("button", name="Save as completed").click()
    expect(page.locator("#assessment-results")).to_contain_text("total score")
    expect(page.locator("#assessment-results .score")).to_contain_text(": 13 (Moderate depression)")

    qr_ref = page.locator("#assessment-results .meta").inner_text()
    qr = api.get(f"/{qr_ref}").json()
    assert qr["status"] == "completed"
    assert qr["subject"] == {"reference": f"Patient/{DEMO}"}
    assert qr["author"] == {"reference": CM}
    assert qr["questionnaire"].startswith("http://fhircare.org/fhir/Questionnaire/phq-9")
    scores = [
        o for o in entries(api.get("/Observation", params={
            "patient": f"Patient/{DEMO}", "code": f"{LOINC}|44261-6", "_count": "50"}).json())
        if o.get("derivedFrom", [{}])[0].get("reference", "").startswith(qr_ref)
    ]
    (score,) = scores
    assert score["valueQuantity"]["value"] == 13
    assert score["derivedFrom"][0]["reference"].startswith(f"{qr_ref}/_history/")
    check_screen(page, "assessment-scored")


def plan_card(page: Page, title: str) -> Locator:
    return page.locator("section", has=page.get_by_role("heading", level=2, name=title))


def test_apply_a_template_and_revise_through_a_conflict(
    page: Page, app_server: ServerProcess, api: httpx.Client
) -> None:
    open_screen(page, app_server, f"#/patient/{DEMO}/plan")
    page.get_by_label("Template", exact=True).select_option("hypertension")
    page.get_by_label("Program", exact=True).select_option("long-term")
    page.get_by_role("button", name="Apply template").click()
    expect(page.locator("#status")).to_contain_text("Plan created")
    plans = entries(api.get("/CarePlan", params={
        "patient": f"Patient/{DEMO}", "status": "active",
        "instantiates-canonical": "http://fhircare.org/fhir/PlanDefinition/hypertension"}).json())
    assert len(plans) == 1
    hypertension = plans[0]
    assert hypertension["goal"] and hypertension["activity"]
    expect(page.get_by_role("heading", level=2, name=hypertension["title"])).to_be_visible()
    check_screen(page, "care-plan")

    # a colleague revises the plan while this page still shows the old version
    card = plan_card(page, hypertension["title"])
    card.get_by_text("Revise this plan").click()
    note = "Home BP log reviewed; keep the current targets."
    card.get_by_label("Add a note (optional)").fill(note)
    card.get_by_label("Reason for the change").fill("Monthly review")
    theirs = api.get(f"/CarePlan/{hypertension['id']}").json()
    theirs["description"] = "Edited by a colleague"
    moved = api.put(f"/CarePlan/{hypertension['id']}", json=theirs,
                    headers={"If-Match": f'W/"{theirs["meta"]["versionId"]}"'})
    assert moved.status_code == 200, moved.text
    card.get_by_role("button", name="Save revision").click()
    alert = card.get_by_role("alert")
    expect(alert).to_contain_text("someone changed this first")
    current = api.get(f"/CarePlan/{hypertension['id']}").json()
    assert current["meta"]["versionId"] == moved.json()["meta"]["versionId"]  # nothing written
    assert not current.get("note")

    alert.get_by_role("button", name="Reload the latest version").click()
    card = plan_card(page, hypertension["title"])
    expect(card.get_by_label("Add a note (optional)")).to_have_value(note)  # the draft is kept
    expect(card.get_by_label("Description", exact=True)).to_have_value("Edited by a colleague")
    card.get_by_role("button", name="Save revision").click()
    expect(page.locator("#status")).to_contain_text("revised")

    revised = api.get(f"/CarePlan/{hypertension['id']}").json()
    assert revised["note"][-1]["text"] == note
    assert revised["description"] == "Edited by a colleague"  # the colleague's edit survived
    version = revised["meta"]["versionId"]
    (provenance,) = entries(api.get("/Provenance", params={
        "target": f"CarePlan/{hypertension['id']}/_history/{version}"}).json())
    assert provenance["agent"][0]["who"] == {"reference": CM}
    assert provenance["reason"] == [{"text": "Monthly review"}]


def test_discharge_review_accepts_one_issue_and_overrides_another(
    page: Page, app_server: ServerProcess, api: httpx.Client
) -> None:
    open_screen(page, app_server, "#/discharge/example-stay")
    table = page.locator("table.medrec")
    expect(table.locator("tr", has_text="furosemide")).to_contain_text("20 mg")
    expect(table.locator("tr", has_text="furosemide")).to_contain_text("40 mg")
    expect(table.locator("tr", has_text="furosemide")).to_contain_text("changed")
    expect(table.locator("tr", has_text="lisinopril")).to_contain_text("discontinued")
    expect(table.locator("tr", has_text="apixaban")).to_contain_text("new")
    check_screen(page, "discharge-review")

    high_risk = page.locator("li.issue", has_text="apixaban")
    high_risk.get_by_role("button", name="Accept").click()
    expect(page.locator("#status")).to_contain_text("Issue accepted")
    expect(page.locator("li.issue", has_text="apixaban")).to_contain_text("Decided:")

    omission = page.locator("li.issue", has_text="lisinopril")
    omission.get_by_role("button", name="Override…").click()
    omission.get_by_role("button", name="Override", exact=True).click()
    expect(omission.get_by_role("alert")).to_contain_text("needs a reason")
    omission.get_by_label("Reason (coded)").select_option("22")
    reason = "Lisinopril held for acute kidney injury; nephrology to restart"
    omission.get_by_label("Reason", exact=True).fill(reason)
    omission.get_by_role("button", name="Override", exact=True).click()
    expect(page.locator("#status")).to_contain_text("Issue overridden")
    expect(page.locator("li.issue", has_text="lisinopril")).to_contain_text(reason)
    check_screen(page, "discharge-reviewed")

    found = api.get("/DetectedIssue", params={"patient": "Patient/example-dana"}).json()
    issues = {i["code"]["coding"][0]["code"]: i for i in entries(found)}
    accepted = issues["high-risk"]["mitigation"][0]
    assert accepted["action"]["coding"][0] == {
        "system": ACT_CODE, "code": "1", "display": "Therapy Appropriate"}
    assert accepted["author"] == {"reference": CM}
    overridden = issues["omission"]["mitigation"][0]
    assert overridden["action"]["coding"][0]["code"] == "22"
    assert reason in overridden["action"]["text"]
    for issue in issues.values():
        tasks = entries(api.get("/Task", params={"focus": f"DetectedIssue/{issue['id']}"}).json())
        assert [t["status"] for t in tasks] == ["completed"]
    provenance = entries(api.get("/Provenance", params={"agent": CM}).json())
    targets = {t["reference"] for p in provenance for t in p["target"]}
    assert {f"DetectedIssue/{i['id']}/_history/2" for i in issues.values()} <= targets


def test_referrals_show_the_rejected_referral_and_its_alternative(
    page: Page, app_server: ServerProcess, api: httpx.Client
) -> None:
    open_screen(page, app_server, f"#/patient/{DEMO}/referrals")
    rejected = page.locator("tr.rejected")
    expect(rejected).to_have_count(1)
    expect(rejected).to_contain_text("Pantry is outside the patient's area")
    check_screen(page, "referrals")
    rejected.get_by_role("button", name="Take it on").click()
    expect(page.locator("#status")).to_contain_text("Alternative task accepted")
    (alternative,) = entries(api.get("/Task", params={
        "patient": f"Patient/{DEMO}",
        "code": "http://fhircare.org/fhir/CodeSystem/care-task|propose-alternative"}).json())
    assert alternative["status"] == "accepted"


def test_tablet_worklist_fits_the_screen(page: Page, app_server: ServerProcess) -> None:
    page.set_viewport_size({"width": 820, "height": 1180})
    open_screen(page, app_server, "#/worklist")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow} px wider than the tablet"
    check_screen(page, "worklist-tablet")
