// The overview: queue depths now, and over the last hour and the last day the builds that
// finished per bucket, builds per minute, success rate and build-duration percentiles, as
// `GET /api/overview` measured them.

import { get } from "./api.js";
import { el, replace, duration } from "./dom.js";
import { bars, lines } from "./charts.js";
import { live } from "./live.js";

export async function overviewPage(main) {
  const body = el("div", { id: "overview" });
  const error = el("p", { class: "error", role: "alert" });
  replace(main, el("h1", {}, "Overview"), error, body);

  const refresh = async () => {
    let o;
    try { o = await get("/api/overview"); } catch (e) { error.textContent = "Cannot load the figures: " + e.message; return; }
    error.textContent = "";
    replace(body,
      el("div", { class: "grid" }, queues(o), stat("Building now", String(o.active), "assigned or building", "active")),
      windowCard("Last hour", o.hour, "hour"),
      windowCard("Last day", o.day, "day"),
      el("p", { class: "muted small" }, "Measured " + new Date(o.measured_at).toLocaleTimeString() +
        ". Durations are of completed builds (started → completed); success rate is completed / (completed + failed)."));
  };
  await refresh();
  live({ refresh, filter: (ev) => ev.type === "build", pollMs: 10000, idlePollMs: 30000 });
}

function stat(title, value, note, id) {
  return el("section", { class: "card stat", id: "stat-" + id }, el("h2", {}, title),
    el("div", { class: "big" }, value), el("div", { class: "muted" }, note));
}

function queues(o) {
  const rows = o.queues.map((q) => el("tr", { "data-queue": q.queue },
    el("td", {}, q.queue), el("td", { class: "num depth" }, String(q.depth)), el("td", { class: "num" }, String(q.live_workers))));
  const chart = o.queues.length ? bars({
    count: o.queues.length,
    series: o.queues.map((q, i) => ({ slot: i, values: [q.depth], title: q.queue + ": " + q.depth + " pending" })),
    classes: ["c-pending"],
    legend: ["pending"],
    label: "Pending builds per queue",
  }) : null;
  return el("section", { class: "card", id: "queues" }, el("h2", {}, "Queue depths"), chart,
    el("table", { class: "list" }, el("thead", {}, el("tr", {}, el("th", {}, "Queue"), el("th", {}, "Pending"), el("th", {}, "Live workers"))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No queue yet: a queue appears with its first build or its first worker.")))));
}

function windowCard(title, w, id) {
  const count = Math.round(w.window_secs / w.bucket_secs);
  const start = Date.now() - w.window_secs * 1000;
  const slot = (b) => Math.min(count - 1, Math.max(0, Math.floor((Date.parse(b.at) - start) / (w.bucket_secs * 1000))));
  const t = w.total;
  const finished = t.completed + t.failed + t.cancelled;
  const perMinute = finished / (w.window_secs / 60);
  const rate = t.success_rate === null ? "–" : (100 * t.success_rate).toFixed(1) + " %";
  const per = w.bucket_secs >= 60 ? w.bucket_secs / 60 + " min" : w.bucket_secs + " s";
  // The x axis: from the window's start to now.
  const span = [w.window_secs >= 3600 * 2 ? w.window_secs / 3600 + " h ago" : w.window_secs / 60 + " min ago", "now"];
  const pct = (k) => w.buckets.filter((b) => b[k] !== null).map((b) => ({ slot: slot(b), value: b[k], title: k + " " + duration(b[k]) }));
  return el("section", { class: "card window", id: "window-" + id },
    el("h2", {}, title),
    el("div", { class: "stats" },
      figure("Builds per minute", perMinute > 0 && perMinute < 0.1 ? perMinute.toPrecision(2) : perMinute.toFixed(2), finished + " finished"),
      figure("Success rate", rate, t.completed + " completed, " + t.failed + " failed"),
      figure("Duration p50", duration(t.p50_ms), "half of the builds took less"),
      figure("p90", duration(t.p90_ms), ""),
      figure("p99", duration(t.p99_ms), "")),
    el("div", { class: "grid" },
      bars({
        count,
        series: w.buckets.map((b) => ({ slot: slot(b), values: [b.completed, b.failed, b.cancelled],
          title: new Date(b.at).toLocaleTimeString() + ": " + b.completed + " completed, " + b.failed + " failed, " + b.cancelled + " cancelled" })),
        classes: ["c-completed", "c-failed", "c-cancelled"],
        legend: ["completed", "failed", "cancelled"],
        label: "Finished per " + per,
        span,
      }),
      lines({
        count,
        lines: [{ cls: "c-p50", name: "p50", points: pct("p50_ms") }, { cls: "c-p90", name: "p90", points: pct("p90_ms") },
          { cls: "c-p99", name: "p99", points: pct("p99_ms") }],
        label: "Duration p50 / p90 / p99 per " + per,
        unit: duration,
        span,
      })));
}

function figure(label, value, note) {
  return el("div", { class: "figure" }, el("div", { class: "label" }, label), el("div", { class: "big" }, value),
    el("div", { class: "muted small" }, note));
}
