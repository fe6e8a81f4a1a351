// The app's one way to the server: the FHIR REST API (and fhircare's operations), with the
// SMART client (fhirclient) doing the launch and holding the access token.

const FHIR_JSON = "application/fhir+json";

/** A refused request: the HTTP status and the OperationOutcome's diagnostics. */
export class ApiError extends Error {
  constructor(status, message, outcome) {
    super(message);
    this.status = status;
    this.outcome = outcome;
  }
  get conflict() {
    return this.status === 409 || this.status === 412;
  }
}

function outcomeText(body, fallback) {
  const issues = (body && body.issue) || [];
  const text = issues.map((i) => i.diagnostics || i.details?.text || i.code).filter(Boolean);
  return text.join("; ") || fallback;
}

export class Fhir {
  /** client: a fhirclient Client; base: the FHIR base URL (no trailing slash). */
  constructor(client, base) {
    this.client = client;
    this.base = base.replace(/\/+$/, "");
    this.requests = 0; // counted, so that tests and benchmarks can see request storms
  }

  /** The signed-in user as "Practitioner/x", when the launch said (SMART fhirUser). */
  get fhirUser() {
    try {
      const user = this.client.getFhirUser && this.client.getFhirUser();
      return user ? user.replace(/^.*\/(Practitioner|PractitionerRole)\//, "$1/") : null;
    } catch {
      return null;
    }
  }

  /** Absolute URL for a path under the FHIR base ("Task?x=y"), or an absolute URL. */
  url(path) {
    if (/^https?:/.test(path)) return this.sameServer(path);
    return `${this.base}/${path.replace(/^\/+/, "")}`;
  }

  /** A link the server wrote with its own idea of its host: keep our origin for it. */
  sameServer(absolute) {
    const link = new URL(absolute);
    const ours = new URL(this.base);
    if (link.origin !== ours.origin && link.pathname.startsWith(ours.pathname)) {
      return ours.origin + link.pathname + link.search;
    }
    return absolute;
  }

  /** fhircare's care endpoints live beside the FHIR base (/care next to /fhir). */
  careUrl(path) {
    return `${this.base.replace(/\/fhir$/, "")}/care/${path.replace(/^\/+/, "")}`;
  }

  async send(url, { method = "GET", body, ifMatch, contentType = FHIR_JSON } = {}) {
    const headers = { Accept: `${FHIR_JSON}, application/json` };
    if (this.client.refreshIfNeeded && this.client.state.tokenResponse?.access_token) {
      await this.client.refreshIfNeeded();
    }
    const auth = this.client.getAuthorizationHeader && this.client.getAuthorizationHeader();
    if (auth) headers.Authorization = auth;
    if (body !== undefined) headers["Content-Type"] = contentType;
    if (ifMatch) headers["If-Match"] = `W/"${ifMatch}"`;
    this.requests += 1;
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, `The server could not be reached (${err.message})`);
    }
    const text = await response.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    if (!response.ok) {
      const fallback = `${method} answered ${response.status} ${response.statusText}`;
      throw new ApiError(response.status, outcomeText(json, fallback), json);
    }
    return json;
  }

  read(type, id) {
    return this.send(this.url(`${type}/${encodeURIComponent(id)}`));
  }

  /** PUT guarded by the version the user saw (412 when someone else wrote first). */
  update(resource) {
    const { resourceType, id } = resource;
    return this.send(this.url(`${resourceType}/${encodeURIComponent(id)}`), {
      method: "PUT",
      body: resource,
      ifMatch: resource.meta?.versionId,
    });
  }

  create(resource) {
    return this.send(this.url(resource.resourceType), { method: "POST", body: resource });
  }

  /** POST an operation ("PlanDefinition/t2dm/$apply") with query params and/or a body. */
  operation(path, { params = {}, body, ifMatch } = {}) {
    const qs = new URLSearchParams(params).toString();
    return this.send(this.url(path + (qs ? `?${qs}` : "")), {
      method: "POST",
      body: body ?? { resourceType: "Parameters" },
      ifMatch,
    });
  }

  care(path, { method = "POST", body, params, ifMatch } = {}) {
    const qs = params ? `?${new URLSearchParams(params)}` : "";
    return this.send(this.careUrl(path) + qs, {
      method,
      body,
      ifMatch,
      contentType: "application/json",
    });
  }

  /**
   * Search, following the server's next links (up to `max` matches). Returns
   * { matches, included, total }: `included` maps "Type/id" to each resource of the answer.
   */
  async search(type, params = {}, { max = 5000 } = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      for (const v of Array.isArray(value) ? value : [value]) query.append(key, v);
    }
    let url = this.url(`${type}?${query}`);
    const matches = [];
    const included = new Map();
    let total;
    while (url && matches.length < max) {
      const bundle = await this.send(url);
      total ??= bundle.total;
      for (const entry of bundle.entry || []) {
        const r = entry.resource;
        if (!r) continue;
        included.set(`${r.resourceType}/${r.id}`, r);
        if ((entry.search?.mode || "match") === "match" && r.resourceType === type) {
          matches.push(r);
        }
      }
      const next = (bundle.link || []).find((l) => l.relation === "next");
      url = next ? this.sameServer(next.url) : null;
    }
    return { matches, included, total: total ?? matches.length };
  }
}

async function config() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) return await response.json();
  } catch {
    // served by something else than fhircare: a SMART launch with the URL's parameters
  }
  return { fhirPath: null, auth: "smart", clientId: "fhircare-app", scope: "openid fhirUser user/*.cruds" };
}

/**
 * Connect: finish a SMART launch that came back with a code (or is in this tab's session),
 * start a standalone launch against `?iss=`, or use the server that served the app
 * (without a token when it asks for none).
 */
export async function connect() {
  const FHIR = window.FHIR;
  const params = new URLSearchParams(location.search);
  const conf = await config();
  const redirectUri = location.pathname.replace(/[^/]*$/, "") + "index.html";
  if ((params.has("code") && params.has("state")) || sessionStorage.getItem("SMART_KEY")) {
    const client = await FHIR.oauth2.ready();
    if (params.has("code")) history.replaceState(null, "", redirectUri + location.hash);
    return new Fhir(client, client.state.serverUrl);
  }
  const iss = params.get("iss");
  const base = iss || new URL(conf.fhirPath || "/fhir", location.origin).href;
  if (iss || conf.auth === "smart") {
    await FHIR.oauth2.authorize({
      iss: base,
      clientId: params.get("client_id") || conf.clientId,
      scope: conf.scope,
      redirectUri,
    });
    return new Promise(() => {}); // the browser is leaving for the authorization server
  }
  return new Fhir(FHIR.client({ serverUrl: base }), base);
}
