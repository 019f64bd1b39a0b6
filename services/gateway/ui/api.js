// The JSON API as the dashboard calls it: the session cookie is the credential (the browser
// sends it; scripts cannot read it), and every state-changing request carries the session's
// CSRF token. A 401 means the session ended: back to the sign-in page.

let csrfToken = null;

export function setCsrf(token) {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || "request failed (" + status + ")");
    this.status = status;
    this.body = body;
  }
}

// `ended`: the session was signed out by the farm (expired, or its key revoked); the sign-in
// page says so.
export function toSignIn(ended = false) {
  const next = location.pathname + location.search;
  location.assign("/ui/sign-in?next=" + encodeURIComponent(next) + (ended ? "&ended=1" : ""));
}

// What a request that never reached the farm says (rather than the browser's "Failed to fetch").
export const UNREACHABLE = "the farm is unreachable (the network, or the gateway is down); the page retries";

// Returns {body, headers}; throws ApiError.
export async function request(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const send = () => fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  // A read that failed on the way (the machine's network changed, a laptop switched Wi-Fi) is
  // asked again twice; a change is never sent twice.
  let resp;
  for (let tries = 1; ; tries++) {
    try {
      resp = await send();
      break;
    } catch (e) {
      if (method !== "GET" || tries >= 3) throw new ApiError(0, { error: UNREACHABLE, cause: String(e) });
      await new Promise((r) => setTimeout(r, 300 * tries));
    }
  }
  let parsed = null;
  const type = resp.headers.get("content-type") || "";
  if (type.includes("application/json")) parsed = await resp.json().catch(() => null);
  if (resp.status === 401 && !path.startsWith("/ui/api/sign-in")) {
    // The session route says when a session the browser held has ended (SESSION_ENDED).
    const said = (parsed && parsed.hint) || "";
    toSignIn(!path.startsWith("/ui/api/session") || said.startsWith("your session ended"));
    throw new ApiError(401, parsed);
  }
  if (!resp.ok) throw new ApiError(resp.status, parsed);
  return { body: parsed, headers: resp.headers };
}

export async function get(path) {
  return (await request(path)).body;
}

export async function post(path, body) {
  return (await request(path, { method: "POST", body })).body;
}

// The URL of the next page, from a `Link: <…>; rel="next"` header.
export function nextLink(headers) {
  const link = headers.get("link") || "";
  const m = link.match(/<([^>]+)>;\s*rel="next"/);
  return m ? m[1] : null;
}
