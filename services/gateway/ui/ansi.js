// ANSI escape codes in a log line, rendered: SGR colours as spans with classes (the CSP allows
// no inline styles) — the 16 foreground and background colours (also when named through the
// 256-colour form), bold, dim, italic, underline and their resets. Every other escape sequence
// (cursor moves, erase, titles, RGB colours) is dropped, never shown raw. Text stays text.

// CSI sequences, OSC strings (ended by BEL or ESC \), and any other escape with its one character.
const ESCAPE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\s\S]?)/g;

function fresh() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
}

// Applies one SGR sequence's parameters to `s`.
function apply(s, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(s, fresh());
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 22) { s.bold = false; s.dim = false; }
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c >= 30 && c <= 37) s.fg = c - 30;
    else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
    else if (c === 39) s.fg = null;
    else if (c >= 40 && c <= 47) s.bg = c - 40;
    else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
    else if (c === 49) s.bg = null;
    else if (c === 38 || c === 48) {
      // 38;5;n (one of 256) or 38;2;r;g;b: the first 16 of the 256 are shown, the rest skipped.
      const key = c === 38 ? "fg" : "bg";
      if (codes[i + 1] === 5) {
        const n = codes[i + 2];
        if (n >= 0 && n < 16) s[key] = n;
        i += 2;
      } else if (codes[i + 1] === 2) {
        i += 4;
      }
    }
  }
}

function classes(s) {
  const out = [];
  if (s.fg !== null) out.push("ansi-fg-" + s.fg);
  if (s.bg !== null) out.push("ansi-bg-" + s.bg);
  if (s.bold) out.push("ansi-bold");
  if (s.dim) out.push("ansi-dim");
  if (s.italic) out.push("ansi-italic");
  if (s.underline) out.push("ansi-underline");
  return out.join(" ");
}

// The line as DOM nodes: text nodes, and spans where a style is on.
export function ansi(line) {
  const text = String(line);
  const nodes = [];
  const s = fresh();
  let at = 0;
  const push = (part) => {
    if (!part) return;
    const cls = classes(s);
    if (!cls) { nodes.push(document.createTextNode(part)); return; }
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = part;
    nodes.push(span);
  };
  for (const m of text.matchAll(ESCAPE)) {
    push(text.slice(at, m.index));
    at = m.index + m[0].length;
    if (m[2] === "m") apply(s, m[1]);
  }
  push(text.slice(at));
  return nodes;
}
