// Loaded before the app, as a classic script: when a file of the dashboard fails to load (the
// app's modules are all-or-nothing), the page says so instead of staying at "Loading…".
"use strict";
window.addEventListener(
  "error",
  (e) => {
    const t = e.target;
    if (!t || (t.tagName !== "SCRIPT" && t.tagName !== "LINK")) return;
    const show = () => {
      const main = document.getElementById("main");
      if (!main) return;
      const p = document.createElement("p");
      p.className = "error";
      p.textContent =
        "The dashboard could not load " + (t.src || t.href) + ". Reload the page; if it goes on, check the gateway's log.";
      main.replaceChildren(p);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", show);
    else show();
  },
  true,
);
