// Patient: problems, risk tier and reasons, programs, care team, upcoming follow-ups,
// recent discharges, goals with their measured progress; and the list of one's patients.
import {
  age, codeOf, codeText, day, emptyNote, h, humanName, idOf, labelled, section, show, taskDue,
} from "./dom.js";
import { goalChart } from "./chart.js";
import { OPEN } from "./tasks.js";

const LOINC = "http://loinc.org";
const PROGRAM_KIND = "http://fhircare.org/fhir/CodeSystem/program-kind";
const DISCHARGE_LIST = `${LOINC}|75311-1`;
// measures drawn against goals: HbA1c, weight, systolic / diastolic BP, PHQ-9 total
const MEASURES = ["4548-4", "29463-7", "8480-6", "8462-4", "85354-9", "44261-6", "55758-7"];
const STAY_CLASSES = ["IMP", "EMER", "OBSENC", "ACUTE", "NONAC"];

export function patientHeader(patient) {
  const years = age(patient.birthDate);
  const mrn = (patient.identifier || [])[0]?.value;
  return h(
    "p",
    { class: "patient-header" },
    [patient.gender, years !== null ? `${years} years` : null, patient.birthDate ? `born ${patient.birthDate}` : null, mrn ? `MRN ${mrn}` : null]
      .filter(Boolean)
      .join(" · "),
  );
}

export function patientNav(id, current) {
  const links = [
    ["Overview", `#/patient/${id}`],
    ["Care plan", `#/patient/${id}/plan`],
    ["Assessment", `#/patient/${id}/assess`],
    ["Referrals", `#/patient/${id}/referrals`],
  ];
  return h(
    "nav",
    { "aria-label": "Patient", class: "tabs" },
    h("ul", {}, links.map(([label, href]) => h("li", {}, h("a", { href, "aria-current": label === current ? "page" : undefined }, label)))),
  );
}

async function eligibility(fhir, patientRef) {
  try {
    return await fhir.care("eligibility", { method: "GET", params: { patient: patientRef } });
  } catch {
    return null; // a server without fhircare's care endpoints: no tier shown
  }
}

export async function patientScreen(ctx, id) {
  const { fhir } = ctx;
  const pref = `Patient/${id}`;
  const [patient, conditions, elig, plans, teams, tasks, encounters, goals, observations, lists] = await Promise.all([
    fhir.read("Patient", id),
    fhir.search("Condition", { patient: pref, "clinical-status": "active", _count: "200" }),
    eligibility(fhir, pref),
    fhir.search("CarePlan", { patient: pref, status: "active", _count: "100" }),
    fhir.search("CareTeam", { patient: pref, status: "active", _include: "CareTeam:participant", _count: "50" }),
    fhir.search("Task", { patient: pref, status: OPEN.join(","), _count: "500" }),
    fhir.search("Encounter", { patient: pref, status: "finished", _sort: "-date", _count: "20" }, { max: 20 }),
    fhir.search("Goal", { patient: pref, _count: "200" }),
    fhir.search("Observation", { patient: pref, code: MEASURES.map((c) => `${LOINC}|${c}`).join(","), _sort: "date", _count: "1000" }),
    fhir.search("List", { patient: pref, code: DISCHARGE_LIST, _count: "50" }),
  ]);

  const risk = elig
    ? h(
        "div",
        {},
        h("p", {}, h("span", { class: `badge tier-${elig.tier}` }, `${elig.tier} risk`), elig.ccmEligible ? " · eligible for chronic care management" : " · not eligible for chronic care management"),
        h("ul", {}, (elig.reasons || []).map((r) => h("li", {}, r))),
      )
    : emptyNote("No risk assessment from this server.");

  const problems = conditions.matches.length
    ? h("ul", {}, conditions.matches.map((c) => h("li", {}, codeText(c.code), c.onsetDateTime ? ` (since ${day(c.onsetDateTime)})` : "")))
    : emptyNote("No active problems recorded.");

  const programs = plans.matches.length
    ? h(
        "ul",
        {},
        plans.matches.map((p) => {
          const kind = codeOf(p.category || [], PROGRAM_KIND);
          const label = kind === "episode" ? "case management (episode)" : kind === "long-term" ? "care management (long-term)" : "plan";
          return h("li", {}, h("a", { href: `#/patient/${id}/plan` }, p.title || "Care plan"), ` — ${label}`, p.period?.end ? `, until ${day(p.period.end)}` : "");
        }),
      )
    : h("p", { class: "empty" }, "No active plan. ", h("a", { href: `#/patient/${id}/plan` }, "Apply a template"));

  const members = new Map();
  for (const team of teams.matches) {
    for (const part of team.participant || []) {
      const who = part.member?.reference;
      if (!who || members.has(who)) continue;
      members.set(who, { who: teams.included.get(who), ref: who, role: (part.role || []).map(codeText).join(", ") });
    }
  }
  const careTeam = members.size
    ? h("ul", {}, [...members.values()].map((m) => h("li", {}, m.who ? humanName(m.who) : m.ref, m.role ? ` — ${m.role}` : "")))
    : emptyNote("No care team yet.");

  const upcoming = tasks.matches
    .filter((t) => taskDue(t))
    .sort((a, b) => Date.parse(taskDue(a)) - Date.parse(taskDue(b)))
    .slice(0, 8);
  const followUps = upcoming.length
    ? h("ul", {}, upcoming.map((t) => h("li", {}, h("strong", {}, day(taskDue(t))), ` ${t.description || codeText(t.code)} (${t.status})`)))
    : emptyNote("Nothing scheduled.");

  const reconciled = new Set(lists.matches.map((l) => l.encounter?.reference).filter(Boolean));
  const stays = encounters.matches.filter((e) => STAY_CLASSES.includes(e.class?.code) && e.period?.end).slice(0, 5);
  const discharges = stays.length
    ? h(
        "ul",
        {},
        stays.map((e) =>
          h(
            "li",
            {},
            `${codeText({ coding: [e.class] }) || "stay"}: ${day(e.period.start)} to ${day(e.period.end)} `,
            reconciled.has(`Encounter/${e.id}`) ? h("a", { href: `#/discharge/${e.id}` }, "Review medications") : h("span", { class: "hint" }, "(no reconciliation)"),
          ),
        ),
      )
    : emptyNote("No recent stays.");

  show(
    humanName(patient),
    patientHeader(patient),
    patientNav(id, "Overview"),
    h(
      "div",
      { class: "grid" },
      section("Risk", risk),
      section("Problems", problems),
      section("Programs", programs),
      section("Care team", careTeam),
      section("Upcoming follow-ups", followUps),
      section("Recent discharges", discharges),
    ),
    section("Goals", goalList(goals.matches, observations.matches)),
  );
}

/** Observation values for a goal's measure (a panel's component counts too), oldest first. */
export function measurements(observations, code) {
  const points = [];
  for (const o of observations) {
    const time = Date.parse(o.effectiveDateTime || o.effectiveInstant || o.effectivePeriod?.start || o.issued || "");
    if (Number.isNaN(time)) continue;
    const own = (o.code?.coding || []).some((c) => c.system === LOINC && c.code === code);
    const quantity = own
      ? o.valueQuantity ?? (o.valueInteger !== undefined ? { value: o.valueInteger } : null)
      : (o.component || []).find((c) => (c.code?.coding || []).some((x) => x.system === LOINC && x.code === code))?.valueQuantity;
    if (quantity && typeof quantity.value === "number") points.push({ time, value: quantity.value, unit: quantity.unit });
  }
  return points.sort((a, b) => a.time - b.time);
}

function targetOf(target) {
  if (target.detailRange) return { low: target.detailRange.low?.value ?? null, high: target.detailRange.high?.value ?? null };
  const q = target.detailQuantity;
  if (!q) return null;
  if (q.comparator === "<" || q.comparator === "<=") return { low: null, high: q.value };
  if (q.comparator === ">" || q.comparator === ">=") return { low: q.value, high: null };
  return { low: q.value, high: q.value };
}

export function goalList(goals, observations) {
  if (!goals.length) return emptyNote("No goals yet.");
  return h(
    "ul",
    { class: "goals" },
    goals.map((g) => {
      const status = codeText(g.achievementStatus) || g.lifecycleStatus;
      const charts = (g.target || [])
        .filter((t) => t.measure)
        .map((t) => {
          const code = codeOf(t.measure, LOINC);
          const points = code ? measurements(observations, code) : [];
          const unit = t.detailQuantity?.unit || points[0]?.unit || "";
          const last = points.at(-1);
          return h(
            "figure",
            { class: "goal-chart" },
            goalChart(points, targetOf(t), { label: codeText(t.measure), unit }),
            h("figcaption", {}, `${codeText(t.measure)}: `, last ? `latest ${last.value} ${unit} (${new Date(last.time).toISOString().slice(0, 10)})` : "no measurement yet"),
          );
        });
      return h(
        "li",
        { class: "goal" },
        h("div", {}, h("strong", {}, codeText(g.description)), " ", h("span", { class: `badge goal-${(status || "").replace(/\s+/g, "-")}` }, status || "no status")),
        (g.target || [])[0]?.dueDate ? h("div", { class: "hint" }, `target date ${g.target[0].dueDate}`) : null,
        charts,
      );
    }),
  );
}

/** The practitioner's patients (their care teams), and a name search over all patients. */
export async function patientsScreen(ctx) {
  const { fhir } = ctx;
  const teams = ctx.me
    ? await fhir.search("CareTeam", { participant: ctx.me, status: "active", _include: "CareTeam:subject", _count: "1000" })
    : { matches: [], included: new Map() };
  const mine = new Map();
  for (const t of teams.matches) {
    const p = teams.included.get(t.subject?.reference);
    if (p) mine.set(p.id, p);
  }
  const results = h("div");
  const list = (patients, caption) =>
    patients.length
      ? h("ul", { class: "patients" }, patients.sort((a, b) => humanName(a).localeCompare(humanName(b))).map((p) => h("li", {}, h("a", { href: `#/patient/${p.id}` }, humanName(p)), " ", h("span", { class: "hint" }, [p.gender, p.birthDate].filter(Boolean).join(", ")))))
      : emptyNote(caption);
  results.replaceChildren(list([...mine.values()], "No patients on your care teams yet."));
  const name = h("input", { type: "search", autocomplete: "off" });
  const form = h(
    "form",
    {
      role: "search",
      "aria-label": "Find a patient",
      class: "filters",
      onsubmit: async (e) => {
        e.preventDefault();
        const found = await fhir.search("Patient", { name: name.value.trim(), _count: "50" }, { max: 50 });
        results.replaceChildren(h("h2", {}, `Patients named “${name.value.trim()}”`), list(found.matches, "No patient by that name."));
      },
    },
    labelled("Name", name),
    h("button", { type: "submit" }, "Find"),
  );
  show("Patients", form, results);
}
