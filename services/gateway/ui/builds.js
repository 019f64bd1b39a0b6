// The builds list: newest first, filtered by status, platform, queue and worker (kept in the
// page's URL), paged with the API's cursor (`Link: rel="next"`), so 100,000 builds cost one
// page at a time. The page redraws on farm events and every few seconds.

import { get, request, nextLink } from "./api.js";
import { el, replace, shortId, duration, ago, badge, what } from "./dom.js";
import { live } from "./live.js";

const STATUSES = ["", "pending", "assigned", "building", "completed", "failed", "cancelled"];
const PLATFORMS = ["", "ios", "android"];
const PAGE = 50;

export async function buildsPage(main) {
  const params = new URLSearchParams(location.search);
  const filters = {
    status: params.get("status") || "",
    platform: params.get("platform") || "",
    queue: params.get("queue") || "",
    worker_id: params.get("worker_id") || "",
  };
  // Cursors of the pages before this one, for "previous".
  const cursors = [];
  let cursor = params.get("cursor") || "";
  let next = null;

  const select = (name, values, label) => {
    const s = el("select", { id: "filter-" + name, name },
      values.map((v) => el("option", { value: v, selected: v === filters[name] }, v || "any " + label)));
    s.addEventListener("change", () => { filters[name] = s.value; cursor = ""; cursors.length = 0; update(); });
    return s;
  };
  const queue = el("input", { id: "filter-queue", name: "queue", type: "text", placeholder: "any queue", value: filters.queue, size: 12 });
  queue.addEventListener("change", () => { filters.queue = queue.value.trim(); cursor = ""; cursors.length = 0; update(); });
  const worker = el("select", { id: "filter-worker_id", name: "worker_id" }, el("option", { value: "" }, "any worker"));
  worker.addEventListener("change", () => { filters.worker_id = worker.value; cursor = ""; cursors.length = 0; update(); });

  const total = el("span", { id: "total", class: "muted" });
  const prev = el("button", { id: "prev-page", type: "button", disabled: true }, "← Newer");
  const more = el("button", { id: "next-page", type: "button", disabled: true }, "Older →");
  const first = el("button", { id: "first-page", type: "button" }, "Newest");
  const error = el("p", { class: "error", role: "alert" });
  const body = el("tbody", { id: "builds-body" });
  const table = el("table", { id: "builds", class: "list" },
    el("thead", {}, el("tr", {},
      ["Build", "What", "Status", "Platform", "Queue", "Team", "Worker", "Attempt", "Submitted", "Duration"].map((h) =>
        el("th", { class: h === "Attempt" || h === "Duration" ? "num" : null }, h)))),
    body);

  const summary = el("p", { id: "summary", class: "summary muted" });
  replace(main,
    el("h1", {}, "Builds"),
    summary,
    el("form", { class: "filters", id: "filters" },
      select("status", STATUSES, "status"), select("platform", PLATFORMS, "platform"), queue, worker),
    error, table,
    el("div", { class: "pager" }, first, prev, more, total));

  prev.addEventListener("click", () => { cursor = cursors.pop() || ""; update(); });
  more.addEventListener("click", () => { if (next) { cursors.push(cursor); cursor = next; update(); } });
  first.addEventListener("click", () => { cursor = ""; cursors.length = 0; update(); });

  const loadWorkers = async () => {
    try {
      const { workers } = await get("/api/workers");
      const chosen = filters.worker_id;
      replace(worker, el("option", { value: "" }, "any worker"),
        workers.map((w) => el("option", { value: w.id, selected: w.id === chosen }, w.name)));
    } catch (e) { console.warn("workers", e.message); }
  };

  const query = () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    if (cursor) q.set("cursor", cursor);
    return q;
  };

  const anyFilter = () => Object.values(filters).some(Boolean);

  // The farm at a glance, above the list (public counts, `GET /api/stats`).
  const drawSummary = async () => {
    try {
      const s = await get("/api/stats");
      replace(summary,
        el("span", { class: "figure" }, el("b", {}, String(s.buildsQueued)), " waiting"),
        el("span", { class: "figure" }, el("b", {}, String(s.activeBuilds)), " running"),
        el("span", { class: "figure" }, el("b", {}, String(s.buildsToday)), " today"),
        el("span", { class: "figure" }, el("b", {}, String(s.nodesOnline)), s.nodesOnline === 1 ? " worker online" : " workers online"));
    } catch (e) { console.warn("stats", e.message); }
  };

  const refresh = async () => {
    drawSummary();
    const q = query();
    q.set("limit", String(PAGE));
    try {
      const { body: builds, headers } = await request("/api/builds?" + q.toString());
      next = (() => {
        const link = nextLink(headers);
        return link ? new URL(link, location.href).searchParams.get("cursor") : null;
      })();
      error.textContent = "";
      replace(body, builds.length ? builds.map(row)
        : el("tr", {}, el("td", { colspan: 10, class: "muted" }, anyFilter()
          ? "No builds match these filters. Clear them to see every build."
          : "No builds yet. Submit one: freeagent submit <project dir> --platform android")));
      const n = Number(headers.get("x-total-count") || "0");
      total.textContent = n.toLocaleString() + (n === 1 ? " build matches" : " builds match");
      more.disabled = !next;
      prev.disabled = cursors.length === 0 && !cursor;
    } catch (e) {
      error.textContent = "Cannot load builds: " + e.message;
    }
  };

  const update = () => {
    const q = query();
    history.replaceState(null, "", "/ui/builds" + (q.toString() ? "?" + q : ""));
    refresh();
  };

  await Promise.all([loadWorkers(), refresh()]);
  live({ refresh, filter: (ev) => ev.type === "build" });
}

function row(b) {
  const running = b.started_at && !b.completed_at;
  const ms = b.duration_ms ?? (running ? Date.now() - Date.parse(b.started_at) : null);
  return el("tr", { "data-build-id": b.id, class: "build-row" },
    el("td", {}, el("a", { href: "/ui/builds/" + b.id, class: "mono" }, shortId(b.id))),
    el("td", { class: "what" }, what(b)),
    el("td", { class: "status" }, badge(b.status), b.waiting ? waitingNote(b.waiting) : null),
    el("td", {}, b.platform),
    el("td", {}, b.queue),
    el("td", { class: "team" }, b.team || "–"),
    el("td", { class: "worker" }, b.worker_name || "–"),
    el("td", { class: "attempt num" }, String(b.attempt)),
    el("td", { title: b.submitted_at }, ago(b.submitted_at)),
    el("td", { class: "duration num" }, duration(ms) + (running ? " …" : "")));
}

// Where a pending build waits, why, and when it should start (the API's `waiting`).
function waitingNote(w) {
  const eta = w.eta_secs ? " · starts in about " + duration(w.eta_secs * 1000) : "";
  return el("div", { class: "waiting muted small" }, "#" + w.position + " · " + w.reason + eta);
}
