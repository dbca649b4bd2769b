// The SwarmDirector dashboard: plain DOM, no build step. Every read and action goes through
// the HTTP API with the token the operator typed (kept in this tab's sessionStorage, sent
// as a bearer header, never in a URL or a cookie: no request can be forged cross-site).
// Live updates come from GET /v1/events, read with fetch so the token travels in a header.
"use strict";

const state = { token: sessionStorage.getItem("swarm-token"), live: null, handlers: new Set(), traceUrl: "" };
const $ = (sel) => document.querySelector(sel);
const esc = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { logout("That token is not accepted."); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(body?.error?.message || `${response.status}`);
  return body;
}

function logout(message) {
  sessionStorage.removeItem("swarm-token");
  state.token = null;
  if (state.live) state.live.abort();
  $("#nav").hidden = true; $("#view").hidden = true; $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  state.token = $("#token").value.trim();
  try {
    await api("/v1/queues");
    sessionStorage.setItem("swarm-token", state.token);
    $("#token").value = "";
    start();
  } catch (error) {
    if (error.message !== "unauthorized") $("#login-error").textContent = error.message;
  }
}

function start() {
  $("#login").hidden = true; $("#nav").hidden = false; $("#view").hidden = false;
  listen();
  route();
}

// Server-sent events over fetch: `event:` and `data:` lines, a blank line ends one.
async function listen() {
  if (state.live) state.live.abort();
  state.live = new AbortController();
  try {
    const response = await fetch("/v1/events", { headers: { Authorization: `Bearer ${state.token}` }, signal: state.live.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    $("#live").textContent = "live";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        let kind = "message", data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) { const parsed = JSON.parse(data); state.handlers.forEach((h) => h(kind, parsed)); }
      }
    }
  } catch (error) { if (error.name === "AbortError") return; }
  $("#live").textContent = "reconnecting…";
  setTimeout(() => state.token && listen(), 2000);
}

function onLive(handler) { state.handlers.clear(); state.handlers.add(handler); }

const views = {
  async overview(view) {
    view.innerHTML = `<div class="card"><h2>Backlog</h2><table id="queues"></table></div>
      <div class="card"><h2>Outcomes per minute (last hour)</h2><div id="bars" class="bars"></div><p id="rates" class="muted"></p></div>
      <div class="card"><h2>Scale</h2><pre id="scale">…</pre></div>`;
    const draw = (queues, throughput) => {
      const rows = queues.priorities.map((p) => `<tr><td>p${p.priority}</td><td class="num">${p.pending}</td><td class="num">${p.in_flight}</td><td class="num">${p.oldest_pending_secs}</td></tr>`).join("");
      const lanes = (queues.lanes || []).map((l) => `<tr><td class="muted">lane p${l.priority} · ${esc(l.agent_type)}</td><td class="num">${l.pending}</td><td class="num">${l.in_flight ?? ""}</td><td class="num">${l.oldest_pending_secs ?? ""}</td></tr>`).join("");
      $("#queues").innerHTML = `<tr><th>priority / lane</th><th class="num">waiting</th><th class="num">in flight</th><th class="num">oldest (s)</th></tr>${rows}${lanes}`;
      $("#queues").dataset.pending = queues.priorities.reduce((sum, p) => sum + p.pending, 0);
      if (Array.isArray(throughput)) {
        const max = Math.max(1, ...throughput.map((m) => m.completed + m.dead + m.cancelled));
        // Heights set through the DOM: the page's Content-Security-Policy refuses inline styles.
        $("#bars").replaceChildren(...throughput.map((m) => {
          const bar = document.createElement("div");
          bar.title = `${m.minute}: ${m.completed} completed, ${m.dead} dead, ${m.cancelled} cancelled`;
          bar.style.height = `${(100 * (m.completed + m.dead + m.cancelled)) / max}%`;
          if (m.dead) bar.className = "failed";
          return bar;
        }));
        const done = throughput.reduce((s, m) => s + m.completed, 0), failed = throughput.reduce((s, m) => s + m.dead, 0);
        $("#rates").textContent = `${done} completed, ${failed} dead in the last hour (failure rate ${done + failed ? ((100 * failed) / (done + failed)).toFixed(1) : 0} %)`;
      }
    };
    const [queues, throughput, scale] = await Promise.all([api("/v1/queues"), api("/v1/throughput"), api("/v1/scale").catch((e) => ({ error: e.message }))]);
    draw(queues, throughput.minutes);
    $("#scale").textContent = JSON.stringify(scale, null, 2);
    onLive((kind, data) => { if (kind === "overview") draw(data.queues, data.throughput); });
  },

  async tasks(view, params) {
    view.innerHTML = `<div class="card"><form class="filters" id="filters">
        <select name="status"><option value="">any status</option>${["queued", "scheduled", "processing", "completed", "failed", "dead", "cancelled"].map((s) => `<option>${s}</option>`).join("")}</select>
        <input name="agent_type" placeholder="agent type">
        <input name="priority" placeholder="priority" size="6">
        <input name="since" type="datetime-local" title="created from">
        <input name="until" type="datetime-local" title="created before">
        <input name="q" placeholder="text in data, result, errors" size="28">
        <input name="contains" placeholder='JSON in data, e.g. {"customer": 42}' size="28">
        <button type="submit">Search</button></form>
        <table id="results"></table><button id="more" hidden>More</button></div>`;
    const form = $("#filters");
    for (const [key, value] of params) if (form.elements[key]) form.elements[key].value = value;
    let next = null;
    const query = () => {
      const q = new URLSearchParams();
      for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value);
      return q;
    };
    const show = async (append) => {
      const q = query(); if (append && next) q.set("before", next);
      const page = await api(`/v1/tasks?${q}`);
      next = page.next_before;
      const rows = page.tasks.map((t) => `<tr data-id="${t.id}"><td><a href="#/task/${t.id}">${t.id}</a></td><td>${esc(t.agent_type)}</td><td>p${t.priority}</td><td class="status status-${t.status}">${t.status}</td><td class="num">${t.attempts}</td><td>${esc(t.created_at)}</td><td class="muted">${esc(JSON.stringify(t.data)).slice(0, 120)}</td></tr>`).join("");
      if (!append) $("#results").innerHTML = `<tr><th>id</th><th>agent</th><th>priority</th><th>status</th><th class="num">attempts</th><th>created</th><th>data</th></tr>`;
      $("#results").insertAdjacentHTML("beforeend", rows);
      $("#results").dataset.count = $("#results").querySelectorAll("tr[data-id]").length;
      $("#more").hidden = !next;
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); history.replaceState(null, "", `#/tasks?${query()}`); show(false).catch(alert); });
    $("#more").addEventListener("click", () => show(true).catch(alert));
    await show(false);
    onLive((kind, data) => {
      if (kind !== "settled") return;
      for (const [id, outcome] of data.tasks) {
        const cell = document.querySelector(`tr[data-id="${id}"] .status`);
        if (cell) { const status = outcome === "retry" ? "failed" : outcome; cell.textContent = status; cell.className = `status status-${status}`; }
      }
    });
  },

  async task(view, _params, id) {
    const task = await api(`/v1/tasks/${id}`);
    const trace = task.trace_id && state.traceUrl ? `<a href="${esc(state.traceUrl.replace("{trace_id}", task.trace_id))}" target="_blank" rel="noopener">${esc(task.trace_id)}</a>` : esc(task.trace_id || "–");
    const errors = (task.errors || []).map((e) => `<tr><td class="num">${e.attempt}</td><td>${esc(e.at)}</td><td>${esc(e.worker || "–")}</td><td>${esc(e.error)}</td></tr>`).join("");
    const fraction = task.progress?.fraction;
    view.innerHTML = `<div class="card"><h2>Task <code>${esc(task.id)}</code></h2>
      <p>Status <strong id="task-status" class="status-${task.status}">${task.status}</strong>${task.cancelled_by ? ` by ${esc(task.cancelled_by)}` : ""} ·
      ${esc(task.agent_type)} · p${task.priority} · attempt ${task.attempts} of ${task.max_attempts} · trace ${trace}</p>
      <p>Progress <progress id="progress" max="1" value="${fraction ?? 0}"></progress> <span id="progress-text">${fraction === undefined ? "–" : `${Math.round(fraction * 100)} %`}</span></p>
      <p><button id="cancel" ${["completed", "dead", "cancelled"].includes(task.status) ? "disabled" : ""}>Cancel task</button> <span id="action" role="status"></span></p>
      <h3>Timeline</h3><table><tr><td>created</td><td>${esc(task.created_at)}</td></tr><tr><td>due</td><td>${esc(task.not_before || "–")}</td></tr><tr><td>started</td><td>${esc(task.started_at || "–")}</td></tr><tr><td>finished</td><td>${esc(task.completed_at || "–")}</td></tr></table>
      <h3>Attempts</h3><table><tr><th class="num">attempt</th><th>at</th><th>worker</th><th>error</th></tr>${errors || `<tr><td colspan="4" class="muted">none failed</td></tr>`}</table>
      <p class="muted">Last run by ${esc(task.worker_id || "–")}.</p>
      <h3>Result</h3><pre>${esc(JSON.stringify(task.result ?? task.result_ref ?? null, null, 2))}</pre>
      <h3>Data</h3><pre>${esc(JSON.stringify(task.data ?? task.data_ref ?? null, null, 2))}</pre>
      <h3>Legacy mirror</h3><div id="legacy" class="muted">…</div></div>`;
    api(`/v1/tasks/${id}/legacy`).then((view) => {
      $("#legacy").innerHTML = !view.mirror ? "the fleet keeps no legacy mirror"
        : view.places.length === 0 ? "not shown in the legacy keys"
        : view.places.map((p) => `<p>in <code>${esc(p.key)}</code></p><pre>${esc(JSON.stringify(p.task, null, 2))}</pre>`).join("");
    }).catch((error) => { $("#legacy").textContent = error.message; });
    $("#cancel").addEventListener("click", async () => {
      try {
        const answer = await api(`/v1/tasks/${id}/cancel`, { method: "POST", body: "{}" });
        $("#action").textContent = `${answer.status} by ${answer.cancelled_by}`;
        $("#task-status").textContent = "cancelled"; $("#cancel").disabled = true;
      } catch (error) { $("#action").textContent = error.message; }
    });
    onLive((kind, data) => {
      if (kind === "progress") for (const [tid, report] of data.reports) if (tid === id) {
        $("#progress").value = report.fraction; $("#progress-text").textContent = `${Math.round(report.fraction * 100)} %`;
      }
      if (kind === "settled") for (const [tid, outcome] of data.tasks) if (tid === id) {
        $("#task-status").textContent = outcome === "retry" ? "failed" : outcome;
        if (outcome !== "retry") $("#cancel").disabled = true;
      }
    });
  },

  async dlq(view) {
    view.innerHTML = `<div class="card"><form class="filters" id="dlq-filters">
        <input name="agent_type" placeholder="agent type"><input name="reason" placeholder="reason">
        <input name="since" type="datetime-local" title="failed from"><input name="until" type="datetime-local" title="failed before">
        <button type="submit">Filter</button></form>
        <p><button type="button" id="replay-selected">Replay selected</button> <button type="button" id="purge-selected">Purge selected</button>
        <button type="button" id="replay-all">Replay all matching</button> <button type="button" id="purge-all">Purge all matching</button></p>
        <p id="dlq-action" role="status"></p><table id="letters"></table></div>`;
    const form = $("#dlq-filters");
    const filter = () => Object.fromEntries([...new FormData(form)].filter(([, v]) => v).map(([k, v]) => [k, form.elements[k].type === "datetime-local" ? new Date(v).toISOString() : v]));
    const selected = () => [...document.querySelectorAll("#letters input[type=checkbox]:checked")].map((box) => box.value);
    const show = async () => {
      const page = await api(`/v1/dlq?${new URLSearchParams(filter())}`);
      $("#letters").dataset.total = page.total;
      $("#letters").innerHTML = `<tr><th></th><th>id</th><th>agent</th><th>reason</th><th>error</th><th>failed at</th><th></th></tr>` + page.dead_letters.map((l) => `<tr><td><input type="checkbox" value="${esc(l.id)}" aria-label="select ${esc(l.id)}"></td><td>${esc(l.id)}</td><td>${esc(l.agent_type)}</td><td>${esc(l.reason)}</td><td>${esc(l.error).slice(0, 160)}</td><td>${esc(l.failed_at)}</td><td><button data-replay="${esc(l.id)}">Replay</button></td></tr>`).join("");
      return page.total;
    };
    const act = async (action, body, question) => {
      if (question && !confirm(question)) return;
      try {
        const r = await api(`/v1/dlq/${action}`, { method: "POST", body: JSON.stringify(body) });
        $("#dlq-action").textContent = action === "replay" ? `replayed ${r.replayed.length} of ${r.matched}` : `purged ${r.purged.length} of ${r.matched}`;
        await show();
      } catch (error) { $("#dlq-action").textContent = error.message; }
    };
    form.addEventListener("submit", (e) => { e.preventDefault(); show().catch(alert); });
    $("#letters").addEventListener("click", async (e) => {
      const id = e.target.dataset.replay; if (!id) return;
      try { const r = await api(`/v1/dlq/${id}/replay`, { method: "POST", body: "{}" }); $("#dlq-action").textContent = `replayed as ${r.id}`; await show(); }
      catch (error) { $("#dlq-action").textContent = error.message; }
    });
    $("#replay-selected").addEventListener("click", () => act("replay", { ...filter(), ids: selected() }));
    $("#purge-selected").addEventListener("click", () => act("purge", { ...filter(), ids: selected() }, `Purge ${selected().length} selected dead letters for good?`));
    $("#replay-all").addEventListener("click", async () => { const total = await show(); act("replay", filter(), `Replay all ${total} matching dead letters?`); });
    $("#purge-all").addEventListener("click", async () => { const total = await show(); act("purge", filter(), `Purge all ${total} matching dead letters for good?`); });
    await show();
    onLive(() => {});
  },

  async workers(view) {
    const [{ workers }, queues] = await Promise.all([api("/v1/workers"), api("/v1/queues")]);
    view.innerHTML = `<div class="card"><h2>Workers</h2><table id="workers"><tr><th>id</th><th>agents (pool)</th><th>declared agents</th><th class="num">concurrency</th><th class="num">in flight</th><th class="num">pid</th><th>version</th></tr>${workers.map((w) => `<tr><td>${esc(w.worker_id)}</td><td>${esc(w.agents)}</td><td>${esc(Object.entries(w.agent_kinds || {}).filter(([, kind]) => kind !== "built-in").map(([name, kind]) => `${name} (${kind})`).join(", ") || "–")}</td><td class="num">${w.concurrency}</td><td class="num">${w.in_flight}</td><td class="num">${w.pid}</td><td>${esc(w.version || "–")}</td></tr>`).join("")}</table></div>
      <div class="card"><h2>Backlog per agent type</h2><table>${Object.entries(queues.agent_types || {}).map(([a, n]) => `<tr><td>${esc(a)}</td><td class="num">${n}</td></tr>`).join("") || `<tr><td class="muted">nothing waiting</td></tr>`}</table></div>`;
    onLive(() => {});
  },

  async schedules(view) {
    const { schedules } = await api("/v1/schedules");
    view.innerHTML = `<div class="card"><h2>Schedules</h2><table><tr><th>name</th><th>agent</th><th>when</th><th>state</th><th>next fire</th><th>last fire</th></tr>${schedules.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(s.agent_type)}</td><td>${s.every_secs ? `every ${s.every_secs} s` : `${esc(s.cron)} (${esc(s.time_zone)})`}</td><td>${s.paused ? "paused" : "active"}</td><td>${esc(s.next_fire)}</td><td>${esc(s.last_fire || "–")}</td></tr>`).join("")}</table></div>`;
    onLive(() => {});
  },
};

async function route() {
  if (!state.token) return logout();
  const [path, query] = (location.hash.slice(2) || "overview").split("?");
  const [name, id] = path.split("/");
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === `#/${name}`));
  const view = $("#view");
  view.dataset.view = name;
  try { await (views[name] || views.overview)(view, new URLSearchParams(query || ""), id); }
  catch (error) { if (error.message !== "unauthorized") view.innerHTML = `<p class="error">${esc(error.message)}</p>`; }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", route);
  state.traceUrl = (await fetch("/ui/config.json").then((r) => r.json()).catch(() => ({}))).trace_url || "";
  if (state.token) start(); else logout();
});
