// Keeps a page current: the farm's event stream (`GET /api/events`, server-sent events) when
// the gateway has it, and polling of the JSON API as well, slower while events flow. `refresh`
// is called at most about once a second while events arrive, however many.

export function live({ refresh, filter = () => true, pollMs = 3000, idlePollMs = 15000, query = "" }) {
  const state = document.getElementById("live-state");
  let source = null;
  let streaming = false;
  let pending = null;
  let timer = null;
  let stopped = false;

  const kick = (delay = 250) => {
    if (pending || stopped) return;
    pending = setTimeout(async () => {
      pending = null;
      try { await refresh(); } catch (e) { console.warn("refresh failed", e.message); }
    }, delay);
  };

  const show = () => {
    if (!state) return;
    state.textContent = streaming ? "live" : "polling";
    state.className = "live-state " + (streaming ? "on" : "poll");
  };

  const schedule = () => {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(() => { kick(0); schedule(); }, streaming ? idlePollMs : pollMs);
  };

  const onEvent = (e) => {
    let data = null;
    try { data = JSON.parse(e.data); } catch { return; }
    // At most one redraw a second, however busy the farm.
    if (filter(data)) kick(1000);
  };

  if (typeof EventSource !== "undefined") {
    source = new EventSource("/api/events" + query);
    source.addEventListener("open", () => { streaming = true; show(); schedule(); kick(0); });
    source.addEventListener("build", onEvent);
    source.addEventListener("worker", onEvent);
    source.addEventListener("error", () => {
      // Closed for good (no such route, no access): polling carries on alone.
      if (source.readyState === EventSource.CLOSED) { streaming = false; show(); schedule(); }
      else if (streaming) { streaming = false; show(); schedule(); }
    });
  }
  show();
  schedule();
  return {
    kick,
    stop() { stopped = true; clearTimeout(timer); clearTimeout(pending); if (source) source.close(); },
  };
}
