// A build's log as people debug in it: `GET /api/builds/:id/logs?follow=true` as server-sent
// events (the session cookie goes with them). One section per attempt; numbered lines whose
// `#L<n>` links open the page at that line; stderr lines marked as such; ANSI colours rendered
// (`ansi.js`); search that marks
// matching lines or shows only them; times in local time, UTC, or elapsed since the first line;
// follow that pauses when the reader scrolls up and resumes at the bottom; long lines wrapped
// (or not) without breaking the time column; the raw log as a download. A dropped stream resumes
// after the last line seen (`after`), so no line shows twice, and the state says since when the
// log is disconnected.

import { el } from "./dom.js";
import { ansi } from "./ansi.js";

const TIME_MODES = [["local", "local time"], ["utc", "UTC"], ["elapsed", "elapsed"]];

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

function clock(d) {
  return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}

// A line's time in `mode`; `first` is the first line's (for elapsed).
function stamp(ms, mode, first) {
  if (!isFinite(ms)) return "";
  if (mode === "utc") return new Date(ms).toISOString().slice(11, 23);
  if (mode === "elapsed") {
    const d = Math.max(0, ms - first);
    return "+" + Math.floor(d / 60000) + ":" + pad(Math.floor(d / 1000) % 60) + "." + pad(d % 1000, 3);
  }
  return clock(new Date(ms));
}

function stored(key, fallback) {
  try { return localStorage.getItem(key) || fallback; } catch { return fallback; }
}

function store(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode */ }
}

export function logView(buildId, { onStatus, onEnd }) {
  const target = (location.hash.match(/^#L(\d+)$/) || [])[1];
  const lines = el("div", { id: "log", class: "log", role: "log", "aria-live": "off" });
  const follow = el("input", { id: "follow", type: "checkbox", checked: !target });
  const wrap = el("input", { id: "log-wrap", type: "checkbox", checked: stored("log.wrap", "1") === "1" });
  const search = el("input", { id: "log-search", type: "search", placeholder: "Search the log", "aria-label": "Search the log" });
  const only = el("input", { id: "log-only", type: "checkbox" });
  const matches = el("span", { id: "log-matches", class: "muted small" });
  const timeMode = el("select", { id: "log-time", "aria-label": "Times" },
    TIME_MODES.map(([v, label]) => el("option", { value: v }, label)));
  timeMode.value = stored("log.time", "local");
  const state = el("span", { id: "log-state", class: "muted" }, "connecting…");
  const raw = el("a", { id: "log-raw", href: "/api/builds/" + encodeURIComponent(buildId) + "/download/logs", download: "" }, "Raw log");
  const box = el("section", { class: "card" },
    el("div", { class: "card-head wraps" }, el("h2", {}, "Log"), state, el("span", { class: "spacer" }), raw),
    el("div", { class: "log-tools" }, search,
      el("label", { class: "toggle" }, only, " only matching"), matches,
      el("span", { class: "spacer" }), timeMode,
      el("label", { class: "toggle" }, wrap, " wrap"),
      el("label", { class: "toggle" }, follow, " follow")),
    lines);
  let after = 0;
  let count = 0;
  let first = null;
  let source = null;
  let ended = false;
  let downSince = null;
  const sections = new Map();

  const atBottom = () => lines.scrollHeight - lines.scrollTop - lines.clientHeight < 8;
  const stick = () => { if (follow.checked) lines.scrollTop = lines.scrollHeight; };
  follow.addEventListener("change", stick);
  // Scrolling up pauses follow; back at the bottom, it resumes.
  lines.addEventListener("scroll", () => { follow.checked = atBottom(); });

  const showWrap = () => lines.classList.toggle("nowrap", !wrap.checked);
  wrap.addEventListener("change", () => { store("log.wrap", wrap.checked ? "1" : "0"); showWrap(); });
  showWrap();

  const drawTime = (ts) => { ts.textContent = stamp(Number(ts.dataset.t), timeMode.value, first); };
  timeMode.addEventListener("change", () => {
    store("log.time", timeMode.value);
    for (const ts of lines.querySelectorAll(".ts")) drawTime(ts);
  });

  // Search: case-insensitive on the text as shown; marks matches, or hides the rest.
  const query = () => search.value.trim().toLowerCase();
  const judge = (line, q) => {
    const hit = q !== "" && line.querySelector(".msg").textContent.toLowerCase().includes(q);
    line.classList.toggle("match", hit);
    line.hidden = only.checked && q !== "" && !hit;
    return hit;
  };
  const refilter = () => {
    const q = query();
    let n = 0;
    for (const line of lines.querySelectorAll(".line")) if (judge(line, q)) n++;
    matches.textContent = q ? n + (n === 1 ? " match" : " matches") : "";
  };
  search.addEventListener("input", refilter);
  only.addEventListener("change", refilter);

  // The line the address names (`#L<n>`), highlighted and scrolled to once it is there.
  const mark = (n) => {
    for (const l of lines.querySelectorAll(".line.target")) l.classList.remove("target");
    const line = document.getElementById("L" + n);
    if (!line) return false;
    line.classList.add("target");
    line.scrollIntoView({ block: "center" });
    return true;
  };
  let pending = target;
  window.addEventListener("hashchange", () => {
    const n = (location.hash.match(/^#L(\d+)$/) || [])[1];
    if (n) { follow.checked = false; mark(n); }
  });

  const section = (attempt) => {
    let s = sections.get(attempt);
    if (!s) {
      s = el("div", { class: "attempt", id: "attempt-" + attempt, "data-attempt": attempt },
        el("div", { class: "attempt-head" }, "Attempt " + attempt));
      sections.set(attempt, s);
      lines.appendChild(s);
    }
    return s;
  };

  const add = (line) => {
    if (line.seq <= after) return;
    after = line.seq;
    count += 1;
    const t = Date.parse(line.timestamp);
    if (first === null && isFinite(t)) first = t;
    // A line of the build's stderr is shown as that stream, not as a warning.
    const level = line.stream === "stderr" ? "stderr" : String(line.level || "info").replace(/[^a-z]/g, "");
    const n = String(count);
    const ts = el("span", { class: "ts", "data-t": t, title: line.timestamp });
    drawTime(ts);
    const row = el("div", { class: "line lvl-" + level, id: "L" + n, "data-seq": line.seq, "data-n": n },
      el("a", { class: "n", href: "#L" + n, "aria-label": "line " + n }, n),
      ts,
      el("span", { class: "lvl" }, level),
      el("span", { class: "msg" }, ansi(line.message)));
    section(Number(line.attempt) || 1).appendChild(row);
    const q = query();
    if (q && judge(row, q)) {
      const m = Number((matches.textContent.match(/^\d+/) || ["0"])[0]) + 1;
      matches.textContent = m + (m === 1 ? " match" : " matches");
    }
    if (pending === n && mark(n)) pending = null;
    stick();
  };

  // The gateway sends a keep-alive after 15 s of quiet: silence well past that is a stalled
  // stream (a hung gateway, a dead link), said as such and replaced by a new one.
  const STALL_MS = 25000;
  let lastHeard = Date.now();
  let live = false;
  const heard = () => { lastHeard = Date.now(); };
  const down = (since) => {
    live = false;
    if (downSince === null) downSince = since;
    state.textContent = "disconnected since " + clock(downSince) + "; reconnecting…";
    state.className = "error";
  };
  const watchdog = setInterval(() => {
    if (ended || !live || Date.now() - lastHeard < STALL_MS) return;
    down(new Date(lastHeard));
    source.close();
    connect();
  }, 5000);

  const connect = () => {
    source = new EventSource("/api/builds/" + encodeURIComponent(buildId) + "/logs?follow=true&after=" + after);
    source.addEventListener("open", () => { heard(); live = true; downSince = null; state.textContent = "live"; state.className = "muted"; });
    source.addEventListener("keepalive", heard);
    source.addEventListener("log", (e) => { heard(); try { add(JSON.parse(e.data)); } catch { /* skip */ } });
    source.addEventListener("status", (e) => { heard(); try { onStatus(JSON.parse(e.data).status); } catch { /* skip */ } });
    source.addEventListener("end", (e) => {
      ended = true;
      clearInterval(watchdog);
      source.close();
      state.textContent = "ended";
      if (pending) mark(pending);
      try { onEnd(JSON.parse(e.data).status); } catch { onEnd(null); }
    });
    source.addEventListener("error", (e) => {
      if (ended) return;
      // The server's own `error` event (data set), or a dropped or refused connection:
      // reconnect from the last line seen, and say since when the log is not live.
      source.close();
      down(new Date());
      setTimeout(connect, e.data ? 1000 : 3000);
    });
  };
  connect();
  return { element: box, close: () => { ended = true; clearInterval(watchdog); if (source) source.close(); } };
}
