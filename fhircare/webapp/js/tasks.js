// The FHIR Task state machine (R4 task.html), as the server enforces it, and Task writes.

export const TRANSITIONS = {
  draft: ["requested", "ready", "cancelled"],
  requested: ["received", "accepted", "rejected", "ready", "cancelled"],
  received: ["accepted", "rejected", "cancelled"],
  accepted: ["ready", "in-progress", "cancelled"],
  ready: ["in-progress", "cancelled", "failed"],
  "in-progress": ["on-hold", "completed", "failed", "cancelled"],
  "on-hold": ["in-progress", "failed", "cancelled"],
};
export const OPEN = ["requested", "received", "accepted", "ready", "in-progress", "on-hold"];
const TERMINAL = ["rejected", "cancelled", "failed", "completed", "entered-in-error"];
export const CARE_TASK = "http://fhircare.org/fhir/CodeSystem/care-task";
export const TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code";

export function nextStatuses(status) {
  return [...(TRANSITIONS[status] || []), "entered-in-error"];
}

/** A copy of the Task in a new status, stamped as the server's own transitions stamp it. */
export function withStatus(task, status, reason, now = new Date()) {
  const stamp = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const out = structuredClone(task);
  out.status = status;
  out.lastModified = stamp;
  if (reason) out.statusReason = { text: reason };
  const period = { ...(out.executionPeriod || {}) };
  if (status === "in-progress" && !period.start) period.start = stamp;
  if (TERMINAL.includes(status)) {
    period.start ??= stamp;
    period.end = stamp;
  }
  if (Object.keys(period).length) out.executionPeriod = period;
  return out;
}

export function isFollowUpCall(task) {
  return (task.code?.coding || []).some((c) => c.system === CARE_TASK && c.code === "follow-up-call");
}

export function kindOf(task) {
  const coding = (task.code?.coding || [])[0];
  return coding ? coding.display || coding.code : task.code?.text || "Task";
}
