"""The monitor page: one HTML document, inline CSS and JS, canvas drawing; nothing fetched
from elsewhere (the clinic machine may have no network)."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bciarm monitor</title>
<style>
 :root { --bg:#101418; --panel:#1a2027; --fg:#e6e6e6; --dim:#8a949e; --ok:#3fb950;
         --bad:#f85149; --warn:#d29922; }
 * { box-sizing: border-box; }
 body { margin:0; background:var(--bg); color:var(--fg); font:13px/1.4 system-ui,sans-serif; }
 header { display:flex; align-items:center; gap:14px; padding:8px 14px; background:#0b0e11; }
 header h1 { font-size:16px; margin:0; font-weight:600; }
 #banner { padding:4px 10px; border-radius:4px; font-weight:700; background:var(--ok); color:#000; }
 #banner.estop { background:var(--bad); color:#fff; } #banner.held { background:var(--warn); }
 #banner.ended { background:#555; color:#fff; }
 .dim { color:var(--dim); }
 main { display:grid; grid-template-columns: 360px 1fr 1fr; gap:10px; padding:10px; }
 .panel { background:var(--panel); border-radius:6px; padding:8px 10px; }
 .panel h2 { font-size:12px; text-transform:uppercase; letter-spacing:.05em; color:var(--dim);
             margin:0 0 6px; }
 #estop { width:100%; height:92px; font-size:30px; font-weight:800; color:#fff;
          background:#c62828; border:4px solid #ff8a80; border-radius:10px; cursor:pointer; }
 #estop:active { background:#8e0000; }
 button { background:#2d333b; color:var(--fg); border:1px solid #444c56; border-radius:5px;
          padding:6px 12px; cursor:pointer; font-size:13px; }
 button:hover { background:#373e47; }
 .row { display:flex; gap:8px; align-items:center; margin:8px 0; flex-wrap:wrap; }
 input[type=range] { flex:1; }
 table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
 td, th { padding:2px 5px; text-align:right; border-bottom:1px solid #2d333b; white-space:nowrap; }
 td:first-child, th:first-child, td.s, th.s { text-align:left; }
 th { color:var(--dim); font-weight:500; }
 .st-RUNNING { color:var(--ok); } .st-FAULT, .st-FAILED { color:var(--bad); }
 .st-STARTING, .st-STOPPING, .st-HELD { color:var(--warn); }
 canvas { width:100%; background:#0b0e11; border-radius:4px; display:block; }
 #events { height:190px; overflow-y:auto; font-family:ui-monospace,monospace; font-size:12px; }
 #events div.k-estop, #events div.k-fault { color:var(--bad); }
 #events div.k-resume { color:var(--ok); } #events div.k-operator { color:#79c0ff; }
 .big { font-size:22px; font-weight:600; } .metric { display:inline-block; margin-right:18px; }
 #msg { min-height:1.4em; color:var(--warn); }
</style></head>
<body>
<header><h1>bciarm monitor</h1><span id="banner">connecting…</span>
 <span class="dim">session time <b id="t-session">—</b> s · block <b id="block">—</b>
 · messages <b id="n-msgs">0</b> · <span id="observer"></span></span>
 <span class="dim" style="margin-left:auto">Space bar = E-STOP</span></header>
<main>
 <section>
  <div class="panel">
   <button id="estop" title="Latch every effector stopped (Space)">E-STOP</button>
   <div class="row"><button id="resume">Resume</button><button id="pause">Pause (hold next block)</button>
    <button id="start">Start block</button></div>
   <div class="row"><label for="assist">Assist</label>
    <input id="assist" type="range" min="0" max="1" step="0.05" value="0">
    <span id="assist-v">0.00</span><button id="assist-apply">Set</button></div>
   <div class="row"><label for="gain">Gain</label>
    <input id="gain" type="range" min="0" max="3" step="0.05" value="1">
    <span id="gain-v">1.00</span><button id="gain-apply">Set</button></div>
   <div id="msg"></div>
  </div>
  <div class="panel" style="margin-top:10px"><h2>Task</h2>
   <div><span class="metric">success<br><span class="big" id="m-success">—</span></span>
    <span class="metric">time to target<br><span class="big" id="m-ttt">—</span></span>
    <span class="metric">trials<br><span class="big" id="m-trials">0</span></span></div>
   <div class="dim" id="m-cl"></div>
   <div class="dim" id="task-phase"></div>
  </div>
  <div class="panel" style="margin-top:10px"><h2>Event log</h2><div id="events"></div></div>
 </section>
 <section>
  <div class="panel"><h2>Effector and target (top x–y, side x–z)</h2>
   <canvas id="view" width="640" height="420"></canvas>
   <div class="dim" id="effector-text"></div></div>
  <div class="panel" style="margin-top:10px"><h2>Decoded velocity (last 10 s)</h2>
   <canvas id="trace" width="640" height="170"></canvas></div>
 </section>
 <section>
  <div class="panel"><h2>Node health</h2>
   <table><thead><tr><th>process / node</th><th class="s">state</th><th>hb age ms</th>
    <th>recv</th><th>rej</th><th>drop</th><th>p50 µs</th><th>p99 µs</th><th>rst</th></tr></thead>
    <tbody id="health"></tbody></table>
   <div class="dim" id="latency"></div></div>
  <div class="panel" style="margin-top:10px"><h2>Firing rate by channel (Hz)</h2>
   <canvas id="heat" width="640" height="300"></canvas><div class="dim" id="heat-text"></div></div>
 </section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
let last = null;

// Commands go over a WebSocket kept open (a press is one frame on it: no request set-up,
// no handshake); over HTTP only while it is down.
let ws = null, wsSeq = 0;
const pending = new Map();
function openWs() {
  const w = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                          "/api/ws?token=" + encodeURIComponent(token));
  w.onopen = () => { ws = w; };
  w.onmessage = (m) => {
    const j = JSON.parse(m.data), done = pending.get(j.id);
    if (done) { pending.delete(j.id); done(j); }
  };
  w.onclose = () => {
    if (ws === w) ws = null;
    for (const done of pending.values()) done({ok: false, error: "command channel closed"});
    pending.clear();
    setTimeout(openWs, 500);
  };
}
openWs();
function request(body) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    const id = ++wsSeq;
    const reply = new Promise((resolve) => pending.set(id, resolve));
    ws.send(JSON.stringify(Object.assign({id: id}, body)));
    return reply;
  }
  return fetch("/api/command?token=" + encodeURIComponent(token), {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
    .then((r) => r.json());
}

// Every command: press time (wall clock, ms) and how long the session took to acknowledge.
window.lastCommand = null;
async function send(cmd, extra) {
  const pressed = performance.timeOrigin + performance.now();
  const via = (ws && ws.readyState === WebSocket.OPEN) ? "ws" : "http";
  window.lastCommand = {cmd: cmd, pressed_ms: pressed, ack_ms: null, ok: null, via: via};
  try {
    const j = await request(Object.assign({cmd: cmd}, extra || {}));
    const ack = performance.timeOrigin + performance.now() - pressed;
    Object.assign(window.lastCommand, {ack_ms: ack, ok: j.ok, reply: j});
    $("msg").textContent = j.ok ? (cmd + ": done (acknowledged in " + ack.toFixed(0) + " ms)")
                                : (cmd + " refused: " + j.error);
  } catch (e) { $("msg").textContent = cmd + " failed: " + e; }
}
// E-STOP acts on press (pointerdown), not on release.
$("estop").addEventListener("pointerdown", (ev) => { ev.preventDefault(); send("estop"); });
$("estop").addEventListener("keydown", (ev) => { if (ev.key === "Enter") send("estop"); });
$("resume").addEventListener("click", () => send("resume"));
$("pause").addEventListener("click", () => send("pause"));
$("start").addEventListener("click", () => send("start"));
$("assist").addEventListener("input", () => $("assist-v").textContent = (+$("assist").value).toFixed(2));
$("gain").addEventListener("input", () => $("gain-v").textContent = (+$("gain").value).toFixed(2));
$("assist-apply").addEventListener("click", () => send("assist", {level: +$("assist").value}));
$("gain-apply").addEventListener("click", () => send("gain", {gain: +$("gain").value}));
document.addEventListener("keydown", (ev) => {
  if (ev.code === "Space" || ev.key === " ") { ev.preventDefault(); if (!ev.repeat) send("estop"); }
}, true);

// Touch the DOM only where something changed (layout and paint cost CPU the e-stop path needs).
const shown = new Map();
function setHTML(id, html) { if (shown.get(id) !== html) { shown.set(id, html); $(id).innerHTML = html; } }
function fmt(v, d) { return (v === null || v === undefined) ? "—" : (+v).toFixed(d); }

function drawView(s) {
  const c = $("view"), g = c.getContext("2d"), W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  const effs = Object.entries(s.effectors || {});
  const pts = [];
  for (const [, e] of effs) { if (e.position) pts.push(e.position); for (const p of e.trail || []) pts.push(p); }
  if (s.task && s.task.target) pts.push(s.task.target);
  if (!pts.length) return;
  // fixed square scale around the points seen (stable between frames)
  let lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (const p of pts) for (let i = 0; i < 3; i++) { lo[i] = Math.min(lo[i], p[i]); hi[i] = Math.max(hi[i], p[i]); }
  const span = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2], 0.2) * 1.25;
  const topW = W * 0.66, sideX0 = topW + 10, sideW = W - sideX0;
  const sc = Math.min(topW, H) / span;
  const cx = (lo[0] + hi[0]) / 2, cy = (lo[1] + hi[1]) / 2, cz = (lo[2] + hi[2]) / 2;
  const top = (p) => [topW / 2 + (p[0] - cx) * sc, H / 2 - (p[1] - cy) * sc];
  const side = (p) => [sideX0 + sideW / 2 + (p[0] - cx) * sc * 0.5, H / 2 - (p[2] - cz) * sc];
  g.strokeStyle = "#2d333b"; g.strokeRect(0.5, 0.5, topW - 1, H - 1); g.strokeRect(sideX0 + 0.5, 0.5, sideW - 1, H - 1);
  g.fillStyle = "#8a949e"; g.font = "11px sans-serif"; g.fillText("top (x→, y↑)", 6, 14); g.fillText("side (x→, z↑)", sideX0 + 6, 14);
  if (s.task && s.task.target && s.task.phase !== "idle") {
    for (const f of [top, side]) {
      const [x, y] = f(s.task.target);
      g.beginPath(); g.arc(x, y, Math.max(3, s.task.radius * sc * (f === side ? 1 : 1)), 0, 2 * Math.PI);
      g.strokeStyle = s.task.phase === "hold" ? "#3fb950" : "#f85149"; g.lineWidth = 2; g.stroke();
    }
  }
  for (const [name, e] of effs) {
    g.lineWidth = 1; g.strokeStyle = "#1f6feb"; g.beginPath();
    (e.trail || []).forEach((p, i) => { const [x, y] = top(p); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
    if (!e.position) continue;
    for (const f of [top, side]) {
      const [x, y] = f(e.position);
      g.beginPath(); g.arc(x, y, 6, 0, 2 * Math.PI);
      g.fillStyle = e.estopped ? "#f85149" : "#79c0ff"; g.fill();
    }
  }
}

function drawTrace(s) {
  const c = $("trace"), g = c.getContext("2d"), W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  const tr = s.trace || [];
  g.strokeStyle = "#2d333b"; g.beginPath(); g.moveTo(0, H / 2); g.lineTo(W, H / 2); g.stroke();
  if (tr.length < 2) { g.fillStyle = "#8a949e"; g.fillText("no decoded intent (open loop or no decoder)", 8, 16); return; }
  const t1 = tr[tr.length - 1][0], t0 = t1 - 10;
  let vmax = 0.05; for (const [, v] of tr) for (const x of v) vmax = Math.max(vmax, Math.abs(x));
  const colours = ["#79c0ff", "#f0883e", "#3fb950", "#d2a8ff"];
  const n = tr[0][1].length;
  for (let k = 0; k < n; k++) {
    g.strokeStyle = colours[k % 4]; g.beginPath();
    tr.forEach(([t, v], i) => { const x = (t - t0) / 10 * W, y = H / 2 - v[k] / vmax * (H / 2 - 6);
      i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
  g.fillStyle = "#8a949e"; g.fillText("±" + vmax.toFixed(2) + " (task units/s)", 6, 12);
}

function drawHeat(s) {
  const c = $("heat"), g = c.getContext("2d"), W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  const r = s.rates || []; if (!r.length) return;
  const cols = Math.ceil(Math.sqrt(r.length * W / H)), rows = Math.ceil(r.length / cols);
  const cw = W / cols, ch = H / rows;
  let mx = 1; for (const x of r) mx = Math.max(mx, x);
  r.forEach((x, i) => {
    const f = Math.min(1, x / mx);
    g.fillStyle = `rgb(${Math.round(255 * Math.min(1, 2 * f))},${Math.round(255 * Math.max(0, 2 * f - 1))},${Math.round(80 * (1 - f))})`;
    g.fillRect((i % cols) * cw, Math.floor(i / cols) * ch, cw - 1, ch - 1);
  });
  $("heat-text").textContent = r.length + " channels, colour scale 0–" + mx.toFixed(0) + " Hz (smoothed 0.5 s)";
}

function render(s) {
  last = s;
  const h = s.health || {};
  $("t-session").textContent = fmt(s.t_s, 1);
  $("n-msgs").textContent = s.counts.messages;
  $("block").textContent = s.block || (h.waiting_for ? ("waiting: " + h.waiting_for) : "—");
  $("observer").textContent = s.observer + " session";
  const b = $("banner");
  const estopped = h.estopped || Object.values(s.effectors || {}).some((e) => e.estopped);
  if (s.ended) { b.className = "ended"; b.textContent = "SESSION ENDED"; }
  else if (estopped) { b.className = "estop"; b.textContent = "E-STOP LATCHED"; }
  else if (h.held || h.waiting_for) { b.className = "held"; b.textContent = h.waiting_for ? ("HELD before " + h.waiting_for + " — press Start block") : "HOLD at next block"; }
  else { b.className = ""; b.textContent = "running"; }
  const m = s.metrics.block, cl = s.metrics.closed_loop;
  $("m-success").textContent = m.success_rate === null ? "—" : (100 * m.success_rate).toFixed(0) + " %";
  $("m-ttt").textContent = m.mean_time_to_target_s === null ? "—" : m.mean_time_to_target_s.toFixed(2) + " s";
  $("m-trials").textContent = m.trials;
  $("m-cl").textContent = "closed loop so far: " + cl.trials + " trials, success " +
    (cl.success_rate === null ? "—" : (100 * cl.success_rate).toFixed(0) + " %") + ", time to target " +
    (cl.mean_time_to_target_s === null ? "—" : cl.mean_time_to_target_s.toFixed(2) + " s");
  $("task-phase").textContent = s.task.block ? ("trial " + s.task.trial + " · " + s.task.phase + " · " + s.task.mode) : "";
  const rows = [];
  for (const [g, p] of Object.entries(h.groups || {})) {
    const nodes = Object.entries(p.nodes || {});
    if (!nodes.length) nodes.push([g === "broker" ? "" : g, {}]);
    for (const [n, info] of nodes) {
      const c = info.counters || {};
      rows.push(`<tr><td>${g}${n && n !== g ? " / " + n : ""}</td><td class="s st-${p.state}">${p.state}</td>` +
        `<td>${fmt(p.hb_age_ms, 0)}</td><td>${c.received ?? ""}</td><td>${c.rejected ?? ""}</td>` +
        `<td>${c.dropped ?? ""}</td><td>${fmt(info.latency_p50_us, 0)}</td><td>${fmt(info.latency_p99_us, 0)}</td>` +
        `<td>${p.restarts ?? ""}</td></tr>`);
    }
  }
  setHTML("health", rows.join("") || `<tr><td colspan="9">${h.error || "no status yet"}</td></tr>`);
  $("latency").textContent = s.latency_ms ? ("neural frame → effector state: p50 " + s.latency_ms.p50.toFixed(1) +
    " ms, p99 " + s.latency_ms.p99.toFixed(1) + " ms") : "";
  const effs = Object.entries(s.effectors || {}).map(([n, e]) =>
    `${n}: (${e.position.map((x) => x.toFixed(3)).join(", ")}) m, ${(e.speed * 1000).toFixed(0)} mm/s` +
    (e.estopped ? " — E-STOPPED" : "") + (e.guards.length ? " [" + e.guards.join(",") + "]" : ""));
  $("effector-text").textContent = effs.join(" · ");
  setHTML("events", (s.events || []).slice().reverse().map((e) =>
    `<div class="k-${e.kind}">${e.t_s.toFixed(2)} ${e.kind} <span class="dim">${e.src} ${JSON.stringify(e.data)}</span></div>`).join(""));
  drawView(s); drawTrace(s); drawHeat(s);
}

// Warm the connection the commands use, and draw the first picture at once.
fetch("/api/state?token=" + encodeURIComponent(token)).then((r) => r.json()).then(render).catch(() => {});
const es = new EventSource("/api/stream?token=" + encodeURIComponent(token));
// At most one redraw per animation frame, of the newest snapshot (none piles up under load).
let latest = null;
es.onmessage = (m) => {
  if (latest === null) requestAnimationFrame(() => { const d = latest; latest = null; render(JSON.parse(d)); });
  latest = m.data;
};
es.onerror = () => { $("banner").className = "ended"; $("banner").textContent = "monitor disconnected"; };
</script>
</body></html>
"""
