// blockwise console: draws every page from the host's JSON. Names and
// messages are only ever set as text (el() uses text nodes), never as
// markup, so a disk named <script> shows as text.
"use strict";
let csrf = "";
let active = [];       // jobs queued or running (from the event stream)
let version = -1;      // the points index's version: a change reloads the page's data
const main = document.getElementById("main");

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function bytes(n) {
  if (n === undefined || n === null) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]; let i = 0; let v = Number(n);
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + u[i];
}
function when(t) { return t ? new Date(t).toLocaleString() : "never"; }
function secs(s) { return s === undefined ? "-" : s < 60 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min"; }
function link(href, text, cls) { return el("a", {href, class: cls}, text); }
const enc = encodeURIComponent;

async function api(method, path, body) {
  const opts = {method, credentials: "same-origin", headers: {}};
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  if (r.status === 401) { location.href = "/console/login"; throw new Error("logged out"); }
  const text = await r.text();
  const v = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((v && (v.detail || v.title)) || r.statusText);
  return v;
}
function problem(err) { return el("p", {class: "error", id: "error"}, String(err.message || err)); }

// ---- pages ----
async function overview() {
  const o = await api("GET", "/console/api/overview");
  const ds = o.datastore;
  const cards = el("div", {class: "cards"},
    el("div", {class: "card"}, el("b", {id: "ov-disks"}, o.disks), "disks"),
    el("div", {class: "card"}, el("b", {id: "ov-protected"}, o.protected), "protected"),
    el("div", {class: "card"}, el("b", {id: "ov-unprotected"}, o.unprotected), "in no policy"),
    el("div", {class: "card"}, el("b", {id: "ov-failing", class: o.failing ? "error" : ""}, o.failing), "failing"),
    el("div", {class: "card"}, el("b", {id: "ov-stale", class: o.stale ? "stale" : ""}, o.stale), "stale"),
    el("div", {class: "card"}, el("b", {id: "ov-running"}, o.running), "jobs running"),
    el("div", {class: "card"}, el("b", {}, bytes(ds.free)), "free of ", bytes(ds.size), el("br"),
      "provisioned ", bytes(ds.provisioned), " (", (ds.overcommit * 100).toFixed(0), "% of the file system), allocated ", bytes(ds.allocated)));
  const repos = el("table", {id: "repos"}, el("tr", {}, el("th", {}, "policy"), el("th", {}, "repository"), el("th", {}, "points"),
    el("th", {class: "num"}, "logical"), el("th", {class: "num"}, "after dedup"), el("th", {class: "num"}, "stored")),
    o.repositories.map(r => el("tr", {}, el("td", {}, r.policy), el("td", {}, r.location), el("td", {class: "num"}, r.size ? r.size.points : "-"),
      el("td", {class: "num"}, r.size ? bytes(r.size.logical) : "-"), el("td", {class: "num"}, r.size ? bytes(r.size.unique) : "-"),
      el("td", {class: "num"}, r.size ? bytes(r.size.stored) : "-"))));
  const rows = o.sources.map(s => el("tr", {class: "src", "data-disk": s.disk},
    el("td", {}, link("#/source/" + enc(s.disk), s.disk, "source"), s.labels ? el("span", {class: "muted labels"}, " " + s.labels) : ""),
    el("td", {}, s.policies.length ? s.policies.join(", ") : el("span", {class: "stale"}, "unprotected")),
    el("td", {}, when(s.lastSuccess)),
    el("td", {}, s.lastJob ? link("#/job/" + enc(s.lastJob), s.lastState) : "-"),
    el("td", {class: s.failuresSince ? "error num" : "num"}, s.failuresSince),
    el("td", {class: "stale"}, s.stale ? "STALE" : ""),
    el("td", {class: "num"}, bytes(s.size))));
  return [el("h2", {}, "Overview"), cards,
    el("h3", {}, "Repositories"),
    el("p", {class: "muted"}, "Logical: every point's data counted in full, as separate full copies would take. After dedup: each distinct chunk once. Stored: the pack files, compressed and encrypted."),
    repos,
    el("h3", {}, "Disks (failing and stale first)"),
    el("table", {id: "sources"}, el("tr", {}, ["disk", "policies", "last success", "last job", "failures since", "", "size"].map(h => el("th", {}, h))), rows)];
}

async function grid() {
  const g = await api("GET", "/console/api/grid?days=30");
  const head = el("tr", {}, el("th", {}, "disk"), g.days.map((d, i) => el("th", {title: d}, i % 7 === 0 ? d.slice(5) : "")));
  const rows = g.rows.map(r => el("tr", {"data-source": r.source}, el("td", {}, link("#/source/" + enc(r.source), r.source)),
    r.cells.map((c, i) => {
      if (!c) return el("td", {}, el("span", {class: "cell s-"}));
      const m = /^([sfic])(\d+)(?:x(\d+))?$/.exec(c) || [];
      const state = {s: "succeeded", f: "failed", i: "interrupted", c: "canceled"}[m[1]] || "";
      return el("td", {}, el("a", {href: "#/job/job-" + m[2], class: "cell s-" + state, title: g.days[i] + ": " + state + " (" + (m[3] || 1) + " runs)"}));
    })));
  return [el("h2", {}, "Backups per disk and day (UTC, last 30 days)"), el("table", {class: "grid", id: "grid"}, head, rows)];
}

function chart(points, value, label, fmt) {
  const W = 600, H = 120, P = 30;
  const ps = points.filter(p => p.state === "succeeded");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("width", W); svg.setAttribute("height", H);
  const t = document.createElementNS(svg.namespaceURI, "text");
  t.setAttribute("x", 4); t.setAttribute("y", 12); t.textContent = label;
  svg.append(t);
  if (ps.length === 0) return svg;
  const t0 = new Date(ps[0].time).getTime(), t1 = new Date(ps[ps.length - 1].time).getTime();
  const vmax = Math.max(...ps.map(value), 1);
  const xy = p => [P + (t1 > t0 ? (new Date(p.time).getTime() - t0) / (t1 - t0) : 0.5) * (W - 2 * P), H - P / 2 - value(p) / vmax * (H - P)];
  const line = document.createElementNS(svg.namespaceURI, "polyline");
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1e88e5");
  line.setAttribute("points", ps.map(p => xy(p).join(",")).join(" "));
  svg.append(line);
  const m = document.createElementNS(svg.namespaceURI, "text");
  m.setAttribute("x", W - 4); m.setAttribute("y", 12); m.setAttribute("text-anchor", "end"); m.textContent = "max " + fmt(vmax);
  svg.append(m);
  return svg;
}

async function source(name) {
  const s = await api("GET", "/console/api/sources/" + enc(name));
  const pts = s.points.slice().reverse();
  const form = el("div", {id: "restore-form", hidden: true});
  function openRestore(p) {
    form.hidden = false;
    form.replaceChildren(el("h3", {}, "Restore point ", p.point.slice(0, 12), " of ", s.disk),
      el("p", {class: "muted"}, "Every chunk is checked against its hash as it leaves the repository."),
      el("label", {}, "to a new file on the host ", el("input", {id: "restore-file", placeholder: "/var/lib/restore/disk.raw", size: 40})), " or ",
      el("label", {}, "to a new disk ", el("input", {id: "restore-disk", placeholder: s.disk + "-restored"})), " or ",
      el("label", {}, el("input", {id: "restore-rollback", type: "checkbox"}), " roll " + s.disk + " back in place (stop its VM first; only what changed since is written)"), " ",
      el("button", {id: "restore-go", onclick: async () => {
        const file = document.getElementById("restore-file").value.trim(), disk = document.getElementById("restore-disk").value.trim();
        const rollback = document.getElementById("restore-rollback").checked;
        try {
          const r = await api("POST", "/v1/policies/" + enc(p.policy) + "/restore", {point: p.point, toFile: file || undefined, toDisk: disk || undefined, rollback: rollback || undefined});
          location.hash = "#/job/" + enc(r.jobs[0]);
        } catch (e) { form.append(problem(e)); }
      }}, "Restore"));
  }
  const rows = pts.map(p => el("tr", {class: "point", "data-job": p.job},
    el("td", {}, when(p.time)), el("td", {}, link("#/job/" + enc(p.job), p.state)), el("td", {}, p.policy),
    el("td", {class: "mono"}, p.point ? p.point.slice(0, 12) : ""), el("td", {}, p.mode || ""),
    el("td", {class: "num"}, bytes(p.size)), el("td", {class: "num"}, bytes(p.changed)), el("td", {class: "num"}, bytes(p.read)),
    el("td", {class: "num"}, bytes(p.new)), el("td", {class: "num"}, bytes(p.stored)), el("td", {class: "num"}, secs(p.seconds)),
    el("td", {class: "bottleneck"}, p.bottleneck ? p.bottleneck + " " + Math.round(p.share * 100) + "%" : ""),
    el("td", {class: "consistency"}, p.consistency || (p.point ? "-" : "")),
    el("td", {}, p.point && p.state === "succeeded" ? [
      el("button", {class: "restore", "data-point": p.point, onclick: () => openRestore(p)}, "Restore…"), " ",
      el("button", {class: "serve", "data-point": p.point, title: "serve read-only over NBD for instant recovery", onclick: async () => {
        try {
          const r = await api("POST", "/v1/policies/" + enc(p.policy) + "/serve-point", {point: p.point});
          location.hash = "#/job/" + enc(r.jobs[0]);
        } catch (e) { main.append(problem(e)); }
      }}, "Serve"), " ",
      link("#/files/" + enc(p.policy) + "/" + enc(p.point) + "?path=" + enc("/"), "Files", "files")] : "")));
  return [el("h2", {}, "Disk ", el("span", {id: "source-name"}, s.disk)),
    el("p", {}, "size ", bytes(s.size), "; policies: ", s.policies.length ? s.policies.join(", ") : "none (unprotected)"),
    chart(s.points, p => p.seconds, "duration", secs), " ", chart(s.points, p => p.read, "bytes read", bytes),
    form,
    el("table", {id: "points"}, el("tr", {}, ["time", "state", "policy", "point", "mode", "size", "changed", "read", "new", "stored", "duration", "slowest phase", "consistency", ""].map(h => el("th", {}, h))), rows)];
}

function progressCell(j) {
  const p = j.progress || {};
  return el("span", {class: "progress", "data-job": j.id},
    el("progress", {id: "prog-" + j.id, max: p.total || 1, value: p.done || 0}), " ",
    el("span", {class: "prog-text", id: "progtext-" + j.id}, (p.stage || j.state) + " " + bytes(p.done) + " / " + bytes(p.total) +
      (p.rate ? ", " + bytes(p.rate) + "/s" : "") + (p.etaSeconds ? ", " + secs(p.etaSeconds) + " left" : "")));
}
function cancelButton(j) {
  return el("button", {class: "cancel", "data-job": j.id, onclick: async () => { try { await api("POST", "/v1/jobs/" + enc(j.id) + "/cancel"); } catch (e) { main.append(problem(e)); } }}, "Cancel");
}
function activeTable() {
  return el("table", {id: "active"}, el("tr", {}, ["job", "kind", "policy", "disk", "progress", ""].map(h => el("th", {}, h))),
    active.map(j => el("tr", {"data-job": j.id}, el("td", {}, link("#/job/" + enc(j.id), j.id)), el("td", {}, j.kind), el("td", {}, j.policy || ""),
      el("td", {}, j.source || ""), el("td", {}, progressCell(j)), el("td", {}, cancelButton(j)))));
}

async function jobs(q) {
  const f = new URLSearchParams(q);
  if (!f.has("limit")) f.set("limit", "200");
  const list = await api("GET", "/v1/jobs?" + f.toString());
  const filter = el("form", {class: "inline", id: "job-filters", onsubmit: e => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const k of ["state", "kind", "policy", "source"]) { const v = document.getElementById("f-" + k).value.trim(); if (v) p.set(k, v); }
    location.hash = "#/jobs?" + p.toString();
  }}, ["state", "kind", "policy", "source"].map(k => el("label", {}, k + " ", el("input", {id: "f-" + k, value: f.get(k) || "", size: 12}))),
    el("button", {type: "submit"}, "Filter"));
  const hist = el("table", {id: "history"}, el("tr", {}, ["job", "kind", "policy", "disk", "state", "created", "duration", "error"].map(h => el("th", {}, h))),
    list.map(j => el("tr", {"data-job": j.id}, el("td", {}, link("#/job/" + enc(j.id), j.id)), el("td", {}, j.kind), el("td", {}, j.policy || ""),
      el("td", {}, j.source ? link("#/source/" + enc(j.source), j.source) : ""), el("td", {class: "s-text-" + j.state}, j.state), el("td", {}, when(j.created)),
      el("td", {}, j.started && j.ended ? secs((new Date(j.ended) - new Date(j.started)) / 1000) : ""), el("td", {class: "error"}, j.error || ""))));
  return [el("h2", {}, "Running"), el("div", {id: "active-wrap"}, activeTable()), el("h2", {}, "History"), filter, hist];
}

async function job(id) {
  const j = await api("GET", "/v1/jobs/" + enc(id));
  const log = await api("GET", "/v1/jobs/" + enc(id) + "/log");
  const stages = (j.progress.stages || []).map(s => s.name + " " + secs(s.seconds)).join(", ");
  return [el("h2", {}, "Job ", j.id, " — ", j.kind, j.source ? " of " + j.source : ""),
    el("p", {}, "state ", el("b", {id: "job-state"}, j.state), j.policy ? ", policy " + j.policy : "", ", attempt ", j.attempt, ", created ", when(j.created)),
    j.done ? "" : el("p", {}, progressCell(j), " ", cancelButton(j)),
    stages ? el("p", {}, "stages: ", stages) : "",
    j.error ? el("p", {class: "error"}, j.error) : "",
    j.summary ? el("pre", {id: "job-summary"}, JSON.stringify(j.summary, null, 2)) : "",
    el("h3", {}, "Log"), el("pre", {class: "log", id: "job-log"}, log.lines.map(l => new Date(l.time).toLocaleTimeString() + " " + l.level + " " + l.msg + "\n"))];
}

async function policies() {
  const list = await api("GET", "/v1/policies");
  const v = id => document.getElementById(id).value.trim();
  const split = s => s ? s.split(",").map(x => x.trim()).filter(Boolean) : undefined;
  const form = el("form", {class: "inline", id: "policy-create", onsubmit: async e => {
    e.preventDefault();
    try {
      await api("POST", "/v1/policies", {name: v("pc-name"), sources: {disks: split(v("pc-disks")), globs: split(v("pc-globs")),
        labels: v("pc-labels") ? v("pc-labels").split(";").map(x => x.trim()).filter(Boolean) : undefined},
        schedule: v("pc-schedule"), timeZone: v("pc-tz") || undefined, repository: {location: v("pc-repo"), password: document.getElementById("pc-password").value},
        retention: {last: Number(v("pc-keep-last")) || undefined}, maxConcurrent: 1});
      route();
    } catch (err) { form.append(problem(err)); }
  }},
    el("label", {}, "name ", el("input", {id: "pc-name", required: true, size: 12})),
    el("label", {}, "disks ", el("input", {id: "pc-disks", placeholder: "vm1,vm2", size: 14})),
    el("label", {}, "globs ", el("input", {id: "pc-globs", placeholder: "web-*", size: 10})),
    el("label", {}, "label selectors ", el("input", {id: "pc-labels", placeholder: "tier=gold,env!=dev; role=db", size: 18})),
    el("label", {}, "schedule ", el("input", {id: "pc-schedule", value: "0 2 * * *", size: 12})),
    el("label", {}, "time zone ", el("input", {id: "pc-tz", placeholder: "UTC", size: 12})),
    el("label", {}, "repository ", el("input", {id: "pc-repo", required: true, size: 24})),
    el("label", {}, "password ", el("input", {id: "pc-password", type: "password", required: true, autocomplete: "new-password"})),
    el("label", {}, "keep last ", el("input", {id: "pc-keep-last", type: "number", min: 0, size: 4})),
    el("button", {type: "submit", id: "pc-create"}, "Create policy"));
  const rows = list.map(p => el("tr", {"data-policy": p.name}, el("td", {}, p.name),
    el("td", {}, [...(p.sources.disks || []), ...(p.sources.globs || []), ...(p.sources.labels || []).map(l => "label:" + l)].join(", ")),
    el("td", {}, p.schedule, p.timeZone ? " (" + p.timeZone + ")" : ""), el("td", {}, p.repository.location),
    el("td", {}, p.status && p.status.nextRun ? when(p.status.nextRun) : "-"),
    el("td", {}, p.status ? (p.status.keyReady ? "key held" : (p.status.keyError ? el("span", {class: "error"}, p.status.keyError) : "opening…")) : ""),
    el("td", {}, el("button", {class: "run", "data-policy": p.name, onclick: async () => {
      try { await api("POST", "/v1/policies/" + enc(p.name) + "/run", {what: "backup"}); location.hash = "#/jobs"; } catch (e) { main.append(problem(e)); }
    }}, "Run now"))));
  return [el("h2", {}, "Policies"), el("table", {id: "policies"}, el("tr", {}, ["name", "sources", "schedule", "repository", "next run", "key", ""].map(h => el("th", {}, h))), rows),
    el("h3", {}, "New policy"), form];
}


// ---- replication ----
// The page's tables are redrawn in place on "replication" events and on
// job ends (onLive), so a confirmation or a form being filled survives.
function lag(g) {
  if (!g.lastPoint) return "-";
  return secs(g.lastPointAge || 0) + " (RPO " + g.rpo + ")";
}
function confirmBox(msg, label, fn) {
  const box = document.getElementById("confirm");
  box.hidden = false;
  box.replaceChildren(el("p", {}, msg),
    el("button", {id: "confirm-yes", onclick: async () => { box.hidden = true; await fn(); }}, label), " ",
    el("button", {id: "confirm-no", onclick: () => { box.hidden = true; }}, "Cancel"));
}
// act posts an action; a task answer links to its job.
async function act(path, body) {
  const msg = document.getElementById("repl-msg");
  try {
    const r = await api("POST", path, body);
    msg.replaceChildren(r && r.job ? el("span", {}, r.kind + " started: ", link("#/job/" + enc(r.job), r.job, "job")) : "done");
    if (onLive) onLive();
  } catch (e) { msg.replaceChildren(problem(e)); }
}
function groupRow(g) {
  const p = "/v1/replications/" + enc(g.name);
  const c = g.lastCycle;
  return el("tr", {"data-group": g.name}, el("td", {}, g.name),
    el("td", {}, g.disks.map(d => d.source + (d.target && d.target !== d.source ? "→" + d.target : "")).join(", ")),
    el("td", {}, g.target), el("td", {class: "state s-text-" + g.state}, g.state),
    el("td", {}, g.lastPoint ? "#" + g.lastPoint.seq + " " + when(g.lastPoint.time) : "none yet"),
    el("td", {class: "lag"}, lag(g)),
    el("td", {}, c ? when(c.started) + ", " + bytes(c.bytes) + " in " + secs(c.seconds) + (c.full ? " (full)" : "") : "-"),
    el("td", {class: "error"}, g.error || ""),
    el("td", {}, el("button", {class: "sync", onclick: () => act(p + "/sync")}, "Sync now"), " ",
      el("button", {class: g.paused ? "resume" : "pause", onclick: () => act(p + (g.paused ? "/resume" : "/pause"))}, g.paused ? "Resume" : "Pause"), " ",
      el("button", {class: "planned", onclick: () => confirmBox("Planned failover of " + g.name + " to " + g.target +
        ": this host's disks stop taking writes, a last cycle is sent, and the target takes over. (After a reprotect, this is the failback.)",
        "Fail over", () => act(p + "/failover"))}, "Planned failover / failback…")));
}
function replicaRow(r) {
  const p = "/v1/replicas/" + enc(r.group);
  const last = r.points.length ? r.points[r.points.length - 1] : null;
  const tests = Object.entries(r.tests || {});
  const state = r.state + (tests.length ? ", testing" : "") + (r.writesSincePoint ? ", written since the point" : "");
  return el("tr", {"data-replica": r.group}, el("td", {}, r.group),
    el("td", {}, r.disks.map(d => d.name).join(", ")), el("td", {class: "state"}, state),
    el("td", {class: "num"}, r.points.length), el("td", {}, last ? "#" + last.seq + " " + when(last.time) : "none yet"),
    el("td", {class: "tests"}, tests.map(([d, x]) => d + ": " + x).join(", ")),
    el("td", {}, tests.length
      ? el("button", {class: "test-cleanup", onclick: () => act(p + "/failover", {mode: "cleanup"})}, "End test")
      : el("button", {class: "test-failover", onclick: () => act(p + "/failover", {mode: "test"})}, "Test failover"), " ",
      el("button", {class: "failover", onclick: () => confirmBox("Disaster failover of " + r.group +
        ": the latest complete point becomes the writable disks here and cycles from the source stop. Do this only when the source is lost.",
        "Fail over", () => act(p + "/failover", {mode: "disaster"}))}, "Failover…"), " ",
      el("button", {class: "reprotect", onclick: () => reprotectForm(r)}, "Reprotect…")));
}
function reprotectForm(r) {
  const v = id => document.getElementById(id).value.trim();
  const box = document.getElementById("confirm");
  box.hidden = false;
  box.replaceChildren(el("p", {}, "Reprotect " + r.group + ": this host becomes the source toward the old one, which keeps its later writes in a kept snapshot."),
    el("label", {}, "old source https://HOST:PORT ", el("input", {id: "rp-target", size: 28})), " ",
    el("label", {}, "its replication token ", el("input", {id: "rp-token", type: "password", autocomplete: "off"})), " ",
    el("label", {}, "CA certificate (PEM) ", el("textarea", {id: "rp-ca", rows: 2, cols: 30})), " ",
    el("button", {id: "confirm-yes", onclick: async () => {
      box.hidden = true;
      await act("/v1/replicas/" + enc(r.group) + "/reprotect", {target: v("rp-target"), token: v("rp-token") || undefined, caCert: v("rp-ca") || undefined});
    }}, "Reprotect"), " ", el("button", {id: "confirm-no", onclick: () => { box.hidden = true; }}, "Cancel"));
}
let replDrawn = ""; // the data the replication tables show: a redraw with the same is skipped
async function replicationTables(force) {
  const d = await api("GET", "/console/api/replication");
  const key = JSON.stringify([d.groups.map(g => [g.name, g.state, g.paused, g.error, g.lastPoint, g.lastCycle]), d.replicas]);
  if (!force && key === replDrawn) return null;
  replDrawn = key;
  if (!d.enabled) return [el("p", {class: "muted"}, "This host runs no replication.")];
  return [el("h3", {}, "Groups this host protects (source)"),
    el("table", {id: "repl-groups"}, el("tr", {}, ["group", "disks", "target", "state", "last point", "lag", "last cycle", "error", ""].map(h => el("th", {}, h))), d.groups.map(groupRow)),
    el("h3", {}, "Replicas kept on this host (target)"),
    el("table", {id: "replicas"}, el("tr", {}, ["group", "disks", "state", "points", "latest", "test exports", ""].map(h => el("th", {}, h))), d.replicas.map(replicaRow))];
}
async function replication() {
  const live = el("div", {id: "repl-live"}, await replicationTables(true));
  onLive = async () => {
    try {
      const t = await replicationTables(false);
      if (t) live.replaceChildren(...t);
    } catch (e) { live.replaceChildren(problem(e)); }
  };
  // The confirmation and messages sit below the tables: the buttons do
  // not move under the pointer when they appear.
  return [el("h2", {}, "Replication"), live, el("div", {id: "confirm", class: "confirm", hidden: true}), el("div", {id: "repl-msg"})];
}

// ---- clones ----
async function clones() {
  const disks = await api("GET", "/console/api/disks");
  const v = id => document.getElementById(id).value.trim();
  const snaps = el("select", {id: "cl-snap"}, el("option", {value: ""}, "the disk now (full clone only)"));
  async function loadSnaps() {
    const src = v("cl-src");
    snaps.replaceChildren(el("option", {value: ""}, "the disk now (full clone only)"));
    if (!src) return;
    try {
      for (const s of await api("GET", "/v1/disks/" + enc(src) + "/snapshots")) snaps.append(el("option", {value: s.id}, s.id + " (" + when(s.created) + ")"));
    } catch (e) { form.append(problem(e)); }
  }
  const form = el("form", {class: "inline", id: "clone-form", onsubmit: async e => {
    e.preventDefault();
    try {
      const t = await api("POST", "/v1/disks/" + enc(v("cl-src")) + "/clone", {name: v("cl-name"), snapshot: snaps.value || undefined,
        linked: document.getElementById("cl-linked").checked || undefined, job: true});
      location.hash = "#/job/" + enc(t.job);
    } catch (err) { form.append(problem(err)); }
  }},
    el("label", {}, "disk ", el("select", {id: "cl-src", onchange: loadSnaps}, el("option", {value: ""}, "—"), disks.map(d => el("option", {value: d}, d)))),
    el("label", {}, "from ", snaps),
    el("label", {}, "new disk ", el("input", {id: "cl-name", required: true, size: 16})),
    el("label", {}, el("input", {id: "cl-linked", type: "checkbox"}), " linked (shares the snapshot's data, instant; needs a snapshot)"),
    el("button", {type: "submit", id: "cl-go"}, "Clone"));
  // No list of past clones here: filtering the history by kind reads
  // all of it (seconds with 100,000 jobs); the jobs page does that on
  // demand.
  return [el("h2", {}, "Clone a disk"),
    el("p", {class: "muted"}, "A full clone shares extents with its source where the file system can (reflink) and copies inside the kernel otherwise; a linked clone shares a snapshot's frozen layers and writes only its own changes."),
    form, el("p", {}, link("#/jobs?kind=clone", "Past clones", "muted"))];
}

// ---- files of a point ----
function filesURL(policy, point, path, archive) {
  const q = new URLSearchParams({path});
  if (archive) q.set("archive", archive);
  return "/v1/policies/" + enc(policy) + "/points/" + enc(point) + "/files?" + q.toString();
}
async function files(policy, point, path) {
  path = path || "/";
  const ents = await api("GET", filesURL(policy, point, path));
  const here = "#/files/" + enc(policy) + "/" + enc(point) + "?path=";
  const join = n => (path === "/" ? "" : path) + "/" + n;
  const crumbs = [link(here + enc("/"), "/", "crumb")];
  let acc = "";
  for (const part of path.split("/").filter(Boolean)) { acc += "/" + part; crumbs.push(" / ", link(here + enc(acc), part, "crumb")); }
  const rows = ents.map(f => {
    const p = join(f.name), dir = f.type === "dir" || f.type === "volume";
    return el("tr", {class: "file", "data-name": f.name, "data-type": f.type},
      el("td", {}, dir && !f.error ? link(here + enc(p), f.name, "name") : el("span", {class: "name"}, f.name)),
      el("td", {}, f.type + (f.description ? " (" + f.description + ")" : "") + (f.target ? " → " + f.target : "")),
      el("td", {class: "num"}, f.type === "dir" ? "" : bytes(f.size)), el("td", {class: "mono"}, f.mode || ""),
      el("td", {}, f.mtime ? when(f.mtime) : ""), el("td", {class: "error"}, f.error || ""),
      el("td", {}, f.type === "file" ? el("a", {class: "download", href: filesURL(policy, point, p), download: f.name}, "download")
        : dir && !f.error ? [el("a", {class: "tar", href: filesURL(policy, point, p, "tar"), download: f.name + ".tar"}, "tar"), " ",
          el("a", {class: "zip", href: filesURL(policy, point, p, "zip"), download: f.name + ".zip"}, "zip")] : ""));
  });
  return [el("h2", {}, "Files of point ", el("span", {class: "mono"}, point.slice(0, 12)), " (policy ", policy, ")"),
    el("p", {id: "crumbs"}, crumbs),
    el("p", {class: "muted"}, "Read straight from the repository, every chunk verified. Folders download as tar or zip."),
    el("table", {id: "files"}, el("tr", {}, ["name", "type", "size", "mode", "modified", "", ""].map(h => el("th", {}, h))), rows)];
}

// ---- routing and live updates ----
let drawing = 0;
let onLive = null; // the page's own redraw on live events, instead of route()
async function route() {
  const n = ++drawing;
  onLive = null;
  const [path, q] = (location.hash.slice(1) || "/").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  let view;
  try {
    if (parts[1] === "grid") view = await grid();
    else if (parts[1] === "replication") view = await replication();
    else if (parts[1] === "clones") view = await clones();
    else if (parts[1] === "files") view = await files(parts[2], parts[3], new URLSearchParams(q || "").get("path"));
    else if (parts[1] === "source") view = await source(parts.slice(2).join("/"));
    else if (parts[1] === "jobs") view = await jobs(q || "");
    else if (parts[1] === "job") view = await job(parts[2]);
    else if (parts[1] === "policies") view = await policies();
    else view = await overview();
  } catch (e) { view = [problem(e)]; }
  if (n === drawing) { main.replaceChildren(...[view].flat()); main.dataset.ready = String(n); }
}

function live() {
  const es = new EventSource("/console/events");
  const dot = document.getElementById("live");
  es.addEventListener("open", () => dot.classList.add("on"));
  es.addEventListener("error", () => dot.classList.remove("on"));
  es.addEventListener("jobs", ev => {
    const d = JSON.parse(ev.data);
    const before = active.map(j => j.id).join();
    active = d.active;
    const changed = before !== active.map(j => j.id).join();
    // Progress bars in place, no reload.
    for (const j of active) {
      const old = document.querySelector('.progress[data-job="' + CSS.escape(j.id) + '"]');
      if (old) old.replaceWith(progressCell(j));
    }
    const wrap = document.getElementById("active-wrap");
    if (wrap && changed) wrap.replaceChildren(activeTable());
    const ended = version !== -1 && d.version !== version;
    version = d.version;
    const page = location.hash.split("/")[1] || "";
    // A job's page follows its job: state, progress, log lines.
    const onJob = page === "job" && active.some(j => location.hash.endsWith("/" + enc(j.id)));
    if (ended && onLive) onLive();
    else if (ended || (changed && page.startsWith("job")) || onJob) route();
  });
  es.addEventListener("replication", () => { if (onLive) onLive(); });
}

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/console/logout", {method: "POST", headers: {"X-CSRF-Token": csrf}, credentials: "same-origin"});
  location.href = "/console/login";
});
window.addEventListener("hashchange", route);
(async () => {
  try { csrf = (await api("GET", "/console/session")).csrf; } catch (e) { main.replaceChildren(problem(e)); return; }
  route();
  live();
})();
