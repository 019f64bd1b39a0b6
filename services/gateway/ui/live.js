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
  let watchdog = null;

  const kick = (delay = 250) => {
    if (pending || stopped) return;
    pending = setTimeout(async () => {
      pending = null;
      try { await refresh(); } catch (e) { console.warn("refresh failed", e.message); }
    }, delay);
  };

  // When the event stream dropped, if it did: the header says so, not "live".
  let downSince = null;
  const clock = (d) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const show = () => {
    if (!state) return;
    state.textContent = streaming ? "live" : downSince ? "disconnected since " + clock(downSince) + " · polling" : "polling";
    state.className = "live-state " + (streaming ? "on" : downSince ? "down" : "poll");
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

  // The gateway sends a keep-alive after 15 s of quiet: silence well past that is a stalled
  // stream (a hung gateway, a dead link) even while the connection looks open.
  const STALL_MS = 25000;
  let lastHeard = Date.now();
  const heard = () => { lastHeard = Date.now(); };
  const connect = () => {
    source = new EventSource("/api/events" + query);
    source.addEventListener("open", () => { heard(); streaming = true; downSince = null; show(); schedule(); kick(0); });
    source.addEventListener("build", (e) => { heard(); onEvent(e); });
    source.addEventListener("worker", (e) => { heard(); onEvent(e); });
    source.addEventListener("keepalive", heard);
    source.addEventListener("error", () => {
      // Closed for good (no such route, no access): polling carries on alone.
      if (source.readyState === EventSource.CLOSED) { if (streaming) downSince = new Date(); streaming = false; show(); schedule(); }
      else if (streaming) { streaming = false; downSince = new Date(); show(); schedule(); }
    });
  };
  if (typeof EventSource !== "undefined") {
    connect();
    watchdog = setInterval(() => {
      if (stopped || !streaming || Date.now() - lastHeard < STALL_MS) return;
      // Stalled: say since when nothing came, and open a new stream (it resumes by itself).
      streaming = false;
      downSince = new Date(lastHeard);
      show();
      schedule();
      source.close();
      connect();
    }, 5000);
  }
  show();
  schedule();
  return {
    kick,
    stop() { stopped = true; clearTimeout(timer); clearTimeout(pending); clearInterval(watchdog); if (source) source.close(); },
  };
}
