// The dashboard's entry point: learns the session, draws the header, and hands the page the
// path names to its module. Pages are plain links (each a full load of this small page).

import { get, post, setCsrf, toSignIn } from "./api.js";
import { el, replace, shortId } from "./dom.js";
import { signInPage } from "./sign_in.js";
import { buildsPage } from "./builds.js";
import { buildPage } from "./build.js";
import { workersPage } from "./workers.js";
import { overviewPage } from "./overview.js";

// Each page says what it is in the tab (and in the browser's history).
function title(what) {
  document.title = what + " · Free Agent";
}

async function main() {
  const main = document.getElementById("main");
  labelCells(main);
  const path = location.pathname.replace(/\/+$/, "") || "/ui";
  if (path === "/ui/sign-in") {
    title("Sign in");
    signInPage(main);
    return;
  }
  let session;
  try {
    session = await get("/ui/api/session");
  } catch (e) {
    if (e.status !== 401) replace(main, el("p", { class: "error" }, "Cannot reach the farm: " + e.message));
    return;
  }
  setCsrf(session.csrf_token);
  header(session, path);
  const build = path.match(/^\/ui\/builds\/([0-9a-fA-F-]{36})$/);
  if (build) {
    title("Build " + shortId(build[1]));
    return buildPage(main, build[1], session);
  }
  if (session.kind === "build") return toSignIn();
  if (path === "/ui/builds") { title("Builds"); return buildsPage(main, session); }
  if (path === "/ui/workers") { title("Workers"); return workersPage(main, session); }
  if (path === "/ui") { title("Overview"); return overviewPage(main, session); }
  title("Not found");
  replace(main, el("p", { class: "error" }, "No such page. ", el("a", { href: "/ui" }, "Go to the overview")));
}

// Phones show tables as cards (app.css): each cell carries its column's name, whenever rows
// are drawn.
function labelCells(root) {
  const label = () => {
    for (const table of root.querySelectorAll("table.list")) {
      const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
      if (!heads.length) continue;
      for (const tr of table.querySelectorAll("tbody tr")) {
        [...tr.children].forEach((td, i) => {
          if (heads[i] && !td.hasAttribute("colspan")) td.setAttribute("data-label", heads[i]);
        });
      }
    }
  };
  new MutationObserver((records) => {
    const tables = (r) => r.target.closest("table.list")
      || [...r.addedNodes].some((n) => n.nodeType === 1 && (n.matches("table.list") || n.querySelector("table.list")));
    if (records.some(tables)) label();
  }).observe(root, { childList: true, subtree: true });
  label();
}

function header(session, path) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const out = document.getElementById("sign-out");
  if (session.kind === "key") {
    nav.hidden = false;
    const page = path === "/ui" ? "overview" : path.split("/")[2];
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.page === page) a.classList.add("current");
    }
    who.textContent = "key: " + session.name + (session.is_admin ? " (admin)" : "");
  } else {
    who.textContent = "one build (build token)";
  }
  out.hidden = false;
  out.addEventListener("click", async () => {
    try { await post("/ui/api/sign-out"); } catch (e) { console.warn(e.message); }
    location.assign("/ui/sign-in");
  });
}

main();
