// headroom dashboard: polls the API and draws plain SVG. Nothing is fetched from
// anywhere but this server.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const KINDS = ["decision", "no-suitable-host", "skipped", "approved", "migration-start",
  "migration-end", "failure", "reconciled", "drain", "mode-change"];
let session = { role: "viewer", csrf: "" };
let selectedVM = "";
const ROLES = { viewer: 1, operator: 2, admin: 3 };

function $(sel) { return document.querySelector(sel); }

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function api(path, opts) {
  opts = opts || {};
  opts.credentials = "same-origin";
  opts.headers = Object.assign({}, opts.headers || {});
  if (opts.method && opts.method !== "GET") opts.headers["X-Headroom-CSRF"] = session.csrf;
  const r = await fetch(path, opts);
  if (!r.ok) {
    const t = await r.text();
    throw new Error(r.status + " " + t.trim());
  }
  return r.json();
}

function showError(e) { $("#error").textContent = e ? String(e.message || e) : ""; }

function fmt(x) {
  if (x === undefined || x === null || isNaN(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

// chart draws series of [t, y] (t in ms) plus an optional band [[t, lo, hi]] and a
// capacity line into a new SVG.
function chart(opts) {
  const W = opts.width || 400, H = opts.height || 120, L = 44, R = 6, T = 6, B = 16;
  const s = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const all = [];
  for (const p of opts.line || []) all.push(p);
  for (const b of opts.band || []) { all.push([b[0], b[1]]); all.push([b[0], b[2]]); }
  if (all.length === 0) return s;
  let t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
  if (t1 <= t0) t1 = t0 + 1;
  let y1 = Math.max(...all.map(p => p[1]), opts.capacity || 0) * 1.08;
  if (!(y1 > 0)) y1 = 1;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => T + (1 - v / y1) * (H - T - B);
  if (opts.band && opts.band.length > 1) {
    const up = opts.band.map(b => `${x(b[0]).toFixed(1)},${y(b[2]).toFixed(1)}`);
    const lo = opts.band.slice().reverse().map(b => `${x(b[0]).toFixed(1)},${y(b[1]).toFixed(1)}`);
    s.append(svg("polygon", { class: "band", points: up.concat(lo).join(" ") }));
    s.append(svg("polyline", { class: "mean", points: opts.band.map(b => `${x(b[0]).toFixed(1)},${y(b[1]).toFixed(1)}`).join(" ") }));
  }
  if (opts.line && opts.line.length > 0) {
    s.append(svg("polyline", { class: "demand", points: opts.line.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") }));
  }
  if (opts.capacity > 0) {
    s.append(svg("line", { class: "capacity", x1: L, x2: W - R, y1: y(opts.capacity), y2: y(opts.capacity) }));
  }
  if (opts.now) s.append(svg("line", { class: "now", x1: x(opts.now), x2: x(opts.now), y1: T, y2: H - B }));
  const lab = (txt, yy) => { const t = svg("text", { x: 2, y: yy }); t.textContent = txt; s.append(t); };
  lab(fmt(y1), T + 8);
  lab("0", H - B);
  const tl = svg("text", { x: L, y: H - 3 }); tl.textContent = (opts.title || ""); s.append(tl);
  return s;
}

function hostChart(h, res, interval) {
  const pts = h.points.filter(p => p.r && p.r[res]);
  if (pts.length === 0) return null;
  const line = pts.map(p => [p.t, p.r[res].demand]);
  const band = [];
  // Each cycle's one-step-ahead forecast, at the time it was for.
  for (const p of pts) {
    const f = p.r[res];
    if (f.mean && f.mean.length > 0) band.push([p.t + interval * 1000, f.mean[0], f.upper[0]]);
  }
  const last = pts[pts.length - 1];
  const lf = last.r[res];
  // The latest forecast's whole path.
  for (let s = 1; s < (lf.mean || []).length; s++) band.push([last.t + (s + 1) * interval * 1000, lf.mean[s], lf.upper[s]]);
  return chart({ line, band, capacity: lf.capacity, now: last.t, title: res });
}

function renderHosts(st) {
  const box = $("#hosts");
  box.replaceChildren();
  for (const h of st.hosts) {
    const card = el("div", { class: "host-card" + (h.up ? "" : " down"), "data-host": h.id });
    const last = h.points.length ? h.points[h.points.length - 1].r : {};
    const p = last.cpu ? last.cpu.overload_probability : 0;
    const risk = el("span", { class: "risk" + (p >= 0.5 ? " high" : "") }, `P(overload) ${(p * 100).toFixed(0)}%`);
    card.append(el("h3", {}, h.id + (h.up ? "" : " (unreachable)")));
    card.append(el("div", { class: "meta" }, `${h.vms.length} VMs · `, risk,
      last.cpu ? ` · cpu ${fmt(last.cpu.demand)} / ${fmt(last.cpu.capacity)}` : "",
      last.mem ? ` · mem ${fmt(last.mem.demand)} / ${fmt(last.mem.capacity)} MiB` : ""));
    for (const res of ["cpu", "mem", "net", "disk"]) {
      const c = hostChart(h, res, st.interval_seconds);
      if (c) card.append(c);
    }
    box.append(card);
  }
  $("#mode").textContent = st.mode;
  $("#mode-select").value = st.mode;
  $("#cycle").textContent = st.last_cycle && !st.last_cycle.startsWith("0001") ? "last cycle " + new Date(st.last_cycle).toLocaleTimeString() : "no cycle yet";
  const qb = $("#quality tbody");
  qb.replaceChildren();
  for (const q of st.forecast_quality) {
    qb.append(el("tr", {}, el("td", {}, q.resource), el("td", {}, String(q.n)),
      el("td", {}, (q.coverage * 100).toFixed(1) + "%"), el("td", {}, (st.confidence * 100).toFixed(0) + "%"),
      el("td", {}, fmt(q.mae)), el("td", {}, fmt(q.baseline_mae))));
  }
}

function renderPending(list) {
  const tb = $("#pending tbody");
  tb.replaceChildren();
  const can = ROLES[session.role] >= ROLES.operator;
  for (const m of list) {
    const vm = m.vm_instance_id;
    const act = el("td", {});
    if (can) {
      const a = el("button", { class: "approve", "data-vm": vm }, "approve");
      a.addEventListener("click", () => act1("approve", vm));
      const r = el("button", { class: "reject", "data-vm": vm }, "reject");
      r.addEventListener("click", () => act1("reject", vm));
      act.append(a, " ", r);
    }
    tb.append(el("tr", { "data-vm": vm }, el("td", {}, vm), el("td", {}, m.target_host_id),
      el("td", {}, (m.reason.rule || "") + ": " + (m.reason.detail || "")), act));
  }
  if (list.length === 0) tb.append(el("tr", {}, el("td", { colspan: "4" }, "nothing awaits approval")));
}

async function act1(what, vm) {
  try {
    await api(`/api/${what}/${encodeURIComponent(vm)}`, { method: "POST" });
    showError(null);
    refresh();
  } catch (e) { showError(e); }
}

function renderInflight(list) {
  const tb = $("#inflight tbody");
  tb.replaceChildren();
  for (const m of list) {
    const bar = el("div", { class: "bar" }, el("div", {}));
    bar.firstChild.style.width = (100 * m.fraction).toFixed(0) + "%";
    tb.append(el("tr", { "data-vm": m.vm }, el("td", {}, m.vm), el("td", {}, `${m.source} → ${m.target}`),
      el("td", {}, m.phase || ""), el("td", {}, bar)));
  }
  if (list.length === 0) tb.append(el("tr", {}, el("td", { colspan: "4" }, "no migration running")));
}

function renderEvents(list) {
  const tb = $("#events tbody");
  tb.replaceChildren();
  for (const e of list.slice().reverse()) {
    let detail = e.message || "";
    if (e.reason) detail = e.reason.rule + ": " + (e.reason.detail || "");
    if (e.kind === "migration-end") detail = `${e.state} in ${fmt(e.seconds)} s, downtime ${fmt(e.downtime_ms)} ms`;
    if (e.error) detail += " error: " + e.error;
    tb.append(el("tr", { "data-kind": e.kind, "data-vm": e.vm || "" }, el("td", {}, String(e.seq)), el("td", {}, new Date(e.time).toLocaleTimeString()),
      el("td", {}, e.kind), el("td", {}, e.vm || e.host || ""),
      el("td", {}, e.source || e.target ? `${e.source || ""} → ${e.target || ""}` : ""), el("td", {}, detail)));
  }
}

async function renderVM() {
  const sel = $("#vm-select");
  if (!selectedVM) return;
  try {
    const v = await api("/api/vms/" + encodeURIComponent(selectedVM));
    const line = v.points.map(p => [p.t, p.demand.cpu]);
    const band = v.points.filter(p => p.upper.cpu > 0).map(p => [p.t + v.interval_seconds * 1000, p.mean.cpu, p.upper.cpu]);
    $("#vm-chart").replaceChildren(chart({ line, band, capacity: v.size.cpu, width: 1200, height: 160, title: `${v.id} on ${v.host}: cpu actual vs one-step forecast` }));
    const ex = await api("/api/explain/" + encodeURIComponent(selectedVM));
    $("#explain").textContent = ex.summary;
    const tb = $("#candidates tbody");
    tb.replaceChildren();
    for (const c of ex.candidates) {
      tb.append(el("tr", {}, el("td", {}, c.host_id), el("td", {}, c.rejected_by ? `rejected by ${c.rejected_by}: ${c.reason || ""}` : "feasible"),
        el("td", {}, c.rejected_by ? "" : fmt(c.total))));
    }
  } catch (e) { $("#explain").textContent = String(e.message || e); }
  sel.value = selectedVM;
}

async function refresh() {
  try {
    const kind = $("#ev-kind").value, vm = $("#ev-vm").value.trim();
    const q = new URLSearchParams({ limit: "25" });
    if (kind) q.set("kind", kind);
    if (vm) q.set("vm", vm);
    const [st, pending, inflight, events, vms] = await Promise.all([
      api("/api/state"), api("/api/pending"), api("/api/inflight"), api("/api/events?" + q), api("/api/vms")]);
    renderHosts(st);
    renderPending(pending);
    renderInflight(inflight);
    renderEvents(events);
    const sel = $("#vm-select");
    const ids = vms.map(v => v.id);
    if (sel.options.length !== ids.length) {
      sel.replaceChildren(...ids.map(id => el("option", { value: id }, id)));
    }
    if (!selectedVM && ids.length) selectedVM = ids[0];
    await renderVM();
    showError(null);
  } catch (e) { showError(e); }
}

async function start() {
  for (const k of KINDS) $("#ev-kind").append(el("option", { value: k }, k));
  try {
    session = await api("/api/session");
    $("#who").textContent = `${session.name} (${session.role})`;
    if (ROLES[session.role] >= ROLES.admin) $("#mode-control").hidden = false;
  } catch (e) { showError(e); }
  $("#mode-select").addEventListener("change", async ev => {
    try { await api("/api/mode", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode: ev.target.value }) }); refresh(); }
    catch (e) { showError(e); }
  });
  $("#vm-select").addEventListener("change", ev => { selectedVM = ev.target.value; renderVM(); });
  $("#ev-kind").addEventListener("change", refresh);
  $("#ev-vm").addEventListener("change", refresh);
  await refresh();
  setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", start);
