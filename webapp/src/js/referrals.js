// Referrals: each ServiceRequest with its fulfilment Task; a rejected or failed referral
// shows the "propose an alternative" Task the server opened, to take on in place.
import { announce, busy, codeText, day, emptyNote, errorBox, h, humanName, section, show } from "./dom.js";
import { patientHeader, patientNav } from "./patient.js";
import { CARE_TASK, nextStatuses, withStatus } from "./tasks.js";

export async function referralsScreen(ctx, id) {
  const { fhir } = ctx;
  const pref = `Patient/${id}`;
  const [patient, requests, alternatives] = await Promise.all([
    fhir.read("Patient", id),
    fhir.search("ServiceRequest", { patient: pref, _revinclude: "Task:focus", _include: "ServiceRequest:performer", _count: "200" }),
    fhir.search("Task", { patient: pref, code: `${CARE_TASK}|propose-alternative`, _count: "200" }),
  ]);
  const alternativeOf = new Map(alternatives.matches.map((t) => [t.focus?.reference, t]));
  const rerender = () => referralsScreen(ctx, id);
  const rows = requests.matches.map((sr) => {
    const tasks = [...requests.included.values()].filter((r) => r.resourceType === "Task" && r.focus?.reference === `ServiceRequest/${sr.id}`);
    const task = tasks[0];
    const performer = (sr.performer || []).map((p) => requests.included.get(p.reference)?.name || p.display || p.reference).join(", ");
    const alternative = task ? alternativeOf.get(`Task/${task.id}`) : null;
    return h(
      "tr",
      { class: task && ["rejected", "failed"].includes(task.status) ? "rejected" : "" },
      h("th", { scope: "row" }, codeText(sr.code) || "Referral", h("div", { class: "hint" }, `requested ${day(sr.authoredOn)}`)),
      h("td", {}, performer || "—"),
      h("td", {}, sr.status),
      h("td", {}, task ? task.status : "no task", task?.statusReason ? h("div", { class: "hint" }, codeText(task.statusReason)) : null),
      h("td", {}, alternative ? alternativeCell(ctx, alternative, rerender) : "—"),
    );
  });
  show(
    `Referrals · ${humanName(patient)}`,
    patientHeader(patient),
    patientNav(id, "Referrals"),
    section(
      "Referrals",
      rows.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              {},
              h("caption", { class: "visually-hidden" }, "Referrals and their fulfilment tasks"),
              h("thead", {}, h("tr", {}, ["Referral", "To", "Request", "Task", "Alternative"].map((c) => h("th", { scope: "col" }, c)))),
              h("tbody", {}, rows),
            ),
          )
        : emptyNote("No referrals."),
    ),
  );
}

function alternativeCell(ctx, task, rerender) {
  const message = h("div");
  const next = nextStatuses(task.status).filter((s) => s !== "entered-in-error");
  const take = next.includes("accepted") ? "accepted" : next[0];
  return h(
    "div",
    {},
    h("div", {}, task.description || codeText(task.code), ` (${task.status})`),
    take
      ? h(
          "button",
          {
            type: "button",
            onclick: async (e) => {
              try {
                await busy(e.currentTarget, ctx.fhir.update(withStatus(task, take)));
                await rerender();
                announce(`Alternative task ${take}.`);
              } catch (err) {
                message.replaceChildren(errorBox(err, { onReload: rerender }));
              }
            },
          },
          take === "accepted" ? "Take it on" : `Mark ${take}`,
        )
      : null,
    message,
  );
}
