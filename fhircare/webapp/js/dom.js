// Small DOM and FHIR display helpers shared by the screens.

/** h("a", {href: "#"}, "text", child...) -> an element; attrs starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace the main region with a screen, title it and move focus to its heading. */
export function show(title, ...content) {
  const main = document.getElementById("main");
  const parts = content.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
  main.replaceChildren(h("h1", { tabindex: "-1", id: "screen-title" }, title), ...parts);
  document.title = `${title} · fhircare`;
  document.getElementById("screen-title").focus();
}

let announced = null;

/** Say what just happened (a polite live region), and clear it after a while. */
export function announce(message) {
  const status = document.getElementById("status");
  status.textContent = "";
  clearTimeout(announced);
  requestAnimationFrame(() => {
    status.textContent = message;
  });
  announced = setTimeout(() => {
    status.textContent = "";
  }, 10000);
}

/** An error (or a version conflict) shown where it happened, with what to do next. */
export function errorBox(err, { onReload } = {}) {
  const conflict = err.conflict;
  return h(
    "div",
    { class: conflict ? "alert conflict" : "alert error", role: "alert" },
    h("strong", {}, conflict ? "Not saved: someone changed this first. " : "Not saved. "),
    err.message,
    conflict && onReload
      ? h("button", { type: "button", class: "link", onclick: onReload }, "Reload the latest version")
      : null,
  );
}

export function busy(button, promise) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  return promise.finally(() => {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  });
}

export const ref = (r) => `${r.resourceType}/${r.id}`;
export const idOf = (reference) => (reference || "").split("/").pop();

export function humanName(resource) {
  const name = (resource?.name || [])[0];
  if (!name) return resource ? ref(resource) : "unknown";
  if (name.text) return name.text;
  const given = (name.given || []).join(" ");
  const suffix = (name.suffix || []).join(" ");
  return [given, name.family, suffix].filter(Boolean).join(" ");
}

export function codeText(concept) {
  if (!concept) return "";
  if (concept.text) return concept.text;
  const c = (concept.coding || [])[0] || {};
  return c.display || c.code || "";
}

export function hasCode(concept, system, code) {
  const list = Array.isArray(concept) ? concept : [concept];
  return list.some((c) => (c?.coding || []).some((x) => x.system === system && x.code === code));
}

export function codeOf(concept, system) {
  const list = Array.isArray(concept) ? concept : [concept];
  for (const c of list) {
    const hit = (c?.coding || []).find((x) => x.system === system);
    if (hit) return hit.code;
  }
  return null;
}

/** Task due date: restriction.period.end, else executionPeriod.end. */
export function taskDue(task) {
  return task.restriction?.period?.end || task.executionPeriod?.end || null;
}

export function day(value) {
  if (!value) return "—";
  return String(value).slice(0, 10);
}

export function age(birthDate, now = new Date()) {
  if (!birthDate) return null;
  const born = new Date(birthDate);
  let years = now.getUTCFullYear() - born.getUTCFullYear();
  const m = now.getUTCMonth() - born.getUTCMonth();
  if (m < 0 || (m === 0 && now.getUTCDate() < born.getUTCDate())) years -= 1;
  return years;
}

export function nowStamp() {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function labelled(label, control, { hint } = {}) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintEl = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

export function section(title, ...content) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id, class: "card" }, h("h2", { id }, title), ...content);
}

export function emptyNote(text) {
  return h("p", { class: "empty" }, text);
}
