// triogate dashboard: polls /dashboard/data once a second and redraws.
// Charts are uPlot (vendored next to this file); everything else is plain DOM.
"use strict";

const POLL_MS = 1000;
const PALETTE = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e", "#57606a"];
const charts = new Map(); // "cluster/kind" -> uPlot

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmt(n, digits = 0) {
  return n === null || n === undefined ? "—" : Number(n).toFixed(digits);
}

function percent(rate) {
  return rate === null || rate === undefined ? "—" : (100 * rate).toFixed(1) + "%";
}

function rateClass(rate) {
  if (rate === null || rate === undefined) return "";
  return rate >= 0.99 ? "rate-good" : rate >= 0.9 ? "rate-warn" : "rate-bad";
}

function fillBody(table, rows) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows);
}

function renderListeners(listeners) {
  fillBody("listeners", listeners.map((l) => el("tr", {},
    el("td", {}, l.name), el("td", {}, l.address ?? "—"), el("td", {}, l.protocol),
    el("td", {}, l.connections), el("td", {}, l.requests.total ?? 0),
    el("td", {}, l.requests["2xx"] ?? 0), el("td", {}, l.requests["3xx"] ?? 0),
    el("td", {}, l.requests["4xx"] ?? 0), el("td", {}, l.requests["5xx"] ?? 0),
    el("td", { class: "muted" }, l.access_log ?? "off"))));
}

function colour(name, names) {
  return PALETTE[names.indexOf(name) % PALETTE.length];
}

function renderRoutes(routes, clusterNames) {
  fillBody("routes", routes.map((r) => {
    const bar = el("div", { class: "split" }, ...r.split.map((s) => el("span", {
      style: `width:${(100 * s.share).toFixed(1)}%;background:${colour(s.cluster, clusterNames)}`,
      title: `${s.cluster}: weight ${s.weight}`,
    }, `${s.cluster} ${(100 * s.share).toFixed(0)}%`)));
    return el("tr", {},
      el("td", {}, r.listener), el("td", {}, r.virtual_host ?? "—"), el("td", {}, r.name),
      el("td", {}, r.match), el("td", {}, bar), el("td", {}, `${r.timeout}s`),
      el("td", {}, r.retries));
  }));
}

// staged rollouts: where each is on its steps, how its canary fares against the gates
const STATE_CLASS = { running: "run", paused: "warn", succeeded: "ok", rolled_back: "", aborted: "off" };

function stateBadge(state) {
  return el("span", { class: `flag ${STATE_CLASS[state] ?? "off"}` }, state.replace("_", " "));
}

// one segment per step: passed, in progress, or undone by a rollback or an abort
function progressCell(r) {
  const undone = r.state === "rolled_back" || r.state === "aborted";
  const segments = r.steps.map((weight, i) => {
    const cls = r.state === "succeeded" || i < r.step ? (undone ? "undone" : "done")
      : i === r.step ? (undone ? "undone" : "current") : "";
    return el("span", { class: `step ${cls}`, title: `step ${i + 1}/${r.steps.length}: ${weight}%` },
      `${weight}%`);
  });
  return el("td", { class: "progress" }, el("div", { class: "steps" }, ...segments),
    el("span", { class: "weight" }, `canary ${r.weight}%`));
}

// a figure against its gate: within it, past it, or not judged
function gated(text, value, limit) {
  const cls = value === null || value === undefined || limit === null ? "muted"
    : value > limit ? "rate-bad" : "rate-good";
  return el("span", { class: cls }, text);
}

function gateFigure(gate, value) {
  return gate === "max_error_rate" ? percent(value) : `${fmt(value, 1)} ms`;
}

function figuresCell(r) {
  const c = r.current;
  const g = r.gates;
  if (!c) return el("td", { class: "figures muted" }, "—");
  const cell = el("td", { class: "figures" },
    el("span", { class: c.requests >= g.min_requests ? "" : "muted" },
      `${c.requests}/${g.min_requests} requests`), ", ",
    gated(`errors ${percent(c.error_rate)} ≤ ${percent(g.max_error_rate)}`,
      c.error_rate, g.max_error_rate), ", ",
    gated(`p99 ${fmt(c.p99_ms, 1)} ms` + (g.max_p99_ms === null ? "" : ` ≤ ${g.max_p99_ms} ms`),
      c.p99_ms, g.max_p99_ms));
  cell.title = `step since ${clock(c.step_started)}; ` +
    (c.judged_at === null ? "not judged yet" : `last judged ${clock(c.judged_at)}`);
  return cell;
}

function breachCell(breach) {
  if (!breach) return el("td", { class: "breach muted" }, "—");
  return el("td", { class: "breach" },
    el("span", { class: "flag" }, breach.gate),
    ` ${gateFigure(breach.gate, breach.value)} > ${gateFigure(breach.gate, breach.limit)}`,
    el("span", { class: "muted" }, ` at ${clock(breach.at)}`));
}

function renderRollouts(rollouts) {
  if (!rollouts.length) {
    fillBody("rollouts", [el("tr", {}, el("td", { class: "muted", colspan: "7" }, "no rollouts"))]);
    return;
  }
  fillBody("rollouts", rollouts.map((r) => el("tr", { "data-rollout": r.name },
    el("td", {}, r.name), el("td", {}, `${r.listener}/${r.route}`),
    el("td", {}, `${r.stable} → ${r.canary}`), el("td", { class: "state" }, stateBadge(r.state)),
    progressCell(r), figuresCell(r), breachCell(r.breach))));
}

// y from 0 to a little above the largest value (at most `cap`)
function yRange(cap) {
  return (u, min, max) => [0, Math.min(cap, Math.max(1, (max ?? 0) * 1.15))];
}

function chartOpts(kind, series, width) {
  return {
    title: "", width, height: 160,
    scales: { x: { time: true }, y: { range: yRange(kind === "errors" ? 100 : Infinity) } },
    legend: { live: false },
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 55 }],
  };
}

const CHARTS = [
  ["rps", "requests / s", [["req/s", "#0969da"]], (s) => [s.requests_per_s]],
  ["errors", "error rate (%)", [["errors %", "#cf222e"]],
    (s) => [s.error_rate.map((r) => (r === null ? null : 100 * r))]],
  ["latency", "upstream latency (ms)", [["p50", "#1a7f37"], ["p99", "#9a6700"]],
    (s) => [s.p50, s.p99]],
];

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

// "healthy", or Envoy's "/failed_active_hc/failed_outlier_check": one badge per flag
function verdictCell(e) {
  const flags = e.verdict === undefined ? e.health_flags
    : e.verdict === "healthy" ? ["healthy"] : e.verdict.split("/").filter((f) => f);
  const badges = flags.map((f) => el("span", { class: `flag ${f}` }, f));
  if (e.serves === false && e.verdict === "healthy") {
    badges.push(el("span", { class: "flag off" }, "not serving"));
  }
  return el("td", { class: "verdict" }, ...badges);
}

// the active health checks: state, and the last check's result in its tooltip
function healthCheckCell(e, checked) {
  if (!checked || !e.health_check) return el("td", { class: "health-check muted" }, "—");
  const state = e.health_check.state ?? "unknown";
  const last = e.health_check.last;
  const cls = state === "healthy" ? "ok" : state === "unhealthy" ? "" : "warn";
  const cell = el("td", { class: "health-check" }, el("span", { class: `flag ${cls}` }, state));
  if (last) {
    cell.title = `last check ${last.passed ? "passed" : "failed"} at ${clock(last.at)}` +
      (last.detail ? `: ${last.detail}` : "");
    if (!last.passed && last.detail) cell.append(el("span", { class: "muted" }, ` ${last.detail}`));
  }
  return cell;
}

// outlier detection: ejected or not; while ejected why, until when, how many times
function ejectionCell(e, detected) {
  const ejection = e.ejection;
  if (!detected || !ejection) return el("td", { class: "ejection muted" }, "—");
  if (!ejection.ejected) return el("td", { class: "ejection muted" }, "no");
  const cell = el("td", { class: "ejection" }, el("span", { class: "flag" }, "ejected"));
  if (ejection.reason) {
    cell.append(el("span", { class: "muted" }, ` ${ejection.reason} until ${clock(ejection.until)}`));
    cell.title = `ejected at ${clock(ejection.since)}, ${ejection.times_ejected} time(s) so far`;
  }
  return cell;
}

// the classic breaker guards the whole cluster: closed, open or half-open
function breakerText(breaker) {
  if (!breaker) return null;
  if (breaker.per_worker) {
    return breaker.open_workers ? `open in ${breaker.open_workers} workers` : "closed";
  }
  return breaker.state === "half_open" ? "half-open" : breaker.state;
}

function breakerBadge(breaker, prefix = "") {
  const text = breakerText(breaker);
  if (text === null) return null;
  const cls = text === "closed" ? "ok" : text === "half-open" ? "warn" : "";
  return el("span", { class: `flag ${cls}` }, prefix + text);
}

function clusterCard(name) {
  const card = el("div", { class: "cluster", id: `cluster-${name}`, "data-cluster": name },
    el("h3", {}, name, " ", el("span", { class: "breaker-badge" }), " ",
      el("span", { class: "muted summary" })),
    el("table", { class: "endpoints" },
      el("thead", {}, el("tr", {}, ...["endpoint", "weight", "state", "verdict", "health check",
        "ejection", "breaker", "active", "requests", "errors", "success rate"].map((h) =>
        el("th", {}, h)))),
      el("tbody")),
    el("div", { class: "charts" }, ...CHARTS.map(([kind, title]) =>
      el("div", { class: "chart", "data-kind": kind }, el("h4", {}, title)))));
  return card;
}

function renderCluster(name, view) {
  let card = document.getElementById(`cluster-${name}`);
  if (!card) {
    card = clusterCard(name);
    document.getElementById("clusters").append(card);
  }
  const lat = view.upstream_rq_time_recent;
  card.querySelector(".summary").textContent =
    `${view.upstream_rq_total} requests, ${view.upstream_rq_active} active, ` +
    `${view.upstream_cx_active} connections, recent p50 ${fmt(lat.p50, 2)} ms / p99 ${fmt(lat.p99, 2)} ms`;
  const badge = breakerBadge(view.breaker, "breaker ");
  card.querySelector(".breaker-badge").replaceChildren(...(badge ? [badge] : []));
  card.querySelector(".endpoints tbody").replaceChildren(...view.endpoints.map((e) => el("tr",
    { "data-endpoint": e.address },
    el("td", {}, e.address), el("td", {}, e.weight), el("td", {}, e.state),
    verdictCell(e), healthCheckCell(e, view.health_check), ejectionCell(e, view.outlier_detection),
    el("td", { class: "breaker" }, breakerBadge(view.breaker) ?? "—"),
    el("td", {}, e.active_requests), el("td", {}, e.rq_total), el("td", {}, e.rq_error),
    el("td", { class: rateClass(e.success_rate) }, percent(e.success_rate)))));
  const s = view.series;
  for (const [kind, , series, pick] of CHARTS) {
    const key = `${name}/${kind}`;
    const data = [s.t, ...pick(s)];
    let chart = charts.get(key);
    if (!chart) {
      const box = card.querySelector(`.chart[data-kind="${kind}"]`);
      chart = new uPlot(chartOpts(kind, series, 380), data, box);
      charts.set(key, chart);
    } else {
      chart.setData(data);
    }
  }
}

function render(data) {
  const status = document.getElementById("status");
  status.textContent = data.draining ? "draining" : data.ready ? "serving" : "starting";
  status.className = `pill ${data.ready && !data.draining ? "ok" : "bad"}`;
  document.getElementById("version").textContent = `config version ${data.version}`;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.getElementById("workers").textContent = data.workers.length > 1
    ? `${data.workers.length} workers: ` + data.workers.map((w) =>
      `#${w.index} ${w.downstream_rq_total ?? "?"} req` + (w.restarts ? ` (${w.restarts} restarts)` : "")).join(", ")
    : "";
  const names = Object.keys(data.clusters);
  renderListeners(data.listeners);
  renderRoutes(data.routes, names);
  renderRollouts(data.rollouts);
  for (const [name, view] of Object.entries(data.clusters)) renderCluster(name, view);
  for (const card of document.querySelectorAll(".cluster")) {
    if (!(card.dataset.cluster in data.clusters)) {
      for (const [kind] of CHARTS) {
        const key = `${card.dataset.cluster}/${kind}`;
        charts.get(key)?.destroy();
        charts.delete(key);
      }
      card.remove();
    }
  }
  document.body.dataset.polls = String(Number(document.body.dataset.polls ?? 0) + 1);
}

async function poll() {
  try {
    const response = await fetch("/dashboard/data", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = `unreachable (${err.message})`;
    status.className = "pill bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
