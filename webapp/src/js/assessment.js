// Assessment: a shipped Questionnaire rendered by LHC-Forms, saved as a completed
// QuestionnaireResponse; what the server derives from it (scores, Conditions, referrals)
// is shown afterwards.
import { announce, busy, codeText, emptyNote, errorBox, h, humanName, nowStamp, section, show } from "./dom.js";
import { patientHeader, patientNav } from "./patient.js";

let lformsLoading = null;

function script(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(el);
  });
}

/** LHC-Forms, loaded the first time an assessment is opened (it is the app's largest part). */
function loadLForms() {
  lformsLoading ??= (async () => {
    // before the app's own styles, which win where both style the same element
    const css = h("link", { rel: "stylesheet", href: "vendor/lforms/styles.css" });
    document.head.insertBefore(css, document.querySelector('link[href="app.css"]'));
    await script("vendor/lforms/lib/zone.min.js");
    await script("vendor/lforms/lhc-forms.js");
    await script("vendor/lforms/fhir/R4/lformsFHIR.min.js");
    return window.LForms;
  })();
  return lformsLoading;
}

export async function assessmentScreen(ctx, id, questionnaireId) {
  const { fhir } = ctx;
  const [patient, questionnaires] = await Promise.all([
    fhir.read("Patient", id),
    fhir.search("Questionnaire", { status: "active", _count: "100" }),
  ]);
  const choices = h(
    "ul",
    { class: "choices" },
    questionnaires.matches
      .sort((a, b) => (a.title || a.id).localeCompare(b.title || b.id))
      .map((q) =>
        h("li", {}, h("a", { href: `#/patient/${id}/assess/${q.id}`, "aria-current": q.id === questionnaireId ? "page" : undefined }, q.title || q.name || q.id)),
      ),
  );
  if (!questionnaireId) {
    show(`Assessment · ${humanName(patient)}`, patientHeader(patient), patientNav(id, "Assessment"), section("Choose an instrument", choices));
    return;
  }
  const [questionnaire, LForms] = await Promise.all([fhir.read("Questionnaire", questionnaireId), loadLForms()]);
  const formHost = h("div", { class: "lforms-host", id: "lforms-host" });
  const results = h("div", { id: "assessment-results" });
  const message = h("div");
  const save = h("button", { type: "button", class: "primary" }, "Save as completed");
  save.addEventListener("click", async () => {
    message.replaceChildren();
    try {
      const written = await busy(save, saveResponse(ctx, LForms, formHost, questionnaire, id));
      results.replaceChildren(derivedSection(written));
      announce(`${questionnaire.title || "Assessment"} saved. ${summary(written)}`);
      results.querySelector("h2")?.focus();
    } catch (err) {
      message.replaceChildren(errorBox(err));
    }
  });
  show(
    `${questionnaire.title || "Assessment"} · ${humanName(patient)}`,
    patientHeader(patient),
    patientNav(id, "Assessment"),
    h("details", {}, h("summary", {}, "Other instruments"), choices),
    formHost,
    h("div", { class: "actions" }, save),
    message,
    results,
  );
  await LForms.Util.addFormToPage(structuredClone(questionnaire), formHost, { prepopulate: false });
  danglingControls(formHost);
}

/** LHC-Forms points aria-controls at popovers it renders only when opened: drop the
 * attribute while its target is absent (an assistive technology would follow it to nothing). */
function danglingControls(host) {
  for (const el of host.querySelectorAll("[aria-controls]")) {
    if (!document.getElementById(el.getAttribute("aria-controls"))) el.removeAttribute("aria-controls");
  }
}

async function saveResponse(ctx, LForms, host, questionnaire, patientId) {
  const qr = LForms.Util.getFormFHIRData("QuestionnaireResponse", "R4", host);
  delete qr.id;
  delete qr.meta;
  qr.status = "completed";
  qr.questionnaire = questionnaire.url || `Questionnaire/${questionnaire.id}`;
  qr.subject = { reference: `Patient/${patientId}` };
  if (ctx.me) qr.author = { reference: ctx.me };
  qr.authored = nowStamp();
  if (!(qr.item || []).length) {
    throw Object.assign(new Error("Answer at least one question before saving."), { status: 0 });
  }
  const saved = await ctx.fhir.create(qr);
  // the server scores a completed response as it arrives; $extract answers what that wrote
  const bundle = await ctx.fhir.operation(`QuestionnaireResponse/${saved.id}/$extract`);
  return { response: saved, derived: (bundle.entry || []).map((e) => e.resource).filter(Boolean) };
}

function scoreText(o) {
  const value = o.valueInteger ?? o.valueQuantity?.value ?? codeText(o.valueCodeableConcept);
  const interpretation = (o.interpretation || []).map(codeText).filter(Boolean).join(", ");
  return `${codeText(o.code)}: ${value ?? "—"}${interpretation ? ` (${interpretation})` : ""}`;
}

function summary({ derived }) {
  const scores = derived.filter((r) => r.resourceType === "Observation").map(scoreText);
  return scores.join("; ");
}

function derivedSection({ response, derived }) {
  const by = (type) => derived.filter((r) => r.resourceType === type);
  const list = (items, text) => (items.length ? h("ul", {}, items.map((r) => h("li", {}, text(r)))) : null);
  const content = [
    list(by("Observation"), (o) => h("span", { class: "score" }, scoreText(o))),
    list(by("Condition"), (c) => `Condition: ${codeText(c.code)}`),
    list(by("Goal"), (g) => `Proposed goal: ${codeText(g.description)}`),
    list(by("ServiceRequest"), (s) => `Referral: ${codeText(s.code)} (${s.status})`),
    list(by("Task"), (t) => `Task: ${t.description || codeText(t.code)} (${t.priority || "routine"})`),
  ].filter(Boolean);
  return h(
    "section",
    { class: "card", "aria-labelledby": "derived-title" },
    h("h2", { id: "derived-title", tabindex: "-1" }, "Saved: what it shows"),
    h("p", { class: "meta" }, `QuestionnaireResponse/${response.id}`),
    content.length ? content : emptyNote("Nothing was derived from these answers."),
  );
}
