// Rollout page: follow the rollout over Server-Sent Events (log lines, node states, progress, the end).
"use strict";
(() => {
  const root = document.getElementById("rollout");
  const url = root && root.getAttribute("data-events");
  if (!url) return;
  const log = document.getElementById("log");
  const fmt = (seconds) => {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  };
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  };
  const showState = (state) => {
    const label = document.getElementById("rollout-state");
    label.textContent = state.state;
    label.className = `state ${state.state}`;
    const p = state.progress;
    document.getElementById("progress").value = p.percent;
    document.getElementById("progress-text").textContent = `${p.done} of ${p.total} nodes`;
    document.getElementById("elapsed").textContent = fmt(p.elapsed_seconds);
    document.getElementById("eta").textContent = fmt(p.eta_seconds);
    const body = document.querySelector("#steps tbody");
    body.replaceChildren(...state.steps.map((s) => {
      const tr = document.createElement("tr");
      tr.setAttribute("data-node", s.node);
      const phases = Object.entries(s.phase_seconds || {}).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ");
      tr.append(cell(String(s.position + 1)), cell(s.node), cell(s.state, `state ${s.state}`),
        cell(s.duration_seconds === null ? "–" : `${s.duration_seconds.toFixed(1)} s`), cell(phases), cell(s.message || ""));
      return tr;
    }));
  };
  let after = Number(root.getAttribute("data-after"));
  // The first connection starts after the lines the page already shows; reconnects send Last-Event-ID.
  const source = new EventSource(`${url}?after=${after}`);
  source.addEventListener("log", (e) => {
    const line = JSON.parse(e.data);
    if (line.seq <= after) return;
    after = line.seq;
    log.append(`${line.node ? `[${line.node}] ` : ""}${line.text}\n`);
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("state", (e) => showState(JSON.parse(e.data)));
  source.addEventListener("end", (e) => {
    source.close();
    const end = JSON.parse(e.data);
    const probe = document.getElementById("probe");
    if (end.probe_report) {
      const pre = document.createElement("pre");
      pre.id = "probe-report";
      pre.textContent = JSON.stringify(end.probe_report, null, 2);
      probe.replaceChildren(pre);
    }
    document.querySelectorAll(".controls").forEach((el) => el.remove());
  });
})();
