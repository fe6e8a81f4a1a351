// Discharge review: the reconciled medication list side by side (before / after / status /
// changes) and each flagged issue with accept, override (with a reason) or "call the
// prescriber", written back through DetectedIssue/$review (mitigation, Task, Provenance).
import { announce, busy, codeText, day, emptyNote, errorBox, h, humanName, idOf, labelled, section, show } from "./dom.js";
import { patientHeader } from "./patient.js";
import { CARE_TASK, OPEN } from "./tasks.js";

const DISCHARGE_LIST = "http://loinc.org|75311-1";
const MEDREC_STATUS = "http://fhircare.org/fhir/CodeSystem/medrec-status";
const MEDREC_ENCOUNTER = "http://fhircare.org/fhir/CodeSystem/medrec-encounter";
// ActDetectedIssueManagementCode reasons for overriding a flag (the server checks them too)
export const OVERRIDE_REASONS = [
  ["2", "Assessed patient, therapy is appropriate"],
  ["3", "Patient gave adequate explanation"],
  ["4", "Consulted other source, therapy still appropriate"],
  ["7", "Interacting therapy no longer active or planned"],
  ["22", "Patient has the appropriate indication or diagnosis"],
  ["23", "Prior therapy documented"],
];

function medication(resource) {
  if (!resource) return "—";
  const name = codeText(resource.medicationCodeableConcept) || resource.medicationReference?.display || "medication";
  const dose = (resource.dosageInstruction || resource.dosage || []).map((d) => d.text).filter(Boolean).join("; ");
  return dose ? `${name} — ${dose}` : name;
}

function statusOf(entry) {
  const code = (entry.flag?.coding || []).find((c) => c.system === MEDREC_STATUS)?.code;
  return code || codeText(entry.flag) || "—";
}

/**
 * Pair each List entry with its medication before admission. The reconciliation writes one
 * MedicationStatement per line of the new list (tagged with the stay), derived from the
 * pre-admission entry and the discharge order it reconciled: that pairing is the server's,
 * not a guess by name.
 */
function pairings(list, reconciled) {
  return (list.entry || []).map((entry) => {
    const itemRef = entry.item?.reference;
    const status = statusOf(entry);
    const line = reconciled.find((s) => (s.derivedFrom || []).some((d) => d.reference === itemRef));
    const sources = (line?.derivedFrom || []).map((d) => d.reference);
    const gone = status === "discontinued" || entry.deleted;
    const wasRef = gone ? itemRef : sources.find((r) => r !== itemRef) || null;
    const changes = (entry.flag?.text || "").match(/\(([^)]*)\)/)?.[1] || "";
    return { ingredient: entry.item?.display || "medication", wasRef, nowRef: gone ? null : itemRef, status, changes };
  });
}

/** Every referenced medication entry, reading those the searches did not bring (by _id). */
async function medications(fhir, refs, known) {
  const missing = new Map();
  for (const r of refs) {
    if (!r || known.has(r)) continue;
    const [type, id] = r.split("/");
    if (!missing.has(type)) missing.set(type, []);
    missing.get(type).push(id);
  }
  await Promise.all(
    [...missing].map(async ([type, ids]) => {
      const found = await fhir.search(type, { _id: ids.join(","), _count: String(ids.length) });
      for (const [k, v] of found.included) known.set(k, v);
    }),
  );
  return known;
}

export async function dischargeScreen(ctx, encounterId) {
  const { fhir } = ctx;
  const eref = `Encounter/${encounterId}`;
  const encounter = await fhir.read("Encounter", encounterId);
  const pref = encounter.subject?.reference;
  const tag = `${MEDREC_ENCOUNTER}|${encounterId}`;
  const [patient, lists, issues, reconciled] = await Promise.all([
    fhir.read("Patient", idOf(pref)),
    fhir.search("List", { encounter: eref, code: DISCHARGE_LIST, _include: "List:item", _count: "10" }),
    fhir.search("DetectedIssue", { _tag: tag, _revinclude: "Task:focus", _count: "200" }),
    fhir.search("MedicationStatement", { patient: pref, _tag: tag, _count: "500" }),
  ]);
  const list = lists.matches[0];
  const lines = list ? pairings(list, reconciled.matches) : [];
  const meds = await medications(fhir, lines.flatMap((l) => [l.wasRef, l.nowRef]), new Map(lists.included));
  const rerender = () => dischargeScreen(ctx, encounterId);
  const medTable = list
    ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "medrec" },
          h("caption", {}, `${list.title || "Reconciled medications"} (${day(list.date)})`),
          h("thead", {}, h("tr", {}, ["Medication", "Before admission", "At discharge", "Status", "Changes"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            lines.map((r) =>
              h(
                "tr",
                { class: `med-${r.status}` },
                h("th", { scope: "row" }, r.ingredient),
                h("td", {}, medication(meds.get(r.wasRef))),
                h("td", {}, medication(meds.get(r.nowRef))),
                h("td", {}, h("span", { class: `badge med-${r.status}` }, r.status)),
                h("td", {}, r.changes || "—"),
              ),
            ),
          ),
        ),
      )
    : emptyNote("This stay has no reconciled medication list yet.");

  const tasksByIssue = new Map();
  for (const r of issues.included.values()) {
    if (r.resourceType !== "Task") continue;
    const focus = r.focus?.reference;
    if (!tasksByIssue.has(focus)) tasksByIssue.set(focus, []);
    tasksByIssue.get(focus).push(r);
  }
  const order = { high: 0, moderate: 1, low: 2 };
  const issueCards = issues.matches
    .sort((a, b) => (order[a.severity] ?? 3) - (order[b.severity] ?? 3))
    .map((issue) => issueCard(ctx, issue, tasksByIssue.get(`DetectedIssue/${issue.id}`) || [], rerender));

  show(
    `Discharge review · ${humanName(patient)}`,
    patientHeader(patient),
    h(
      "p",
      {},
      `Stay ${day(encounter.period?.start)} to ${day(encounter.period?.end)} · `,
      h("a", { href: `#/patient/${patient.id}` }, "Patient overview"),
    ),
    section("Medications", medTable),
    section("Issues to review", issueCards.length ? h("ul", { class: "issues" }, issueCards) : emptyNote("No issues were flagged.")),
  );
}

function issueCard(ctx, issue, tasks, rerender) {
  const decided = (issue.mitigation || [])[0];
  const call = tasks.find((t) => (t.code?.coding || []).some((c) => c.system === CARE_TASK && c.code === "prescriber-contact") && OPEN.includes(t.status));
  const message = h("div");
  const decide = (decision, extra = {}, button) =>
    busy(
      button,
      ctx.fhir.operation(`DetectedIssue/${issue.id}/$review`, {
        body: {
          resourceType: "Parameters",
          parameter: [
            { name: "decision", valueCode: decision },
            { name: "reviewer", valueReference: { reference: ctx.me } },
            ...(extra.reason ? [{ name: "reason", valueString: extra.reason }] : []),
            ...(extra.reasonCode ? [{ name: "reasonCode", valueCode: extra.reasonCode }] : []),
          ],
        },
        ifMatch: issue.meta?.versionId,
      }),
    )
      .then(async () => {
        await rerender();
        announce(`Issue ${decision === "accept" ? "accepted" : decision === "override" ? "overridden" : "sent to the prescriber"}: ${issue.detail}`);
      })
      .catch((err) => message.replaceChildren(errorBox(err, { onReload: rerender })));

  let controls;
  if (decided) {
    const by = ctx.practitioners.find((p) => `Practitioner/${p.id}` === decided.author?.reference);
    controls = h(
      "p",
      { class: "decision" },
      h("strong", {}, "Decided: "),
      codeText(decided.action),
      by ? ` — ${humanName(by)}` : "",
      decided.date ? ` (${day(decided.date)})` : "",
    );
  } else {
    const accept = h("button", { type: "button", class: "primary", onclick: (e) => decide("accept", {}, e.currentTarget) }, "Accept");
    const reasonCode = h("select", {}, h("option", { value: "" }, "Choose a reason…"), OVERRIDE_REASONS.map(([code, text]) => h("option", { value: code }, text)));
    const reason = h("textarea", { rows: "2" });
    const submit = h("button", { type: "submit" }, "Override");
    const overrideForm = h(
      "form",
      {
        class: "inline-form",
        hidden: true,
        "aria-label": `Override: ${issue.detail}`,
        onsubmit: (e) => {
          e.preventDefault();
          if (!reason.value.trim()) {
            message.replaceChildren(h("p", { class: "alert error", role: "alert" }, "An override needs a reason."));
            reason.focus();
            return;
          }
          decide("override", { reason: reason.value.trim(), reasonCode: reasonCode.value || undefined }, submit);
        },
      },
      labelled("Reason (coded)", reasonCode),
      labelled("Reason", reason, { hint: "Why the flag does not apply; kept on the issue and its Provenance." }),
      submit,
    );
    const overrideToggle = h("button", {
      type: "button",
      "aria-expanded": "false",
      onclick: (e) => {
        overrideForm.hidden = !overrideForm.hidden;
        e.currentTarget.setAttribute("aria-expanded", String(!overrideForm.hidden));
        if (!overrideForm.hidden) reasonCode.focus();
      },
    }, "Override…");
    const callButton = call
      ? h("p", { class: "hint" }, `Prescriber call open: ${call.description}`)
      : h("button", { type: "button", onclick: (e) => decide("call-prescriber", {}, e.currentTarget) }, "Call the prescriber");
    controls = h("div", {}, h("div", { class: "actions" }, accept, overrideToggle, callButton), overrideForm);
  }
  return h(
    "li",
    { class: `issue severity-${issue.severity}`, dataset: { issue: issue.id } },
    h("h3", {}, h("span", { class: `badge severity-${issue.severity}` }, issue.severity || "unknown"), " ", codeText(issue.code)),
    h("p", {}, issue.detail),
    (issue.implicated || []).length ? h("p", { class: "hint" }, `Implicated: ${(issue.implicated || []).map((i) => i.display || i.reference).join(", ")}`) : null,
    controls,
    message,
  );
}
