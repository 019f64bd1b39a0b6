// A build's log, live: `GET /api/builds/:id/logs?follow=true` as server-sent events (the
// session cookie goes with them). Lines are appended as text, coloured by level; with
// "follow" on, the view keeps to the newest line. A dropped stream resumes after the last line
// seen (`after`), so no line shows twice.

import { el } from "./dom.js";

export function logView(buildId, { onStatus, onEnd }) {
  const lines = el("div", { id: "log", class: "log", role: "log", "aria-live": "off" });
  const follow = el("input", { id: "follow", type: "checkbox", checked: true });
  const state = el("span", { id: "log-state", class: "muted" }, "connecting…");
  const box = el("section", { class: "card" },
    el("div", { class: "card-head" }, el("h2", {}, "Log"), state,
      el("label", { class: "toggle" }, follow, " follow")),
    lines);
  let after = 0;
  let source = null;
  let ended = false;

  const stick = () => { if (follow.checked) lines.scrollTop = lines.scrollHeight; };
  follow.addEventListener("change", stick);

  const add = (line) => {
    if (line.seq <= after) return;
    after = line.seq;
    const level = String(line.level || "info").replace(/[^a-z]/g, "");
    lines.appendChild(el("div", { class: "line lvl-" + level, "data-seq": line.seq },
      el("span", { class: "ts" }, new Date(line.timestamp).toLocaleTimeString()),
      el("span", { class: "lvl" }, level),
      el("span", { class: "msg" }, line.message)));
    stick();
  };

  const connect = () => {
    source = new EventSource("/api/builds/" + encodeURIComponent(buildId) + "/logs?follow=true&after=" + after);
    source.addEventListener("open", () => { state.textContent = "live"; });
    source.addEventListener("log", (e) => { try { add(JSON.parse(e.data)); } catch { /* skip */ } });
    source.addEventListener("status", (e) => { try { onStatus(JSON.parse(e.data).status); } catch { /* skip */ } });
    source.addEventListener("end", (e) => {
      ended = true;
      source.close();
      state.textContent = "ended";
      try { onEnd(JSON.parse(e.data).status); } catch { onEnd(null); }
    });
    source.addEventListener("error", (e) => {
      if (ended) return;
      // The server's own `error` event (data set), or a dropped or refused connection:
      // reconnect from the last line seen.
      source.close();
      state.textContent = "reconnecting…";
      setTimeout(connect, e.data ? 1000 : 3000);
    });
  };
  connect();
  return { element: box, close: () => { ended = true; if (source) source.close(); } };
}
