// The relay's dashboard. Read-only: it polls `metrics` (the Prometheus text the relay serves) and
// `api/dead-letters`, and draws them. Relative URLs, so the page also works behind a reverse
// proxy that serves it under a path (and adds the bearer token, when `metrics.token` is set).
// Text from the relay reaches the page through `textContent` only.
"use strict";

const METRICS_EVERY_MS = 1000;
const DEAD_LETTERS_EVERY_MS = 10000;
// Points in a chart: two minutes at one poll a second.
const HISTORY = 120;
const SVG = "http://www.w3.org/2000/svg";

// The figures of a source card and the metric each comes from. Every name is one of
// `outbox_relay_*` that the relay documents; with the pipeline's `source` label they are per
// source, without it they belong to the one source `api/relay` names.
const FIGURES = {
  published: "outbox_relay_events_published_total",
  dead_lettered: "outbox_relay_events_dead_lettered_total",
  oldest_pending: "outbox_relay_oldest_pending_age_seconds",
  lag_bytes: "outbox_relay_lag_bytes",
  retained_wal: "outbox_relay_slot_retained_wal_bytes",
  reconnects: "outbox_relay_reconnects_total",
  connected: "outbox_relay_connected",
};
const STATE = "outbox_relay_state";

const relay = { source: "relay" };
// source name -> { card, history: [events/s], last: {published, at} }
const sources = new Map();

// Parses the Prometheus text exposition into samples {name, labels, value}.
function parseMetrics(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    const l = raw.trim();
    if (l === "" || l.startsWith("#")) continue;
    const m = line.exec(l);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(label)) {
      labels[k] = v.replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

// Per source: the figures (summed over other labels) and the state.
function bySource(samples) {
  const out = new Map();
  const of = (source) => {
    if (!out.has(source)) out.set(source, { figures: {}, state: null });
    return out.get(source);
  };
  const wanted = new Map(Object.entries(FIGURES).map(([k, v]) => [v, k]));
  for (const s of samples) {
    if (!s.name.startsWith("outbox_relay_")) continue;
    const entry = of(s.labels.source || relay.source);
    if (s.name === STATE) {
      if (s.value === 1 && s.labels.state) entry.state = s.labels.state;
      continue;
    }
    const figure = wanted.get(s.name);
    if (figure === undefined) continue;
    entry.figures[figure] = (entry.figures[figure] || 0) + s.value;
  }
  for (const entry of out.values()) {
    // Without the state gauge, `connected` tells only whether a session streams.
    if (entry.state === null && entry.figures.connected !== undefined) {
      entry.state = entry.figures.connected >= 1 ? "leading" : "not connected";
    }
  }
  return out;
}

function formatBytes(n) {
  if (n === undefined) return "\u2013";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

function formatSeconds(s) {
  if (s === undefined || s === null) return "\u2013";
  if (s < 1) return s === 0 ? "none" : Math.round(s * 1000) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function formatCount(n) {
  return n === undefined ? "\u2013" : String(Math.round(n));
}

function setText(root, selector, text) {
  const el = root.querySelector(selector);
  if (el && el.textContent !== text) el.textContent = text;
}

function cardFor(name) {
  let entry = sources.get(name);
  if (entry) return entry;
  const template = document.getElementById("source-card");
  const card = template.content.firstElementChild.cloneNode(true);
  card.dataset.source = name;
  card.querySelector(".name").textContent = name;
  const chart = card.querySelector(".chart");
  for (const y of [35, 70, 105]) {
    const grid = document.createElementNS(SVG, "line");
    grid.setAttribute("class", "grid");
    grid.setAttribute("x1", "0");
    grid.setAttribute("x2", "600");
    grid.setAttribute("y1", String(y));
    grid.setAttribute("y2", String(y));
    chart.appendChild(grid);
  }
  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute("class", "area");
  const series = document.createElementNS(SVG, "polyline");
  series.setAttribute("class", "series");
  chart.append(area, series);
  document.getElementById("sources").appendChild(card);
  entry = { card, series, area, history: [], last: null };
  sources.set(name, entry);
  return entry;
}

// Events/s since the last poll; a counter that went down (a restarted relay) starts anew.
function rate(entry, published, at) {
  const last = entry.last;
  entry.last = { published, at };
  if (!last || published === undefined || last.published === undefined) return null;
  const seconds = (at - last.at) / 1000;
  if (seconds <= 0 || published < last.published) return 0;
  return (published - last.published) / seconds;
}

function drawChart(entry) {
  const h = entry.history;
  const peak = Math.max(1, ...h);
  const step = 600 / (HISTORY - 1);
  const x0 = 600 - (h.length - 1) * step;
  const points = h.map((v, i) => (x0 + i * step).toFixed(1) + "," + (135 - (v / peak) * 125).toFixed(1));
  entry.series.setAttribute("points", points.join(" "));
  entry.area.setAttribute(
    "points",
    h.length ? x0.toFixed(1) + ",140 " + points.join(" ") + " 600,140" : "",
  );
  setText(entry.card, ".peak", (h.length ? Math.max(...h) : 0).toFixed(1));
}

function render(samples, at) {
  for (const [name, data] of bySource(samples)) {
    const entry = cardFor(name);
    const f = data.figures;
    const r = rate(entry, f.published, at);
    if (r !== null) {
      entry.history.push(r);
      if (entry.history.length > HISTORY) entry.history.shift();
      setText(entry.card, '[data-metric="rate"]', r.toFixed(1));
    }
    const state = entry.card.querySelector(".state");
    const stateText = data.state || "unknown";
    if (state.textContent !== stateText) {
      state.textContent = stateText;
      state.className = "state " + stateText.replace(/\s+/g, "-");
    }
    setText(entry.card, '[data-metric="published"]', formatCount(f.published));
    setText(entry.card, '[data-metric="dead_lettered"]', formatCount(f.dead_lettered));
    setText(entry.card, '[data-metric="oldest_pending"]', formatSeconds(f.oldest_pending));
    setText(entry.card, '[data-metric="lag_bytes"]', formatBytes(f.lag_bytes));
    setText(entry.card, '[data-metric="retained_wal"]', formatBytes(f.retained_wal));
    setText(entry.card, '[data-metric="reconnects"]', formatCount(f.reconnects));
    drawChart(entry);
  }
}

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function getText(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.text();
}

async function pollMetrics() {
  try {
    const text = await getText("metrics");
    const at = Date.now();
    render(parseMetrics(text), at);
    showStatus("updated " + new Date(at).toLocaleTimeString(), false);
  } catch (error) {
    showStatus("cannot read the metrics: " + error.message, true);
  }
  setTimeout(pollMetrics, METRICS_EVERY_MS);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function pollDeadLetters() {
  const summary = document.getElementById("dead-letters-summary");
  try {
    const data = JSON.parse(await getText("api/dead-letters"));
    const rows = data.dead_letters.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.eventId = d.event_id || "";
      tr.append(
        cell(d.event_id || "(none)", "mono"),
        cell(d.reason, "reason"),
        cell(d.original_topic || "(not an outbox event)"),
        cell(d.source_position || "\u2013", "mono"),
        cell(formatSeconds(d.age_seconds)),
        cell(d.redriven ? "yes" : d.not_redrivable ? "cannot: " + d.not_redrivable : "no"),
      );
      return tr;
    });
    document.querySelector("#dead-letters tbody").replaceChildren(...rows);
    if (data.error) {
      summary.textContent = "cannot read " + data.topic + ": " + data.error;
    } else if (data.total === 0) {
      summary.textContent = "none in " + data.topic;
    } else {
      summary.textContent =
        data.total + " in " + data.topic + (data.total > rows.length ? ", the newest " + rows.length + " shown" : "");
    }
    summary.classList.toggle("error", Boolean(data.error));
  } catch (error) {
    summary.textContent = "cannot read the dead letters: " + error.message;
    summary.classList.add("error");
  }
  setTimeout(pollDeadLetters, DEAD_LETTERS_EVERY_MS);
}

async function start() {
  try {
    const info = JSON.parse(await getText("api/relay"));
    if (info.source) relay.source = info.source;
    document.getElementById("version").textContent = info.version;
  } catch (error) {
    showStatus("cannot read api/relay: " + error.message, true);
  }
  pollMetrics();
  pollDeadLetters();
}

start();
