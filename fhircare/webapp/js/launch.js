// SMART EHR launch: the EHR opens launch.html?iss=...&launch=...; fhirclient reads both.
async function launch() {
  let conf = { clientId: "fhircare-app", scope: "openid fhirUser user/*.cruds" };
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) conf = await response.json();
  } catch {
    // served elsewhere: the defaults
  }
  const params = new URLSearchParams(location.search);
  await window.FHIR.oauth2.authorize({
    clientId: params.get("client_id") || conf.clientId,
    scope: `launch ${conf.scope}`,
    redirectUri: "index.html",
  });
}

launch().catch((err) => {
  document.querySelector("main").textContent = `The launch failed: ${err.message}`;
});
