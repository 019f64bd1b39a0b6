// Small charts as inline SVG, drawn from the figures the farm measured: bars per bucket, and
// lines for duration percentiles. Nothing is interpolated: a bucket in which nothing finished
// has no bar and breaks the lines. Each chart has its axes' ends written beside it (the
// scale's top and 0; the window's start and end) and a legend of its colours, as HTML (SVG
// text would stretch with the chart).

import { svg, el } from "./dom.js";

const W = 320;
const H = 90;
const PAD = 4;

// Bars over `count` slots; `series` is [{slot, values: [n, ...]}] stacked in `classes` order.
// `legend`: a name per class; `span`: the x axis's [start, end] words (optional).
export function bars({ count, series, classes, label, legend, span }) {
  const max = Math.max(1, ...series.map((s) => s.values.reduce((a, b) => a + b, 0)));
  const w = (W - 2 * PAD) / count;
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", class: "chart", role: "img", "aria-label": label });
  g.appendChild(svg("line", { x1: PAD, x2: W - PAD, y1: H - PAD, y2: H - PAD, class: "axis" }));
  for (const s of series) {
    let y = H - PAD;
    s.values.forEach((v, i) => {
      if (!v) return;
      const h = ((H - 2 * PAD) * v) / max;
      y -= h;
      g.appendChild(svg("rect", { x: PAD + s.slot * w + 0.5, y, width: Math.max(1, w - 1), height: h, class: classes[i] },
        svg("title", {}, s.title || "")));
    });
  }
  return figure(g, label, { top: String(max), bottom: "0", span, legend: classes.map((c, i) => [c, legend[i]]) });
}

// Lines over `count` slots: `lines` is [{cls, points: [{slot, value}]}].
// `lines` also name themselves: [{cls, name, points}].
export function lines({ count, lines: series, label, unit, span }) {
  const all = series.flatMap((l) => l.points.map((p) => p.value));
  const max = Math.max(1, ...all);
  const w = (W - 2 * PAD) / count;
  const g = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", class: "chart", role: "img", "aria-label": label });
  g.appendChild(svg("line", { x1: PAD, x2: W - PAD, y1: H - PAD, y2: H - PAD, class: "axis" }));
  for (const l of series) {
    for (const p of l.points) {
      const x = PAD + (p.slot + 0.5) * w;
      const y = H - PAD - ((H - 2 * PAD) * p.value) / max;
      g.appendChild(svg("circle", { cx: x, cy: y, r: 2, class: l.cls }, svg("title", {}, p.title || "")));
    }
    const segs = [];
    let prev = null;
    for (const p of l.points) {
      const pt = [PAD + (p.slot + 0.5) * w, H - PAD - ((H - 2 * PAD) * p.value) / max];
      if (prev && p.slot === prev.slot + 1) segs.push("M" + prev.pt.join(",") + "L" + pt.join(","));
      prev = { slot: p.slot, pt };
    }
    if (segs.length) g.appendChild(svg("path", { d: segs.join(""), class: l.cls + " line" }));
  }
  return figure(g, label, { top: unit(max), bottom: unit(0), span, legend: series.map((l) => [l.cls, l.name]) });
}

function figure(g, label, { top, bottom, span, legend }) {
  return el("figure", { class: "chart-box" },
    el("div", { class: "chart-area" },
      el("div", { class: "y-axis muted small", "aria-hidden": "true" }, el("span", { class: "y-top" }, top), el("span", {}, bottom)),
      g,
      span ? el("span") : null,
      span ? el("div", { class: "x-axis muted small", "aria-hidden": "true" }, el("span", {}, span[0]), el("span", {}, span[1])) : null),
    el("figcaption", {}, label,
      el("span", { class: "legend" }, legend.map(([cls, name]) =>
        el("span", { class: "legend-item" }, el("span", { class: "swatch " + cls }), name)))));
}
