// DOM helpers. Every value from the farm (names, metadata, log lines) goes into the page as
// text (textContent, attributes set one by one), never parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";

// el("td", {class: "status"}, "text", child, ...): an element with attributes and children;
// strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

// The same in the SVG namespace (charts).
export function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replaces an element's children.
export function replace(e, ...children) {
  e.replaceChildren();
  append(e, children);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) + "…" + String(id).slice(-4) : "–";
}

export function duration(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + (s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

// "3 min ago"; the exact time is the element's title.
export function ago(iso) {
  if (!iso) return "–";
  const d = Date.now() - Date.parse(iso);
  if (d < 5000) return "just now";
  return duration(d) + " ago";
}

export function time(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

// What tells a build apart: its name, branch@commit (from its metadata), and who submitted it.
export function what(b) {
  const commit = b.commit ? String(b.commit).slice(0, 10) : null;
  const at = b.branch && commit ? b.branch + "@" + commit : b.branch || (commit ? "@" + commit : null);
  const parts = [
    b.name ? el("span", { class: "name" }, b.name) : null,
    at ? el("span", { class: "mono branch" }, at) : null,
    b.submitted_by_name ? el("span", { class: "by muted small" }, "by " + b.submitted_by_name) : null,
  ].filter(Boolean);
  return el("div", { class: "what" }, parts.length ? parts : el("span", { class: "muted" }, "–"));
}

// The badge of a build or worker status.
export function badge(status) {
  return el("span", { class: "badge s-" + String(status).replace(/[^a-z_]/g, "") }, status);
}

export const TERMINAL = ["completed", "failed", "cancelled"];
