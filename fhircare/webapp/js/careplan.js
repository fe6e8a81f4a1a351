// Care plan: goals and activities, apply a template ($apply), revise with a reason
// (If-Match: a conflict is shown and the draft kept), record education delivered.
import {
  announce, busy, codeOf, codeText, day, emptyNote, errorBox, h, hasCode, humanName, labelled, section,
  show,
} from "./dom.js";
import { patientHeader, patientNav } from "./patient.js";

const SNOMED = "http://snomed.info/sct";
const EDUCATION = "409073007";
const PROGRAM_KIND = "http://fhircare.org/fhir/CodeSystem/program-kind";
const drafts = new Map(); // plan id -> revision draft, kept across a reload after a conflict

export async function carePlanScreen(ctx, id) {
  const { fhir } = ctx;
  const pref = `Patient/${id}`;
  const [patient, plans, templates] = await Promise.all([
    fhir.read("Patient", id),
    fhir.search("CarePlan", {
      patient: pref,
      status: "active,on-hold,draft",
      _include: ["CarePlan:goal", "CarePlan:activity-reference"],
      _count: "50",
    }),
    fhir.search("PlanDefinition", { status: "active", _count: "100" }),
  ]);
  const rerender = () => carePlanScreen(ctx, id);
  show(
    `Care plan · ${humanName(patient)}`,
    patientHeader(patient),
    patientNav(id, "Care plan"),
    plans.matches.length
      ? plans.matches.map((plan) => planCard(ctx, plan, plans.included, rerender))
      : emptyNote("No active care plan yet: apply a template below."),
    applyForm(ctx, pref, templates.matches, rerender),
  );
}

function planCard(ctx, plan, included, rerender) {
  const kind = codeOf(plan.category || [], PROGRAM_KIND);
  const goals = (plan.goal || []).map((g) => included.get(g.reference)).filter(Boolean);
  const rows = (plan.activity || []).map((activity, index) => {
    const task = activity.reference ? included.get(activity.reference.reference) : null;
    const detail = activity.detail || {};
    const title = detail.description || task?.description || codeText(detail.code) || activity.id || `Activity ${index + 1}`;
    const status = task ? `${task.status} (task)` : detail.status || "—";
    const isEducation = hasCode(detail.code, SNOMED, EDUCATION) && detail.status !== "completed";
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, title),
      h("td", {}, status),
      h("td", {}, isEducation ? educationButton(ctx, plan, index, title, rerender) : null),
    );
  });
  return section(
    plan.title || "Care plan",
    h(
      "p",
      { class: "meta" },
      `Status ${plan.status}`,
      kind ? ` · ${kind === "episode" ? "case management (episode)" : "care management (long-term)"}` : "",
      plan.period?.start ? ` · since ${day(plan.period.start)}` : "",
      plan.period?.end ? ` · until ${day(plan.period.end)}` : "",
      ` · version ${plan.meta?.versionId}`,
    ),
    plan.description ? h("p", {}, plan.description) : null,
    h("h3", {}, "Goals"),
    goals.length
      ? h("ul", {}, goals.map((g) => h("li", {}, codeText(g.description), ` — ${codeText(g.achievementStatus) || g.lifecycleStatus}`)))
      : emptyNote("No goals on this plan."),
    h("h3", {}, "Activities"),
    rows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            {},
            h("caption", { class: "visually-hidden" }, `Activities of ${plan.title || "the plan"}`),
            h("thead", {}, h("tr", {}, ["Activity", "Status", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, rows),
          ),
        )
      : emptyNote("No activities."),
    reviseForm(ctx, plan, rerender),
  );
}

function educationButton(ctx, plan, index, title, rerender) {
  const box = h("div", { class: "inline-form", hidden: true });
  const material = h("input", { type: "text", value: title.replace(/\..*$/, "") });
  const url = h("input", { type: "url" });
  const message = h("div");
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h(
    "form",
    {
      "aria-label": `Education delivered: ${title}`,
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await busy(
            save,
            ctx.fhir.care(`CarePlan/${plan.id}/$education-delivered`, {
              body: { activity: index, title: material.value.trim() || title, ...(url.value ? { url: url.value } : {}) },
              ifMatch: plan.meta?.versionId,
            }),
          );
          await rerender();
          announce(`Education recorded: ${title}.`);
        } catch (err) {
          message.replaceChildren(errorBox(err, { onReload: rerender }));
        }
      },
    },
    labelled("Material given", material),
    labelled("Link (optional)", url),
    save,
    message,
  );
  box.append(form);
  return h(
    "div",
    {},
    h("button", {
      type: "button",
      "aria-expanded": "false",
      onclick: (e) => {
        box.hidden = !box.hidden;
        e.currentTarget.setAttribute("aria-expanded", String(!box.hidden));
        if (!box.hidden) material.focus();
      },
    }, "Record education delivered"),
    box,
  );
}

/**
 * Revise with a reason, guarded by the version shown. After a conflict the draft keeps only
 * what the user changed: on the reloaded form their edits stand over the new version and
 * everything else shows what the colleague wrote, so saving again loses neither.
 */
function reviseForm(ctx, plan, rerender) {
  const draft = drafts.get(plan.id) || { edited: {}, note: "", reason: "" };
  const value = (field) => draft.edited[field] ?? plan[field] ?? "";
  const title = h("input", { type: "text", value: value("title") });
  const description = h("textarea", { rows: "3" }, value("description"));
  const status = h(
    "select",
    {},
    ["active", "on-hold", "revoked", "completed"].map((s) => h("option", { value: s, selected: value("status") === s }, s)),
  );
  const note = h("textarea", { rows: "2" }, draft.note);
  const reason = h("input", { type: "text", required: true, value: draft.reason });
  const message = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Save revision");
  const body = h(
    "form",
    {
      class: "revise",
      "aria-label": `Revise ${plan.title || "the plan"}`,
      onsubmit: async (e) => {
        e.preventDefault();
        const edited = {};
        for (const [field, control] of [["title", title], ["description", description], ["status", status]]) {
          const v = control.value.trim();
          if (v !== (plan[field] || "")) edited[field] = v;
        }
        const next = { edited, note: note.value.trim(), reason: reason.value.trim() };
        drafts.set(plan.id, next);
        if (!next.reason) {
          message.replaceChildren(h("p", { class: "alert error", role: "alert" }, "Say why the plan changes."));
          return;
        }
        const changes = {};
        for (const [field, v] of Object.entries(edited)) changes[field] = v || null;
        if (next.note) {
          changes.note = [...(plan.note || []), { text: next.note, time: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"), authorReference: { reference: ctx.me } }];
        }
        if (!Object.keys(changes).length) {
          message.replaceChildren(h("p", { class: "alert error", role: "alert" }, "Nothing changed."));
          return;
        }
        try {
          await busy(
            submit,
            ctx.fhir.care(`CarePlan/${plan.id}/$revise`, {
              body: { author: ctx.me, changes, reason: next.reason },
              ifMatch: plan.meta?.versionId,
            }),
          );
          drafts.delete(plan.id);
          await rerender();
          announce(`${plan.title || "Plan"} revised.`);
        } catch (err) {
          message.replaceChildren(
            errorBox(err, { onReload: rerender }),
            err.conflict ? h("p", { class: "hint" }, "Your revision is kept: reload, check what changed, then save again.") : null,
          );
        }
      },
    },
    labelled("Title", title),
    labelled("Description", description),
    labelled("Status", status),
    labelled("Add a note (optional)", note),
    labelled("Reason for the change", reason),
    submit,
    message,
  );
  return h("details", { class: "revise-box", open: drafts.has(plan.id) || undefined }, h("summary", {}, "Revise this plan"), body);
}

function applyForm(ctx, patientRef, templates, rerender) {
  const select = h(
    "select",
    { required: true },
    templates
      .sort((a, b) => (a.title || a.id).localeCompare(b.title || b.id))
      .map((t) => h("option", { value: t.id }, t.title || t.name || t.id)),
  );
  const kind = h("select", {}, h("option", { value: "long-term" }, "Care management (long-term)"), h("option", { value: "episode" }, "Case management (episode)"));
  const message = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Apply template");
  return section(
    "Apply a template",
    h(
      "form",
      {
        class: "inline-form",
        "aria-label": "Apply a care-plan template",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            const plan = await busy(
              submit,
              ctx.fhir.operation(`PlanDefinition/${select.value}/$apply`, {
                params: { subject: patientRef, practitioner: ctx.me, programKind: kind.value },
              }),
            );
            await rerender();
            announce(`Plan created: ${plan.title || select.selectedOptions[0].textContent}.`);
          } catch (err) {
            message.replaceChildren(errorBox(err));
          }
        },
      },
      labelled("Template", select),
      labelled("Program", kind),
      submit,
      message,
    ),
  );
}
