// Portcullis dashboard. Everything is drawn here, in plain SVG and DOM: the gateway only
// sends one snapshot a second (GET /dashboard/feed, Server-Sent Events). Values from the
// gateway are only ever set as text (textContent), never parsed as markup.
"use strict";

const MAX_POINTS = 3600; // what the page keeps: one hour of one-second points
const SVG = "http://www.w3.org/2000/svg";
const points = [];
let lastState = null;
let source = null;
let selected = null; // request id of the passport shown in detail

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function fmt(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (!Number.isFinite(n)) return "> max";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(digits) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(digits) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

function bytes(n) {
  if (!n) return "–";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

// ---- tabs (arrow keys move between them, as the ARIA tabs pattern says) ----
const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
}
tabs.forEach((t, i) => {
  t.addEventListener("click", () => select(t));
  t.addEventListener("keydown", (e) => {
    const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (d) { e.preventDefault(); select(tabs[(i + d + tabs.length) % tabs.length]); }
  });
});

// ---- charts ----
function chart(svg, series, opts = {}) {
  const W = 720, H = Number(svg.getAttribute("viewBox").split(" ")[3]), L = 46, B = 14, T = 6;
  svg.replaceChildren();
  const n = Math.max(2, ...series.map((s) => s.values.length));
  let max = opts.max || 0;
  for (const s of series) for (const v of s.values) if (Number.isFinite(v) && v > max) max = v;
  if (max <= 0) max = 1;
  const y = (v) => T + (H - T - B) * (1 - Math.min(v, max) / max);
  const x = (i) => L + ((W - L - 4) * i) / (n - 1);
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    svg.append(el("svg:line", { class: "grid", x1: L, x2: W, y1: yy, y2: yy }));
    svg.append(el("svg:text", { x: 2, y: yy + 3, text: fmt(max * f) }));
  }
  svg.append(el("svg:text", { x: L, y: H - 2, text: `last ${n} s` }));
  for (const s of series) {
    const pts = [];
    s.values.forEach((v, i) => { if (v !== null && v !== undefined) pts.push(`${x(i + n - s.values.length).toFixed(1)},${y(Number.isFinite(v) ? v : max).toFixed(1)}`); });
    if (pts.length) svg.append(el("svg:polyline", { class: s.cls, points: pts.join(" ") }));
  }
}

function drawCharts() {
  const recent = points.slice(-300);
  const col = (f) => recent.map(f);
  chart($("chart-rps"), [
    { cls: "s2", values: col((p) => p.rps[1]) },
    { cls: "s3", values: col((p) => p.rps[2]) },
    { cls: "s4", values: col((p) => p.rps[3]) },
    { cls: "s5", values: col((p) => p.rps[4]) },
  ]);
  chart($("chart-overhead"), [
    { cls: "q50", values: col((p) => p.p50_us) },
    { cls: "q99", values: col((p) => p.p99_us) },
    { cls: "q999", values: col((p) => p.p999_us) },
  ]);
  const limit = lastState ? lastState.max_in_flight : 0;
  chart($("chart-inflight"), [
    { cls: "inflight", values: col((p) => p.in_flight) },
    { cls: "limit", values: col(() => limit) },
  ]);
}

// ---- tables ----
function rows(tbody, list, make) {
  tbody.replaceChildren(...list.map(make));
}

function td(text, cls) {
  return el("td", { class: cls, text: text });
}

function drawGateway(s) {
  $("total-requests").textContent = String(s.requests_total);
  const p = points[points.length - 1];
  if (p) {
    $("rps").textContent = fmt(p.rps.reduce((a, b) => a + b, 0));
    $("eps").textContent = `${fmt(p.rps[3])} · ${fmt(p.rps[4])}`;
  }
  $("in-flight").textContent = `${s.in_flight} / ${s.max_in_flight}`;
  $("shed").textContent = `${s.shed.critical} · ${s.shed.normal} · ${s.shed.sheddable}`;
  $("config-hash").textContent = s.config_hash ? `config ${s.config_hash.slice(0, 12)}` : "";
}

function drawRoutes(s) {
  rows($("routes").tBodies[0], s.routes, (r) =>
    el("tr", { "data-route": r.name }, td(r.name), td(fmt(r.total, 0), "num"), td(fmt(r.rps), "num"),
      td(fmt(r.errors_per_s), r.errors_per_s > 0 ? "num bad" : "num"), td(fmt(r.p50_ms, 2), "num"), td(fmt(r.p99_ms, 2), "num")));
  const eps = [];
  for (const c of s.clusters) for (const e of c.endpoints) eps.push([c, e]);
  rows($("clusters").tBodies[0], eps, ([c, e]) =>
    el("tr", { "data-endpoint": e.addr },
      td(c.name), td(e.addr),
      td(e.ejected ? "ejected" : e.healthy ? "healthy" : "down", e.ejected || !e.healthy ? "bad" : "ok"),
      td(String(e.in_flight), "num"), td((100 * e.failure_rate).toFixed(1) + " %", "num"),
      td(fmt(e.peak_ewma_ms, 2), "num"), td(String(e.ejections), "num"), td(fmt(e.requests, 0), "num")));
}

function drawPlugins(s) {
  $("plugins-off").hidden = s.plugins !== null;
  const list = s.plugins || [];
  rows($("plugins").tBodies[0], list, (p) => {
    const st = p.stats || { calls: 0, failures: {}, cpu_seconds: 0 };
    const failures = Object.entries(st.failures || {}).filter(([, n]) => n > 0);
    const failText = failures.length ? failures.map(([k, n]) => `${k} ${n}`).join(", ") : "0";
    const cpu = st.calls ? (1e6 * st.cpu_seconds) / st.calls : null;
    const q = st.quarantined_for_ms ? `${Math.ceil(st.quarantined_for_ms / 1000)} s` : "–";
    const last = (st.last_error && st.last_error.error) || p.last_error || "";
    const del = el("button", { type: "button", "data-delete": p.name, text: "Delete" });
    del.addEventListener("click", () => remove(p.name));
    return el("tr", { "data-plugin": p.name },
      td(p.name), td(p.version || "–"), td(p.kind || "–"),
      td(p.state, p.state === "loaded" ? "ok" : "bad"),
      td(String(st.calls), "num calls"), td(failText, failures.length ? "bad" : ""),
      td(fmt(cpu, 1), "num"), td(bytes(st.memory_high_water_bytes), "num"), td(q, "num"),
      td(last, "err"), el("td", {}, del));
  });
}

// ---- passports ----
const PHASES = [
  ["admit", "admission", /^(ACCEPTED|HEADERS_RECEIVED)$/],
  ["filter", "filters", /FILTERS/],
  ["route", "routing", /^ROUTED$/],
  ["endpoint", "endpoint", /ENDPOINT|FANOUT/],
  ["conn", "connection", /UPSTREAM_PICKED|CONN_ACQUIRE/],
  ["upstream", "upstream", /REQ_HEADERS_SENT|REQ_BODY_SENT|CONN_ACQUIRED/],
  ["respond", "response", /RESP_|DONE/],
];
function phaseOf(state) {
  for (const [cls, , re] of PHASES) if (re.test(state)) return cls;
  return "fail";
}
$("phase-legend").append(...PHASES.map(([cls, name]) => el("span", {}, el("i", { class: "ph-" + cls }), name)),
  el("span", {}, el("i", { class: "ph-fail" }), "failure"), el("span", {}, el("i", { class: "ph-call" }), "fan-out call"));

function timeline(p) {
  const W = 600, row = 10, calls = p.calls || [];
  const H = row + 4 + calls.length * (row + 2);
  const total = Math.max(1, p.total_us, ...p.states.map((s) => s.at_us), ...calls.map((c) => c.end_us));
  const x = (us) => (W * us) / total;
  const svg = el("svg:svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `timeline of ${p.method} ${p.path}` });
  p.states.forEach((s, i) => {
    const end = i + 1 < p.states.length ? p.states[i + 1].at_us : Math.max(s.at_us, p.total_us);
    const r = el("svg:rect", { class: "ph-" + phaseOf(s.state), x: x(s.at_us), y: 0, width: Math.max(1, x(end) - x(s.at_us)), height: row });
    r.append(el("svg:title", { text: `${s.state} at ${s.at_us} µs` }));
    svg.append(r);
  });
  calls.forEach((c, i) => {
    const r = el("svg:rect", { class: c.error ? "ph-call-fail" : "ph-call", x: x(c.start_us), y: row + 4 + i * (row + 2), width: Math.max(1, x(c.end_us) - x(c.start_us)), height: row });
    r.append(el("svg:title", { text: `${c.cluster} ${c.status || c.error || ""} ${c.end_us - c.start_us} µs` }));
    svg.append(r);
  });
  return svg;
}

function drawPassports(s) {
  const box = $("passports");
  box.replaceChildren(...s.passports.map((p) => {
    const b = el("button", { type: "button", class: "passport", "data-request-id": p.request_id || "", "aria-pressed": String(p.request_id === selected) },
      el("span", { class: "what" }, el("b", { text: String(p.status), class: p.status >= 500 ? "bad" : "" }), `${p.method} ${p.path} · ${fmt(p.total_us / 1000, 2)} ms`),
      timeline(p));
    b.addEventListener("click", () => { selected = p.request_id; detail(p); drawPassports(lastState); });
    return b;
  }));
  const shown = s.passports.find((p) => p.request_id === selected);
  if (shown) detail(shown);
}

function detail(p) {
  const d = $("passport-detail");
  const states = el("ol", { class: "states" }, ...p.states.map((s) =>
    el("li", { class: "ph-text-" + phaseOf(s.state) }, el("b", { text: s.state }), ` ${s.at_us} µs`)));
  const calls = (p.calls || []).length
    ? el("table", {}, el("thead", {}, el("tr", {}, ...["cluster", "endpoint", "status", "error", "attempts", "µs"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...p.calls.map((c) => el("tr", {}, td(c.cluster), td(c.endpoint || "–"), td(String(c.status || "–")), td(c.error || ""), td(String(c.attempts), "num"), td(String(c.end_us - c.start_us), "num")))))
    : null;
  d.replaceChildren(...[
    el("h3", { text: `${p.method} ${p.path} → ${p.status}` }),
    el("p", { text: `request ${p.request_id || "–"} · route ${p.route || "–"} · cluster ${p.cluster || "–"} · endpoint ${p.endpoint || "–"} · ${p.attempts} upstream attempt(s) · ${p.protocol} · total ${p.total_us} µs, overhead ${p.overhead_us} µs${p.detail ? " · " + p.detail : ""}` }),
    el("p", { text: "plugins that acted: " + ((p.plugins || []).join(", ") || "none") }),
    states, calls].filter(Boolean));
}

// ---- plugin upload and delete (the admin token, never stored) ----
function adminHeaders() {
  const t = $("admin-token").value;
  return t ? { authorization: "Bearer " + t } : {};
}

$("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("upload-result");
  const name = $("upload-name").value.trim();
  const file = $("upload-wasm").files[0];
  if (!file) { out.textContent = "choose a .wasm file"; return; }
  const form = new FormData();
  form.append("manifest", new Blob([$("upload-manifest").value], { type: "application/toml" }), "manifest.toml");
  form.append("wasm", file, file.name);
  out.textContent = "uploading…";
  out.className = "";
  try {
    const r = await fetch("/admin/plugins/" + encodeURIComponent(name), { method: "PUT", headers: adminHeaders(), body: form, credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    out.textContent = r.ok ? `loaded ${name} ${body.version || ""}`.trim() : `refused (${r.status}): ${body.error || r.statusText}`;
    out.className = r.ok ? "ok" : "fail";
  } catch (err) {
    out.textContent = "upload failed: " + err;
    out.className = "fail";
  }
});

async function remove(name) {
  const out = $("upload-result");
  const r = await fetch("/admin/plugins/" + encodeURIComponent(name), { method: "DELETE", headers: adminHeaders(), credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  out.textContent = r.ok ? `deleted ${name}` : `refused (${r.status}): ${body.error || r.statusText}`;
  out.className = r.ok ? "ok" : "fail";
}

// ---- feed and sign-in ----
function status(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = cls || "";
}

function connect() {
  if (source) source.close();
  source = new EventSource("/dashboard/feed");
  source.addEventListener("history", (e) => {
    const h = JSON.parse(e.data);
    points.length = 0;
    points.push(...h.points);
    status("live", "live");
  });
  source.addEventListener("tick", (e) => {
    const t = JSON.parse(e.data);
    if (t.point) { points.push(t.point); if (points.length > MAX_POINTS) points.shift(); }
    lastState = t.state;
    status("live", "live");
    drawGateway(t.state); drawRoutes(t.state); drawPlugins(t.state); drawPassports(t.state); drawCharts();
  });
  source.addEventListener("error", () => {
    status("reconnecting…", "down");
    // A session that expired (or a rotated token) shows as a refused feed: ask again.
    fetch("/dashboard/feed", { method: "HEAD", credentials: "same-origin" }).then((r) => {
      if (r.status === 401) { source.close(); showLogin(); }
    }).catch(() => {});
  });
}

function showLogin() {
  $("login").hidden = false;
  $("tabs").hidden = true;
  document.querySelector("main").hidden = true;
  status("signed out", "down");
  $("login-token").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/dashboard/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: $("login-token").value }), credentials: "same-origin" });
  $("login-token").value = "";
  if (!r.ok) { $("login-error").textContent = "wrong token"; return; }
  $("login-error").textContent = "";
  $("login").hidden = true;
  $("tabs").hidden = false;
  document.querySelector("main").hidden = false;
  $("logout").hidden = false;
  connect();
});

$("logout").addEventListener("click", async () => {
  await fetch("/dashboard/logout", { method: "POST", credentials: "same-origin" });
  if (source) source.close();
  $("logout").hidden = true;
  showLogin();
});

(async function start() {
  const r = await fetch("/dashboard/feed", { method: "HEAD", credentials: "same-origin" });
  if (r.status === 401) { showLogin(); return; }
  // The cookie is HttpOnly, so the gateway says whether this page watches by a session.
  $("logout").hidden = r.headers.get("portcullis-signed-in") !== "true";
  connect();
})();
