// The relay lead dashboard: reads the lead API of the server that serves it, draws with SVG.
// No framework, no build step, nothing loaded from elsewhere; every text goes in as text.
"use strict";

(() => {
  const SEVERITY = { down: 0, degraded: 1, unknown: 2, healthy: 3 };
  const STATUS_TEXT = {
    down: "Down",
    degraded: "Degraded",
    unknown: "Not enough to judge",
    healthy: "Healthy",
  };
  const STATUS_MARK = { down: "✕", degraded: "!", unknown: "?", healthy: "✓" };
  const OPERATOR_TEXT = {
    verified: "Verified",
    findings: "Problems found",
    unregistered: "Not registered",
    no_data: "No reports yet",
  };
  const OP_NOUN = { download: "download", upload: "upload", probe: "probe" };
  const NETWORK_SIGNAL_TEXT = {
    missing_operators: "an upload found no storage operator for its bag",
  };
  const TOKEN_KEY = "relay-lead-token";
  const REFRESH_MS = 60000;
  const SVG = "http://www.w3.org/2000/svg";
  // Nice steps for the charts: about 60 to 120 points over the period.
  const STEPS = [
    ["1m", 60e3], ["5m", 300e3], ["10m", 600e3], ["15m", 900e3], ["30m", 1800e3],
    ["1h", 3600e3], ["3h", 10800e3], ["6h", 21600e3], ["12h", 43200e3], ["1d", 86400e3],
  ];

  const state = {
    nodes: [],
    network: null,
    thresholds: null,
    sort: { key: "status", descending: false },
    selected: null,
    range: null,
  };

  const $ = (selector) => document.querySelector(selector);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // -- formatting ------------------------------------------------------------------------------

  const count = (n) => (n === null || n === undefined ? "—" : Math.round(n).toLocaleString());
  const percent = (ratio) => (ratio === null || ratio === undefined ? "—" : `${(ratio * 100).toFixed(1)} %`);

  function duration(ms) {
    if (ms === null || ms === undefined) return "—";
    if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s`;
    return `${Math.round(ms)} ms`;
  }

  function when(ms) {
    if (!ms) return "never";
    const ago = Date.now() - ms;
    const text = new Date(ms).toLocaleString();
    if (ago < 0) return text;
    if (ago < 90e3) return `${text} (just now)`;
    if (ago < 5400e3) return `${text} (${Math.round(ago / 60e3)} min ago)`;
    if (ago < 129600e3) return `${text} (${Math.round(ago / 3600e3)} h ago)`;
    return `${text} (${Math.round(ago / 86400e3)} days ago)`;
  }

  // -- what the figures can say ----------------------------------------------------------------
  // A node is judged only on what its clients report (`coverage`, README "What Atlas reports"):
  // one-sided figures are said in words, never as a share of 0 % or 100 %.

  function noun(figures, n) {
    const ops = Object.entries(figures.ops || {}).filter(([, k]) => k > 0);
    const word = ops.length === 1 ? OP_NOUN[ops[0][0]] || "request" : "request";
    return n === 1 ? word : `${word}s`;
  }

  const fromUsers = (figures) => (figures.reporters_at_least ? ` from ${figures.reporters_at_least}+ users` : "");

  function reported(figures) {
    const ok = figures.outcomes.ok || 0;
    const failed = figures.requests - ok;
    switch (figures.coverage) {
      case "failures_only":
        return `${count(failed)} failed ${noun(figures, failed)}${fromUsers(figures)}; ` +
          `successful ${noun(figures, 2)} are not reported by this client`;
      case "successes_only":
        return `${count(ok)} ${noun(figures, ok)} reported OK${fromUsers(figures)}; ` +
          "failures are not reported by this client";
      case "none":
        return "no requests reported";
      default:
        return null;
    }
  }

  // -- the API ---------------------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined) url.searchParams.set(name, String(value));
    }
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { headers });
    if (response.status === 401) throw new Unauthorized("token needed");
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || body.title || `error ${response.status}`);
    return body;
  }

  function readRange() {
    const choice = $("#range").value;
    const custom = choice === "custom";
    $("#custom-range").hidden = !custom;
    let to = Date.now();
    let from = to - Number(choice);
    if (custom) {
      const start = Date.parse($("#from").value);
      const end = Date.parse($("#to").value);
      if (Number.isNaN(start) || Number.isNaN(end) || start >= end) return null;
      from = start;
      to = end;
    }
    return { from, to };
  }

  function stepFor(range) {
    const span = range.to - range.from;
    const found = STEPS.find(([, ms]) => span / ms <= 120);
    return (found || STEPS[STEPS.length - 1])[0];
  }

  function say(text) {
    $("#status-line").textContent = text;
  }

  // -- loading ---------------------------------------------------------------------------------

  async function load() {
    const range = readRange();
    if (range === null) {
      say("Choose a start that is before the end.");
      return;
    }
    state.range = range;
    const include = $("#unverified").checked || null;
    try {
      const [nodes, operators] = await Promise.all([
        api("/v1/nodes", { from: range.from, to: range.to, include_unverified: include }),
        api("/v1/operators"),
      ]);
      $("#token-section").hidden = true;
      state.nodes = nodes.nodes;
      state.network = nodes.network;
      state.thresholds = nodes.thresholds;
      renderOverview();
      renderNetwork();
      renderNodes();
      renderOperators(operators);
      renderLegend();
      const checked = new Date(nodes.verification.checked_at_ms).toLocaleTimeString();
      say(
        `${new Date(range.from).toLocaleString()} to ${new Date(range.to).toLocaleString()}. ` +
          `Reports last verified at ${checked}.`,
      );
      const still = state.selected && state.nodes.find((n) => key(n) === state.selected);
      if (still) await showNode(still);
      else $("#detail").hidden = true;
    } catch (error) {
      if (error instanceof Unauthorized) {
        $("#token-section").hidden = false;
        say("An access token is needed to read this dashboard.");
        return;
      }
      say(`Could not load the figures: ${error.message}`);
    }
  }

  // -- overview and node table -----------------------------------------------------------------

  const key = (node) => `${node.role}/${node.id}`;

  function renderOverview() {
    const list = $("#overview");
    list.replaceChildren();
    for (const status of Object.keys(SEVERITY)) {
      const n = state.nodes.filter((node) => node.status === status).length;
      list.append(
        el("li", { className: `card status-${status}` },
          el("span", { className: "card-count" }, n),
          el("span", { className: "card-label" }, `${STATUS_TEXT[status].toLowerCase()}`)),
      );
    }
  }

  function renderNetwork() {
    const network = state.network;
    const seen = network ? Object.entries(network.signals).filter(([, n]) => n > 0) : [];
    $("#network").hidden = seen.length === 0;
    $("#network-signals").replaceChildren(...seen.map(([name, n]) => el("li", {},
      `${count(n)} time${n === 1 ? "" : "s"} ${NETWORK_SIGNAL_TEXT[name] || name.replaceAll("_", " ")}`,
      network.reporters_at_least ? ` (reported by ${network.reporters_at_least}+ users)` : "")));
  }

  const SORTS = {
    status: (a, b) => SEVERITY[a.status] - SEVERITY[b.status] || (b.error_rate ?? -1) - (a.error_rate ?? -1),
    node: (a, b) => key(a).localeCompare(key(b)),
    requests: (a, b) => a.requests - b.requests,
    error_rate: (a, b) => (a.error_rate ?? -1) - (b.error_rate ?? -1),
    ttfb: (a, b) => (a.ttfb_ms.p90 ?? -1) - (b.ttfb_ms.p90 ?? -1),
    duration: (a, b) => (a.duration_ms.p50 ?? -1) - (b.duration_ms.p50 ?? -1),
    regions: (a, b) => a.regions.length - b.regions.length,
    operators: (a, b) => a.operators.length - b.operators.length,
  };

  function statusBadge(status) {
    return el("span", { className: `badge status-${status}` },
      el("span", { "aria-hidden": "true", className: "mark" }, STATUS_MARK[status]),
      STATUS_TEXT[status]);
  }

  function noisy(node, figure) {
    if (!node.noise) return null;
    const margin = node.noise.margin95[figure];
    return el("span", { className: "noise", title: "Differential privacy adds noise; 95 % of the time the true figure is within this margin" }, ` ± ${count(margin)}`);
  }

  function failedCell(node) {
    const words = reported(node);
    if (words === null) return el("td", { className: "num" }, percent(node.error_rate));
    return el("td", { className: "coverage" }, words);
  }

  function renderNodes() {
    const { key: sortKey, descending } = state.sort;
    const rows = [...state.nodes].sort((a, b) => (descending ? -1 : 1) * SORTS[sortKey](a, b) || key(a).localeCompare(key(b)));
    for (const th of document.querySelectorAll("#nodes th")) {
      const button = th.querySelector("button");
      th.setAttribute("aria-sort", button.dataset.sort === sortKey ? (descending ? "descending" : "ascending") : "none");
    }
    const body = $("#nodes tbody");
    body.replaceChildren(...rows.map((node) => {
      const selected = key(node) === state.selected;
      return el("tr", { "data-node": key(node), "aria-current": selected ? "true" : null, className: selected ? "selected" : null },
        el("td", {}, statusBadge(node.status),
          node.unverified ? el("span", { className: "flag" }, "includes unverified reports") : null),
        el("td", {}, el("button", { type: "button", className: "link", onclick: () => showNode(node) }, node.id),
          el("span", { className: "role" }, node.role)),
        el("td", { className: "num" }, count(node.requests), noisy(node, "requests")),
        failedCell(node),
        el("td", { className: "num" }, `${duration(node.ttfb_ms.p50)} / ${duration(node.ttfb_ms.p90)}`),
        el("td", { className: "num" }, duration(node.duration_ms.p50)),
        el("td", {}, node.regions.map((r) => r.region).join(", ")),
        el("td", { className: "num" }, node.operators.length));
    }));
    $("#nodes-empty").hidden = rows.length > 0;
  }

  function sortBy(sortKey) {
    const numeric = !["status", "node"].includes(sortKey);
    if (state.sort.key === sortKey) state.sort.descending = !state.sort.descending;
    else state.sort = { key: sortKey, descending: numeric };
    renderNodes();
  }

  // -- one node over time ----------------------------------------------------------------------

  async function showNode(node) {
    state.selected = key(node);
    renderNodes();
    const detail = $("#detail");
    detail.hidden = false;
    $("#detail-heading").textContent = `${node.id} (${node.role}): ${STATUS_TEXT[node.status].toLowerCase()}`;
    const reasons = node.reasons.length ? node.reasons : ["nothing unusual in this period"];
    $("#detail-reasons").replaceChildren(...reasons.map((r) => el("li", {}, r)));
    const words = reported(node);
    $("#detail-coverage").hidden = words === null;
    $("#detail-coverage").textContent = words ? `Reported in this period: ${words}.` : "";
    const range = state.range;
    const path = `/v1/nodes/${encodeURIComponent(node.role)}/${encodeURIComponent(node.id)}/series`;
    const series = await api(path, {
      from: range.from,
      to: range.to,
      step: stepFor(range),
      include_unverified: $("#unverified").checked || null,
    });
    const points = series.points;
    drawChart($("#latency-chart"), points, range, {
      label: "latency-caption",
      lines: [
        { name: "typical (median)", value: (p) => p.ttfb_ms.p50, className: "line-p50" },
        { name: "slowest 10 %", value: (p) => p.ttfb_ms.p90, className: "line-p90" },
        { name: "slowest 1 %", value: (p) => p.ttfb_ms.p99, className: "line-p99" },
      ],
      format: duration,
    });
    drawOutcomes(node, points, range);
  }

  // Both sides reported: the share that failed. One side only: how many were reported, per
  // point, since no share can be drawn from them.
  function drawOutcomes(node, points, range) {
    const chart = $("#error-chart");
    const caption = $("#errors-caption");
    if (node.coverage === "failures_only" || node.coverage === "successes_only") {
      const failures = node.coverage === "failures_only";
      const value = (p) => (failures ? p.requests - (p.outcomes.ok || 0) : p.outcomes.ok || 0);
      const what = failures ? `Failed ${noun(node, 2)} reported` : `${noun(node, 2)} reported OK`;
      caption.textContent = `${what[0].toUpperCase()}${what.slice(1)} (the other side is not reported)`;
      drawChart(chart, points, range, {
        label: "errors-caption",
        bars: {
          name: failures ? "failed" : "reported OK",
          value,
          className: failures ? "bar" : "bar bar-ok",
          title: (p, v) => `${count(v)} ${failures ? "failed" : "reported OK"}`,
        },
        format: count,
        floor: 1,
      });
      return;
    }
    caption.textContent = "Share of requests that failed";
    const degradedAt = 1 - state.thresholds.degraded_success_ratio;
    drawChart(chart, points, range, {
      label: "errors-caption",
      bars: {
        name: "failed",
        value: (p) => p.error_rate,
        className: "bar",
        title: (p, v) => `${percent(v)} of ${count(p.requests)} failed`,
      },
      threshold: { value: degradedAt, text: `degraded above ${percent(degradedAt)}` },
      format: percent,
      floor: Math.max(0.1, degradedAt * 1.5),
      ceiling: 1,
    });
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    const scaled = value / power;
    const nice = scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10;
    return nice * power;
  }

  function drawChart(container, points, range, spec) {
    const width = 720;
    const height = 240;
    const pad = { left: 64, right: 16, top: 16, bottom: 40 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const series = spec.lines || [spec.bars];
    const values = points.flatMap((p) => series.map((s) => s.value(p))).filter((v) => v !== null);
    const top = Math.min(spec.ceiling || Infinity, niceMax(Math.max(spec.floor || 0, ...values) * 1.05));
    // Times outside the range (a step that starts before it or ends after it) stay on the plot.
    const clamp = (ms) => Math.min(range.to, Math.max(range.from, ms));
    const x = (ms) => pad.left + ((clamp(ms) - range.from) / (range.to - range.from)) * plotW;
    const middle = (p) => x((clamp(p.start_ms) + clamp(p.end_ms)) / 2);
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": spec.label,
      preserveAspectRatio: "xMidYMid meet",
    });
    const ticks = top / 10 ** Math.floor(Math.log10(top)) === 2 ? 4 : 5;
    for (let i = 0; i <= ticks; i += 1) {
      const v = (top * i) / ticks;
      chart.append(
        svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: pad.left - 8, y: y(v) + 4, class: "axis", "text-anchor": "end" }, spec.format(v)),
      );
    }
    for (let i = 0; i <= 4; i += 1) {
      const ms = range.from + ((range.to - range.from) * i) / 4;
      const date = new Date(ms);
      const label = range.to - range.from > 172800e3
        ? date.toLocaleDateString(undefined, { month: "short", day: "numeric" })
        : date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
      const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      chart.append(svg("text", { x: x(ms), y: height - pad.bottom + 20, class: "axis", "text-anchor": anchor }, label));
    }
    if (spec.bars) {
      for (const p of points) {
        const v = spec.bars.value(p);
        if (v === null) continue;
        const left = x(p.start_ms);
        const barW = Math.max(3, (x(p.end_ms) - left) * 0.8);
        const bar = svg("rect", { x: left, y: y(v), width: barW, height: Math.max(1, y(0) - y(v)), class: spec.bars.className });
        bar.append(svg("title", {}, `${new Date(p.start_ms).toLocaleString()}: ${spec.bars.title(p, v)}`));
        chart.append(bar);
      }
    }
    for (const line of spec.lines || []) {
      let d = "";
      let pen = "M";
      const dots = [];
      for (const p of points) {
        const v = line.value(p);
        if (v === null) {
          pen = "M";
          continue;
        }
        const cx = middle(p).toFixed(1);
        const cy = y(v).toFixed(1);
        d += `${pen}${cx},${cy}`;
        pen = "L";
        const dot = svg("circle", { cx, cy, r: 3.5, class: `dot ${line.className}` });
        dot.append(svg("title", {}, `${new Date(p.start_ms).toLocaleString()}: ${line.name} ${spec.format(v)}`));
        dots.push(dot);
      }
      if (d) chart.append(svg("path", { d, class: `line ${line.className}` }), ...dots);
    }
    if (spec.threshold && spec.threshold.value < top) {
      const ty = y(spec.threshold.value);
      chart.append(
        svg("line", { x1: pad.left, x2: width - pad.right, y1: ty, y2: ty, class: "threshold" }),
        svg("text", { x: pad.left + 6, y: ty - 6, class: "axis threshold-label" }, spec.threshold.text),
      );
    }
    if (!points.length) {
      chart.append(svg("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "No reports in this period"));
    }
    const legend = el("ul", { className: "chart-legend" },
      series.map((s) => el("li", {}, el("span", { className: `swatch ${s.className}`, "aria-hidden": "true" }), s.name)));
    const table = el("details", {},
      el("summary", {}, "Show the numbers"),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "From"), series.map((s) => el("th", { scope: "col", className: "num" }, s.name)), el("th", { scope: "col", className: "num" }, "Requests"))),
        el("tbody", {}, points.map((p) => el("tr", {},
          el("td", {}, new Date(p.start_ms).toLocaleString()),
          series.map((s) => el("td", { className: "num" }, spec.format(s.value(p)))),
          el("td", { className: "num" }, count(p.requests)))))));
    container.replaceChildren(chart, legend, table);
  }

  // -- operators and legend --------------------------------------------------------------------

  function renderOperators(answer) {
    const body = $("#operators tbody");
    body.replaceChildren(...answer.operators.map((op) => {
      const first = op.findings[0];
      const problems = op.findings_total
        ? `${op.findings_total} problem${op.findings_total === 1 ? "" : "s"}${first ? `, e.g. ${first.code.replaceAll("_", " ")}: ${first.message}` : ""}`
        : "none";
      return el("tr", { "data-origin": op.origin },
        el("td", {}, op.origin),
        el("td", {}, el("span", { className: `badge op-${op.state}` }, OPERATOR_TEXT[op.state] || op.state)),
        el("td", {}, when(op.last_seen_ms)),
        el("td", { className: "num" }, `${count(op.batches_verified)} of ${count(op.batches)}`),
        el("td", { className: "problems" }, problems));
    }));
  }

  function renderLegend() {
    const t = state.thresholds;
    const slow = t.degraded_ttfb_p90_ms ? `, or the slowest 10 % of requests waited more than ${duration(t.degraded_ttfb_p90_ms)} for data` : "";
    const slowDownload = t.degraded_duration_p90_ms ? `, or the slowest 10 % of downloads took more than ${duration(t.degraded_duration_p90_ms)}` : "";
    const items = [
      ["healthy", "Working normally; its clients report both successes and failures."],
      ["degraded", `More than ${percent(1 - t.degraded_success_ratio)} of requests failed${slow}${slowDownload}.`],
      ["down", `More than ${percent(1 - t.down_success_ratio)} of requests failed.`],
      ["unknown", `Fewer than ${t.min_requests} requests in the period, or its clients report only one side: only failures, or only successes (and those were not slow). Such a node is described by what was reported, never as 0 % or 100 % failed.`],
    ];
    $("#legend").replaceChildren(...items.flatMap(([status, text]) => [el("dt", {}, statusBadge(status)), el("dd", {}, text)]));
  }

  // -- wiring ----------------------------------------------------------------------------------

  function start() {
    for (const button of document.querySelectorAll("#nodes th button")) {
      button.addEventListener("click", () => sortBy(button.dataset.sort));
    }
    $("#range").addEventListener("change", () => {
      if ($("#range").value === "custom") {
        readRange();
        const now = new Date(Date.now() - new Date().getTimezoneOffset() * 60e3);
        $("#to").value = now.toISOString().slice(0, 16);
        $("#from").value = new Date(now - 86400e3).toISOString().slice(0, 16);
      } else load();
    });
    $("#unverified").addEventListener("change", load);
    $("#range-form").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
      load();
    });
    load();
    window.setInterval(() => {
      if ($("#range").value !== "custom") load();
    }, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
