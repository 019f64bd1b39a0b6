// One build's page: status and facts, the attempts (who ran it, when, how it ended), the live
// log, artifacts with size, SHA-256 and download, metadata, and cancel and retry.

import { get, post } from "./api.js";
import { el, replace, badge, time, duration, bytes, shortId, TERMINAL } from "./dom.js";
import { logView } from "./log.js";

export async function buildPage(main, id, session) {
  const status = el("span", { id: "build-status" });
  const facts = el("dl", { id: "facts", class: "facts" });
  const attempts = el("tbody", { id: "attempts-body" });
  const artifacts = el("tbody", { id: "artifacts-body" });
  const metadata = el("tbody", { id: "metadata-body" });
  const message = el("p", { id: "action-message", class: "muted", role: "status" });
  const cancel = el("button", { id: "cancel", type: "button", class: "danger", hidden: true }, "Cancel build");
  const retry = el("button", { id: "retry", type: "button", hidden: true }, "Retry");
  let current = null;
  let workers = {};

  const draw = (b) => {
    current = b;
    replace(status, badge(b.status));
    const running = b.started_at && !b.completed_at;
    const ms = b.duration_ms ?? (running ? Date.now() - Date.parse(b.started_at) : null);
    const fact = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
    const commit = b.commit ? el("code", { title: b.commit }, String(b.commit).slice(0, 12)) : null;
    replace(facts,
      b.name ? fact("Name", b.name) : [],
      b.branch ? fact("Branch", el("code", {}, b.branch)) : [],
      commit ? fact("Commit", commit) : [],
      fact("Submitted by", b.submitted_by_name || "–"),
      // Why it waits, and for how long, while it waits (`waiting` in the API).
      b.waiting ? fact("Waiting", b.waiting.reason + " · position " + b.waiting.position + " · queued " + duration(Date.now() - Date.parse(b.submitted_at))
        + (b.waiting.eta_secs === null || b.waiting.eta_secs === undefined ? "" : b.waiting.eta_secs === 0 ? " · starts at the next dispatch" : " · starts in about " + duration(b.waiting.eta_secs * 1000))) : [],
      fact("Platform", b.platform), fact("Queue", b.queue), fact("Team", b.team || "–"),
      fact("Priority", String(b.priority)),
      fact("Attempt", b.attempt + " of " + b.max_attempts), fact("Worker", b.worker_name || "–"),
      fact("Submitted", time(b.submitted_at)), fact("Started", time(b.started_at)),
      fact("Finished", time(b.completed_at)), fact("Duration", duration(ms)),
      fact("Progress", b.progress === null ? "–" : b.progress + " %"),
      // An earlier attempt's error stays in its row of the attempts; a build that completed
      // shows none here.
      b.error_message && b.status !== "completed" ? fact("Error", b.error_message) : [],
      b.original_build_id ? fact("Retry of", el("a", { href: "/ui/builds/" + b.original_build_id }, shortId(b.original_build_id))) : []);
    replace(attempts, b.attempts.length ? b.attempts.map((a) => el("tr", { "data-attempt": a.attempt },
      el("td", { class: "num" }, String(a.attempt)),
      el("td", {}, workers[a.worker_id] || shortId(a.worker_id)),
      el("td", {}, time(a.claimed_at)),
      el("td", {}, time(a.ended_at)),
      el("td", {}, a.outcome ? badge(a.outcome) : "running"),
      el("td", {}, a.error || "")))
      : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "Not claimed by a worker yet.")));
    replace(artifacts, b.artifacts.length ? b.artifacts.map((a) => {
      const kind = a.name === "source" ? "source" : "result";
      return el("tr", { class: "artifact", "data-name": a.name },
        el("td", {}, a.name),
        el("td", { class: "num" }, bytes(a.size)),
        el("td", {}, el("code", { class: "sha256" }, a.sha256)),
        el("td", {}, el("a", { href: "/api/builds/" + b.id + "/download/" + kind, download: "" }, "Download")));
    }) : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No files (purged by retention).")));
    const meta = b.metadata && typeof b.metadata === "object" ? Object.entries(b.metadata) : [];
    replace(metadata, meta.length ? meta.map(([k, v]) => el("tr", {},
      el("th", { class: "mono" }, k),
      el("td", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))))
      : el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No metadata (freeagent submit adds the git branch and commit; --meta key=value adds more).")));
    cancel.hidden = !session.can_submit || TERMINAL.includes(b.status);
    retry.hidden = !session.can_submit;
  };

  const reload = async () => {
    try { draw(await get("/api/builds/" + id)); } catch (e) { message.textContent = "Cannot load the build: " + e.message; }
  };

  // Cancel asks once more before it acts.
  let armed = null;
  cancel.addEventListener("click", async () => {
    if (!armed) {
      cancel.textContent = "Click again to cancel";
      armed = setTimeout(() => { armed = null; cancel.textContent = "Cancel build"; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    cancel.disabled = true;
    try {
      await post("/api/builds/" + id + "/cancel");
      message.textContent = "Cancelled.";
    } catch (e) {
      message.textContent = "Cannot cancel: " + e.message;
    }
    cancel.disabled = false;
    cancel.textContent = "Cancel build";
    reload();
  });
  retry.addEventListener("click", async () => {
    retry.disabled = true;
    try {
      const r = await post("/api/builds/" + id + "/retry");
      message.replaceChildren("Retried as ", el("a", { href: "/ui/builds/" + r.id, id: "retry-link" }, shortId(r.id)),
        session.kind === "build" ? " (its page needs its own build token: " + r.access_token + ")" : "");
    } catch (e) {
      message.textContent = "Cannot retry: " + e.message;
    }
    retry.disabled = false;
  });

  const log = logView(id, {
    onStatus: (s) => { if (current && current.status !== s) reload(); else if (current) replace(status, badge(s)); },
    onEnd: () => reload(),
  });
  const table = (tid, heads, tbody) => el("table", { id: tid, class: "list" },
    el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))), tbody);

  replace(main,
    el("div", { class: "title" }, el("h1", {}, "Build ", el("span", { class: "mono", id: "build-id" }, id)), status,
      el("span", { class: "spacer" }), cancel, retry),
    message,
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Facts"), facts),
      el("section", { class: "card" }, el("h2", {}, "Attempts"),
        table("attempts", ["#", "Worker", "Claimed", "Ended", "Outcome", "Error"], attempts))),
    log.element,
    el("section", { class: "card" }, el("h2", {}, "Artifacts"),
      table("artifacts", ["Name", "Size", "SHA-256", ""], artifacts)),
    el("section", { class: "card" }, el("h2", {}, "Metadata"),
      el("table", { id: "metadata", class: "list" }, metadata)));

  if (session.kind === "key") {
    try {
      for (const w of (await get("/api/workers")).workers) workers[w.id] = w.name;
    } catch (e) { console.warn("workers", e.message); }
  }
  await reload();
  // Facts change without log lines (heartbeats, progress): look again now and then.
  setInterval(() => { if (current && !TERMINAL.includes(current.status)) reload(); }, 5000);
}
