// Boot: connect to the FHIR server, find who is working, route between the screens.
import { connect } from "./fhir.js";
import { h, humanName, show, errorBox } from "./dom.js";
import { worklistScreen } from "./worklist.js";
import { patientScreen, patientsScreen } from "./patient.js";
import { carePlanScreen } from "./careplan.js";
import { assessmentScreen } from "./assessment.js";
import { dischargeScreen } from "./discharge.js";
import { referralsScreen } from "./referrals.js";

const ME_KEY = "fhircare.practitioner";

const routes = [
  [/^#\/worklist$/, (ctx) => worklistScreen(ctx)],
  [/^#\/patients$/, (ctx) => patientsScreen(ctx)],
  [/^#\/patient\/([^/]+)$/, (ctx, id) => patientScreen(ctx, id)],
  [/^#\/patient\/([^/]+)\/plan$/, (ctx, id) => carePlanScreen(ctx, id)],
  [/^#\/patient\/([^/]+)\/assess(?:\/([^/]+))?$/, (ctx, id, q) => assessmentScreen(ctx, id, q)],
  [/^#\/patient\/([^/]+)\/referrals$/, (ctx, id) => referralsScreen(ctx, id)],
  [/^#\/discharge\/([^/]+)$/, (ctx, id) => dischargeScreen(ctx, id)],
];

async function route(ctx) {
  const hash = location.hash || "#/worklist";
  for (const link of document.querySelectorAll("#nav a")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, screen] of routes) {
    const m = hash.match(pattern);
    if (m) {
      try {
        await screen(ctx, ...m.slice(1).map((p) => p && decodeURIComponent(p)));
      } catch (err) {
        show("Something went wrong", errorBox(err));
      }
      document.body.dataset.ready = hash; // browser tests wait on this
      return;
    }
  }
  location.hash = "#/worklist";
}

/** Who is working: the SMART fhirUser, else the practitioner chosen on this device. */
async function whoAmI(fhir) {
  const { matches } = await fhir.search("Practitioner", { _count: "200" }, { max: 1000 });
  const practitioners = matches.sort((a, b) => humanName(a).localeCompare(humanName(b)));
  const fromUrl = new URLSearchParams(location.search).get("practitioner");
  let me = fhir.fhirUser || fromUrl || localStorage.getItem(ME_KEY);
  if (!me || !practitioners.some((p) => `Practitioner/${p.id}` === me)) {
    me = practitioners.length ? `Practitioner/${practitioners[0].id}` : null;
  }
  return { me, practitioners };
}

function renderWho(ctx) {
  const slot = document.getElementById("whoami");
  if (ctx.fhir.fhirUser) {
    slot.replaceChildren("Signed in as ", h("strong", {}, ctx.meName));
    return;
  }
  const select = h(
    "select",
    {
      id: "me",
      onchange: (e) => {
        ctx.me = e.target.value;
        localStorage.setItem(ME_KEY, ctx.me);
        ctx.meName = humanName(ctx.practitioners.find((p) => `Practitioner/${p.id}` === ctx.me));
        route(ctx);
      },
    },
    ctx.practitioners.map((p) =>
      h("option", { value: `Practitioner/${p.id}`, selected: `Practitioner/${p.id}` === ctx.me }, humanName(p)),
    ),
  );
  slot.replaceChildren(h("label", { for: "me" }, "Working as "), select);
}

async function boot() {
  const fhir = await connect();
  const { me, practitioners } = await whoAmI(fhir);
  const ctx = {
    fhir,
    me,
    practitioners,
    meName: humanName(practitioners.find((p) => `Practitioner/${p.id}` === me)),
    route: () => route(ctx),
  };
  window.fhircareApp = ctx; // for the browser tests' request counts
  renderWho(ctx);
  window.addEventListener("hashchange", () => route(ctx));
  await route(ctx);
}

boot().catch((err) => {
  show("fhircare could not start", errorBox(err));
  document.body.dataset.ready = "error";
});
