// The sign-in page: an API key (with the read scope) opens the whole dashboard; a build id and
// its build token open that build's page only. The server sets an HttpOnly session cookie;
// nothing is kept in the page or in browser storage.

import { post } from "./api.js";
import { el, replace } from "./dom.js";

// Only a path of this dashboard may follow sign-in (no open redirect).
function nextPath(fallback) {
  const next = new URLSearchParams(location.search).get("next") || "";
  return /^\/ui(\/[^/\\]|\/?$)/.test(next) && !next.startsWith("//") ? next : fallback;
}

export function signInPage(main) {
  const error = el("p", { class: "error", id: "sign-in-error", role: "alert" });
  if (new URLSearchParams(location.search).get("ended")) {
    error.textContent = "Your session ended (it expired, or its key was revoked or changed). Sign in again.";
  }
  const key = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true, placeholder: "fak_…" });
  const keyForm = el("form", { id: "key-form", class: "card sign-in" },
    el("h2", {}, "Sign in with an API key"),
    el("label", { for: "api-key" }, "API key (needs the read scope)"),
    key,
    el("button", { id: "sign-in", type: "submit" }, "Sign in"));
  const buildId = el("input", { id: "build-id", type: "text", autocomplete: "off", placeholder: "build id" });
  const buildToken = el("input", { id: "build-token", type: "password", autocomplete: "off", placeholder: "fab_…" });
  const buildForm = el("form", { id: "build-form", class: "card sign-in" },
    el("h2", {}, "Open one build"),
    el("label", { for: "build-id" }, "Build id"), buildId,
    el("label", { for: "build-token" }, "Build token (from the submission)"), buildToken,
    el("button", { id: "open-build", type: "submit" }, "Open build"));
  const submit = (form, body, after) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const s = await post("/ui/api/sign-in", body());
      location.assign(after(s));
    } catch (e) {
      error.textContent = e.message + (e.body && e.body.hint ? " — " + e.body.hint : "");
    }
  });
  submit(keyForm, () => ({ api_key: key.value.trim() }), () => nextPath("/ui/"));
  submit(buildForm, () => ({ build_id: buildId.value.trim(), build_token: buildToken.value.trim() }),
    (s) => "/ui/builds/" + s.build_id);
  replace(main, el("div", { class: "sign-in-page" }, error, keyForm, buildForm));
  key.focus();
}
