// Worklist: the care manager's open Tasks, overdue first, each with why it is there;
// filter by patient, kind and due date; complete, reassign or move a Task in place.
import {
  announce, busy, day, emptyNote, errorBox, h, humanName, idOf, labelled, show, taskDue,
} from "./dom.js";
import { OPEN, isFollowUpCall, kindOf, nextStatuses, withStatus } from "./tasks.js";

const PRIORITY_RANK = { stat: 0, asap: 1, urgent: 2, routine: 3 };
const DAY_MS = 86400000;
const PAGE_ROWS = 200; // rows drawn at a time; filters always see every task

const CHUNK = 100; // references per OR-list search (keeps URLs far below server limits)

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

/** One search per chunk of references, in parallel, merged. */
async function searchEach(fhir, name, refs, params) {
  const answers = await Promise.all(
    chunks(refs, CHUNK).map((chunk) => fhir.search("Task", { [name]: chunk.join(","), ...params })),
  );
  return {
    matches: answers.flatMap((a) => a.matches),
    included: new Map(answers.flatMap((a) => [...a.included])),
  };
}

/**
 * The worklist from FHIR searches: Tasks owned by the practitioner; then, from their active
 * care teams, Tasks owned by one of those teams and unassigned Tasks of the teams' patients
 * (OR-lists of 100 references a search). Each search brings its Patients (_include) and
 * pages by the server's next links: a panel of 500 patients takes about a dozen requests,
 * never one per task or patient.
 */
export async function loadWorklist(fhir, me) {
  const common = { status: OPEN.join(","), _include: "Task:patient", _count: "1000" };
  const teamsFound = fhir.search("CareTeam", {
    participant: me, status: "active", _elements: "subject,name", _count: "1000",
  });
  const teamName = new Map();
  const teamOf = new Map();
  const fromTeams = teamsFound.then((teams) => {
    for (const t of teams.matches) {
      teamName.set(`CareTeam/${t.id}`, t.name || "care team");
      const subject = t.subject?.reference;
      if (subject && !teamOf.has(subject)) teamOf.set(subject, t.name || "care team");
    }
    return Promise.all([
      searchEach(fhir, "owner", [...teamName.keys()], common),
      searchEach(fhir, "patient", [...teamOf.keys()], { "owner:missing": "true", ...common }),
    ]);
  });
  // the practitioner's own Tasks page in parallel with the team searches
  const [mine, [teamOwned, unassigned]] = await Promise.all([
    fhir.search("Task", { owner: me, ...common }),
    fromTeams,
  ]);
  const patients = new Map([...mine.included, ...teamOwned.included, ...unassigned.included]);
  const items = new Map();
  for (const task of mine.matches) items.set(task.id, { task, why: "assigned to you" });
  for (const task of teamOwned.matches) {
    const owner = task.owner?.reference || "";
    if (teamName.has(owner) && !items.has(task.id)) {
      items.set(task.id, { task, why: `assigned to your care team (${teamName.get(owner)})` });
    }
  }
  for (const task of unassigned.matches) {
    const patient = task.for?.reference;
    if (teamOf.has(patient) && !task.owner && !items.has(task.id)) {
      items.set(task.id, { task, why: `unassigned task for your patient (${teamOf.get(patient)})` });
    }
  }
  const now = Date.now();
  const list = [...items.values()].map(({ task, why }) => describe(task, why, patients, now));
  list.sort(
    (a, b) =>
      b.overdue - a.overdue ||
      (a.due === null) - (b.due === null) ||
      (a.dueTime ?? 0) - (b.dueTime ?? 0) ||
      (PRIORITY_RANK[a.task.priority] ?? 3) - (PRIORITY_RANK[b.task.priority] ?? 3) ||
      a.task.id.localeCompare(b.task.id),
  );
  return list;
}

function describe(task, why, patients, now) {
  const due = taskDue(task);
  const dueTime = due ? Date.parse(due) : null;
  const overdue = dueTime !== null && dueTime < now;
  const reasons = [why];
  if (overdue) {
    const days = Math.floor((now - dueTime) / DAY_MS);
    reasons.unshift(`overdue since ${day(due)}${days ? ` (${days} days)` : ""}`);
  } else if (due) {
    const days = Math.floor((dueTime - now) / DAY_MS);
    reasons.push(days === 0 ? "due today" : `due in ${days} days`);
  }
  if (["stat", "asap", "urgent"].includes(task.priority)) reasons.push(`priority ${task.priority}`);
  for (const reason of task.reasonCode ? [task.reasonCode] : []) {
    if (reason.text) reasons.push(reason.text);
  }
  const patientRef = task.for?.reference;
  return {
    task,
    due,
    dueTime,
    overdue,
    reasons,
    patientRef,
    patient: patients.get(patientRef),
    title: task.description || task.code?.text || "Task",
    kind: kindOf(task),
  };
}

export async function worklistScreen(ctx) {
  if (!ctx.me) {
    show("Worklist", emptyNote("No practitioner is known to this server yet."));
    return;
  }
  const started = performance.now();
  const items = await loadWorklist(ctx.fhir, ctx.me);
  const loadedMs = Math.round(performance.now() - started);

  const patientFilter = h("input", { type: "search", autocomplete: "off" });
  const kinds = [...new Set(items.map((i) => i.kind))].sort();
  const kindFilter = h("select", {}, h("option", { value: "" }, "All kinds"), kinds.map((k) => h("option", { value: k }, k)));
  const dueFilter = h("input", { type: "date" });
  const count = h("p", { class: "count", "aria-live": "polite" });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "worklist" },
    h("caption", {}, `Open tasks for ${ctx.meName}, most pressing first`),
    h("thead", {}, h("tr", {}, ["Due", "Patient", "Task", "Why it is here", "Status", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
    body,
  );

  let limit = PAGE_ROWS;
  const more = h("button", { type: "button", class: "more", onclick: () => { limit += PAGE_ROWS; render(); } });
  const render = () => {
    const who = patientFilter.value.trim().toLowerCase();
    const kind = kindFilter.value;
    const before = dueFilter.value ? Date.parse(`${dueFilter.value}T23:59:59Z`) : null;
    const shown = items.filter(
      (i) =>
        (!who || humanName(i.patient).toLowerCase().includes(who)) &&
        (!kind || i.kind === kind) &&
        (before === null || (i.dueTime !== null && i.dueTime <= before)),
    );
    body.replaceChildren(...shown.slice(0, limit).flatMap((item) => row(ctx, item, render, items)));
    count.textContent = `${shown.length} of ${items.length} open tasks`
      + (shown.length > limit ? ` (the first ${limit} shown)` : "");
    more.hidden = shown.length <= limit;
    more.textContent = `Show ${Math.min(PAGE_ROWS, shown.length - limit)} more`;
  };
  for (const control of [patientFilter, kindFilter, dueFilter]) {
    control.addEventListener("input", () => {
      limit = PAGE_ROWS;
      render();
    });
  }
  render();

  show(
    "Worklist",
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the worklist", onsubmit: (e) => e.preventDefault() },
      labelled("Patient", patientFilter),
      labelled("Kind", kindFilter),
      labelled("Due on or before", dueFilter),
    ),
    count,
    items.length ? h("div", { class: "table-wrap" }, table, more) : emptyNote("Nothing open: no tasks are waiting for you."),
    h("p", { class: "meta", id: "load-time" }, `Loaded in ${loadedMs} ms`),
  );
}

function row(ctx, item, rerender, items) {
  const { task } = item;
  const panel = h("td", { colspan: "6" });
  const panelRow = h("tr", { class: "panel", hidden: true }, panel);
  const patientCell = item.patientRef
    ? h("a", { href: `#/patient/${idOf(item.patientRef)}` }, humanName(item.patient))
    : "—";
  const toggle = (label, build) =>
    h("button", {
      type: "button",
      "aria-expanded": "false",
      onclick: (e) => {
        const open = e.currentTarget.getAttribute("aria-expanded") === "true";
        for (const b of e.currentTarget.parentElement.querySelectorAll("button[aria-expanded]")) {
          b.setAttribute("aria-expanded", "false");
        }
        if (open) {
          panelRow.hidden = true;
          return;
        }
        e.currentTarget.setAttribute("aria-expanded", "true");
        panel.replaceChildren(build());
        panelRow.hidden = false;
        panel.querySelector("textarea, select, input")?.focus();
      },
    }, label);

  const done = (updated, message) => {
    const index = items.indexOf(item);
    if (updated && OPEN.includes(updated.status)) {
      item.task = updated;
      items[index] = { ...item, task: updated };
    } else if (index >= 0) {
      items.splice(index, 1);
    }
    announce(message);
    rerender();
  };

  const actions = h("td", { class: "actions" });
  if (isFollowUpCall(task)) actions.append(toggle("Complete call", () => callForm(ctx, item, done)));
  const review = reviewLink(task);
  if (review) actions.append(review);
  actions.append(toggle("Change status", () => statusForm(ctx, item, done)));
  actions.append(toggle("Reassign", () => reassignForm(ctx, item, done)));

  const tr = h(
    "tr",
    { class: item.overdue ? "overdue" : "", dataset: { task: task.id } },
    h("td", {}, item.overdue ? h("span", { class: "badge overdue" }, "Overdue") : null, " ", day(item.due)),
    h("td", {}, patientCell),
    h("th", { scope: "row" }, item.title, h("div", { class: "kind" }, item.kind)),
    h("td", { class: "why" }, item.reasons.join("; ")),
    h("td", {}, task.status),
    actions,
  );
  return [tr, panelRow];
}

function reviewLink(task) {
  const focus = task.focus?.reference || "";
  if (focus.startsWith("DetectedIssue/") && task.encounter?.reference) {
    return h("a", { class: "button", href: `#/discharge/${idOf(task.encounter.reference)}` }, "Review discharge");
  }
  return null;
}

function callForm(ctx, item, done) {
  const summary = h("textarea", { rows: "3", required: true });
  const topics = h("input", { type: "text" });
  const message = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Save call and complete");
  return h(
    "form",
    {
      class: "inline-form",
      "aria-label": `Document the call: ${item.title}`,
      onsubmit: async (e) => {
        e.preventDefault();
        if (!summary.value.trim()) {
          message.replaceChildren(h("p", { class: "alert error", role: "alert" }, "Write what was discussed."));
          return;
        }
        try {
          const bundle = await busy(
            submit,
            ctx.fhir.care(`Task/${item.task.id}/$document-call`, {
              body: {
                summary: summary.value.trim(),
                topics: topics.value.split(",").map((t) => t.trim()).filter(Boolean),
              },
            }),
          );
          const task = (bundle.entry || []).map((x) => x.resource).find((r) => r.resourceType === "Task");
          done(task, `Call documented: ${item.title} is completed.`);
        } catch (err) {
          message.replaceChildren(errorBox(err, { onReload: () => ctx.route() }));
        }
      },
    },
    labelled("What was discussed", summary),
    labelled("Topics (comma-separated)", topics),
    submit,
    message,
  );
}

function statusForm(ctx, item, done) {
  const select = h("select", {}, nextStatuses(item.task.status).map((s) => h("option", { value: s }, s)));
  const reason = h("input", { type: "text" });
  const message = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Apply");
  return h(
    "form",
    {
      class: "inline-form",
      "aria-label": `Change the status of: ${item.title}`,
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const updated = await busy(
            submit,
            ctx.fhir.update(withStatus(item.task, select.value, reason.value.trim() || undefined)),
          );
          done(updated, `${item.title}: ${updated.status}.`);
        } catch (err) {
          message.replaceChildren(errorBox(err, { onReload: () => ctx.route() }));
        }
      },
    },
    labelled(`New status (now ${item.task.status})`, select),
    labelled("Reason (optional)", reason),
    submit,
    message,
  );
}

function reassignForm(ctx, item, done) {
  const current = item.task.owner?.reference;
  const select = h(
    "select",
    {},
    ctx.practitioners.map((p) =>
      h("option", { value: `Practitioner/${p.id}`, selected: `Practitioner/${p.id}` === current }, humanName(p)),
    ),
  );
  const message = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Reassign");
  return h(
    "form",
    {
      class: "inline-form",
      "aria-label": `Reassign: ${item.title}`,
      onsubmit: async (e) => {
        e.preventDefault();
        const task = structuredClone(item.task);
        task.owner = { reference: select.value };
        try {
          const updated = await busy(submit, ctx.fhir.update(task));
          const name = select.selectedOptions[0].textContent;
          if (select.value === ctx.me) done(updated, `${item.title} is yours.`);
          else done({ ...updated, status: "moved" }, `${item.title} reassigned to ${name}.`);
        } catch (err) {
          message.replaceChildren(errorBox(err, { onReload: () => ctx.route() }));
        }
      },
    },
    labelled("Assign to", select),
    submit,
    message,
  );
}
