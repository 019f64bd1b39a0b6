// The workers: status (idle, building, draining, offline), platforms and queues, the builds each
// holds, when it was last seen, how many builds it ran; admins drain and undrain them here.

import { get, post } from "./api.js";
import { el, replace, badge, ago, shortId } from "./dom.js";
import { live } from "./live.js";

export async function workersPage(main, session) {
  const body = el("tbody", { id: "workers-body" });
  const error = el("p", { class: "error", role: "alert" });
  const message = el("p", { id: "action-message", class: "muted", role: "status" });
  const heads = ["Worker", "Status", "Platforms", "Queues", "Current build", "Last seen", "Builds done"];
  if (session.is_admin) heads.push("");
  replace(main, el("h1", {}, "Workers"), error, message,
    el("table", { id: "workers", class: "list" },
      el("thead", {}, el("tr", {}, heads.map((h) => el("th", { class: h === "Builds done" ? "num" : null }, h)))), body));

  const act = async (w, action) => {
    try {
      await post("/api/workers/" + w.id + "/" + action);
      message.textContent = w.name + (action === "drain" ? " is draining: it takes no new build." : " takes builds again.");
    } catch (e) {
      message.textContent = "Cannot " + action + " " + w.name + ": " + e.message;
    }
    refresh();
  };

  const row = (w) => {
    const cells = [
      el("td", { class: "name" }, w.name, el("div", { class: "muted mono small" }, shortId(w.id))),
      el("td", { class: "status" }, badge(w.status)),
      el("td", {}, (w.platforms || []).join(", ") || "–"),
      el("td", {}, (w.queues || []).join(", ") || "–"),
      el("td", { class: "current" }, w.builds.length
        ? w.builds.map((id) => el("a", { href: "/ui/builds/" + id, class: "mono" }, shortId(id), " "))
        : "–"),
      el("td", { title: w.last_seen_at }, ago(w.last_seen_at)),
      el("td", { class: "num done" }, w.builds_completed + " / " + w.builds_total),
    ];
    if (session.is_admin) {
      const draining = w.status === "draining";
      const button = el("button", { type: "button", class: draining ? "undrain" : "drain danger" },
        draining ? "Undrain" : "Drain");
      button.addEventListener("click", () => act(w, draining ? "undrain" : "drain"));
      cells.push(el("td", {}, w.status === "offline" && !draining ? "" : button));
    }
    return el("tr", { "data-worker-id": w.id, "data-worker-name": w.name }, cells);
  };

  const refresh = async () => {
    try {
      const { workers } = await get("/api/workers");
      error.textContent = "";
      replace(body, workers.length ? workers.map(row)
        : el("tr", {}, el("td", { colspan: heads.length, class: "muted" }, "No worker has registered. Start one with freeagent-worker on a build machine (FREEAGENT_GATEWAY_URL, and a key with the worker or register_workers scope), or freeagent dev --workers 2 on this one.")));
    } catch (e) {
      error.textContent = "Cannot load workers: " + e.message;
    }
  };
  await refresh();
  live({ refresh, filter: () => true });
}
