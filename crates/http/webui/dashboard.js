// The dashboard: polls /metrics every second (Prometheus text, prom.js), keeps two minutes of
// history and draws it (charts.js); server facts and flags come once from /ui/info.

import { api, apiKey, askKey, AuthError, el, errorText, setApiKey } from "./common.js";
import { LineChart, color } from "./charts.js";
import * as prom from "./prom.js";

const $ = (id) => document.getElementById(id);
const P = "switchyard:";
const WINDOW = 10; // seconds over which percentiles and the prefix hit rate are taken
const POLL_MS = 1000;

const ms = (s) => (s === null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
const pct = (v) => (v === null ? "–" : `${v.toFixed(v < 10 ? 1 : 0)}%`);
// Milliseconds without the unit (the card's title carries it), so three readouts fit a card.
const msNum = (s) => (s === null ? "–" : s < 0.01 ? (s * 1000).toFixed(1) : String(Math.round(s * 1000)));
const int = (v) => (v === null ? "–" : String(Math.round(v)));
const rate = (v) => (v === null ? "–" : v >= 100 ? String(Math.round(v)) : v.toFixed(1));

const CARDS = [
  { id: "requests", title: "Requests", series: [["running", "v-running"], ["waiting", "v-waiting"]], fmt: int },
  { id: "kv", title: "KV cache usage", series: [["in use", "v-kv"]], fmt: pct, max: 100, tick: (v) => `${v}%` },
  {
    id: "prefix",
    title: "Prefix cache hit rate",
    series: [[`last ${WINDOW} s`, "v-prefix"]],
    fmt: pct,
    max: 100,
    tick: (v) => `${v}%`,
  },
  { id: "tps", title: "Tokens per second", series: [["prompt", "v-prompt-tps"], ["generation", "v-gen-tps"]], fmt: rate },
  {
    id: "ttft",
    title: "Time to first token, ms",
    series: [["p50", "v-ttft-p50"], ["p90", "v-ttft-p90"], ["p99", "v-ttft-p99"]],
    fmt: msNum,
    tick: ms,
  },
  {
    id: "itl",
    title: "Inter-token latency, ms",
    series: [["p50", "v-itl-p50"], ["p90", "v-itl-p90"], ["p99", "v-itl-p99"]],
    fmt: msNum,
    tick: ms,
  },
  { id: "preempt", title: "Preemptions", series: [["per second", "v-preempt"]], fmt: rate },
  { id: "errors", title: "Error responses", series: [["4xx / s", "v-4xx"], ["5xx / s", "v-5xx"]], fmt: rate },
];

const charts = {};
const history = []; // [{t, m (parsed metrics)}]
let info = null;
let infoAt = 0;

function buildCards() {
  const box = $("cards");
  for (const c of CARDS) {
    const readouts = el("div", { class: c.series.length > 2 ? "readouts many" : "readouts" });
    c.series.forEach(([label, id], i) => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = color(i);
      readouts.append(el("span", { class: "readout" }, sw, el("span", { class: "v", id, text: "–" }), el("span", { class: "l", text: label })));
    });
    const canvas = el("canvas", { id: `chart-${c.id}`, "aria-label": `${c.title} over the last two minutes` });
    box.append(
      el(
        "section",
        { class: "card", id: `card-${c.id}` },
        el("div", { class: "card-head" }, el("h3", { text: c.title }), el("span", { class: "sub", id: `sub-${c.id}` })),
        readouts,
        canvas
      )
    );
    charts[c.id] = new LineChart(
      canvas,
      c.series.map((s) => s[0]),
      { max: c.max, format: c.tick || ((v) => (v >= 1000 ? `${v / 1000}k` : String(v))) }
    );
  }
}

// The reading closest to `secs` before the latest (the oldest one if history is shorter).
function before(secs) {
  const now = history[history.length - 1];
  for (const h of history) if (h.t >= now.t - secs - 0.5) return h === now ? null : h;
  return null;
}

function counterRate(now, prev, name, filter) {
  if (!prev) return null;
  const a = prom.value(now.m, P + name, filter);
  const b = prom.value(prev.m, P + name, filter);
  if (a === null || b === null || a < b) return null;
  return (a - b) / (now.t - prev.t);
}

function statusRate(now, prev, lo, hi) {
  if (!prev) return null;
  const sum = (m) =>
    Object.entries(prom.byLabel(m, P + "http_requests_total", "status"))
      .filter(([s]) => Number(s) >= lo && Number(s) < hi)
      .reduce((a, [, v]) => a + v, 0);
  const d = sum(now.m) - sum(prev.m);
  return d >= 0 ? d / (now.t - prev.t) : null;
}

function update() {
  const now = history[history.length - 1];
  const prev = history.length > 1 ? history[history.length - 2] : null;
  const win = before(WINDOW);
  const m = now.m;
  const v = (name) => prom.value(m, P + name);
  const values = {};
  values.requests = [v("num_requests_running"), v("num_requests_waiting")];
  const kv = v("kv_cache_usage_perc");
  values.kv = [kv === null ? null : kv * 100];
  let hit = null;
  if (win) {
    const q = v("prefix_cache_queries_total") - prom.value(win.m, P + "prefix_cache_queries_total");
    const h = v("prefix_cache_hits_total") - prom.value(win.m, P + "prefix_cache_hits_total");
    hit = q > 0 ? (100 * h) / q : null;
  }
  values.prefix = [hit];
  const lifeQ = v("prefix_cache_queries_total");
  $("sub-prefix").textContent = lifeQ ? `lifetime ${pct((100 * v("prefix_cache_hits_total")) / lifeQ)}` : "";
  values.tps = [counterRate(now, prev, "prompt_tokens_total"), counterRate(now, prev, "generation_tokens_total")];
  for (const [id, name] of [
    ["ttft", "time_to_first_token_seconds"],
    ["itl", "inter_token_latency_seconds"],
  ]) {
    const h = prom.histogram(m, P + name);
    const d = prom.delta(h, win ? prom.histogram(win.m, P + name) : null);
    const use = d && d.count > 0 ? d : null;
    values[id] = [0.5, 0.9, 0.99].map((q) => prom.quantile(q, use));
    $(`sub-${id}`).textContent = use ? `last ${WINDOW} s · ${use.count} obs.` : `none in the last ${WINDOW} s`;
  }
  values.preempt = [counterRate(now, prev, "num_preemptions_total")];
  $("sub-preempt").textContent = `total ${int(v("num_preemptions_total"))}`;
  values.errors = [statusRate(now, prev, 400, 500), statusRate(now, prev, 500, 600)];
  const byStatus = prom.byLabel(m, P + "http_requests_total", "status");
  const errs = Object.entries(byStatus)
    .filter(([s]) => Number(s) >= 400)
    .reduce((a, [, x]) => a + x, 0);
  $("sub-errors").textContent = `total ${errs}`;
  for (const c of CARDS) {
    charts[c.id].push(now.t, values[c.id]);
    charts[c.id].draw();
    c.series.forEach(([, id], i) => ($(id).textContent = c.fmt(values[c.id][i])));
  }
  fillTable(
    "t-status",
    Object.entries(byStatus).map(([s, n]) => [s, int(n)])
  );
  const finish = prom.byLabel(m, P + "request_success_total", "finished_reason");
  fillTable("t-totals", [
    ...Object.entries(finish).map(([r, n]) => [`requests ended: ${r}`, int(n)]),
    ["prompt tokens", int(v("prompt_tokens_total"))],
    ["generated tokens", int(v("generation_tokens_total"))],
    ["engine steps", int(v("engine_steps_total"))],
    ["rejected (429)", int(v("requests_rejected_overload_total"))],
    ["KV blocks", `${int(v("kv_cache_num_blocks"))} (${int(v("kv_cache_free_blocks"))} free)`],
  ]);
}

function fillTable(id, rows) {
  $(id).replaceChildren(...rows.map(([k, val]) => el("tr", {}, el("td", { text: k }), el("td", { class: "n", text: val }))));
}

function showInfo() {
  const names = info.models.join(", ");
  $("d-model").textContent = names;
  document.title = `${info.models[0]} · Switchyard dashboard`;
  const all = [
    ["version", info.version],
    ...Object.entries(info.facts),
    ["chat template", info.chat ? "yes" : "no (completions only)"],
    ["max model len", String(info.max_model_len)],
    ["max seqs", String(info.max_num_seqs)],
    ["step budget", `${info.max_num_batched_tokens} tokens`],
    ["prefix caching", info.prefix_caching ? "on" : "off"],
  ];
  // The header line keeps the short facts; all of them are in the Server table.
  const SHORT = ["version", "device", "backend", "SIMD level", "threads", "architecture"];
  const facts = [...all.filter(([k]) => SHORT.includes(k)), ["uptime", ""]];
  fillTable("t-server", all);
  $("facts").replaceChildren(
    ...facts.map(([k, val]) =>
      el("span", { class: "fact" }, `${k}: `, el("b", { text: val, id: k === "uptime" ? "d-uptime" : null }))
    )
  );
  fillTable("t-flags", Object.entries(info.flags));
  tickUptime();
}

function tickUptime() {
  const e = $("d-uptime");
  if (!e || !info) return;
  let s = Math.floor(info.uptime_s + (performance.now() - infoAt) / 1000);
  const d = Math.floor(s / 86400);
  s %= 86400;
  const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60].map((x) => String(x).padStart(2, "0")).join(":");
  e.textContent = d ? `${d}d ${hms}` : hms;
}

function setStatus(ok, text) {
  const b = $("d-status");
  b.textContent = text;
  b.className = "badge " + (ok ? "live" : "stale");
}

async function withKey(fn) {
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      const had = apiKey();
      setApiKey("");
      await askKey(had ? "The server did not accept that key. Try again." : "This server needs an API key.");
    }
  }
}

async function poll() {
  try {
    const r = await withKey(() => api("/metrics"));
    if (!r.ok) throw new Error(await errorText(r));
    const m = prom.parse(await r.text());
    history.push({ t: performance.now() / 1000, m });
    while (history.length > WINDOW + 5) history.shift();
    update();
    tickUptime();
    setStatus(true, "live");
  } catch (e) {
    setStatus(false, "no data: " + e.message);
  }
  setTimeout(poll, POLL_MS);
}

async function boot() {
  buildCards();
  try {
    const r = await withKey(() => api("/ui/info"));
    if (!r.ok) throw new Error(await errorText(r));
    info = await r.json();
    infoAt = performance.now();
    showInfo();
  } catch (e) {
    setStatus(false, "no server info: " + e.message);
  }
  poll();
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.draw()));
}

boot();
