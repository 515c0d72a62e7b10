// Costs: spend per day and provider as an SVG chart (GET /v1/usage), and budgets
// with what is left (GET /v1/budgets). Both are read again when the tenant's events
// say money moved (a job ran, finished or was canceled).
import { api, clear, el, flash, fmtTime, fmtUsd, initChrome, requireLogin, stream } from "./vidpipe.js";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
let session = null;

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  const days = [];
  const day = new Date(from + "T00:00:00Z");
  const last = new Date(to + "T00:00:00Z");
  while (day <= last) {
    days.push(isoDay(day));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}

/** A round step for the y axis, so gridlines read $0.05, $0.10, … */
function niceStep(max) {
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
}

function drawChart(usage) {
  const days = daysBetween(usage.from, usage.to);
  const providers = [...new Set(usage.data.map((r) => r.provider))].sort();
  const spend = new Map(); // day → provider → usd
  for (const row of usage.data) {
    if (!spend.has(row.day)) spend.set(row.day, new Map());
    spend.get(row.day).set(row.provider, row.spend_usd);
  }
  const totals = days.map((d) => [...(spend.get(d) || new Map()).values()].reduce((a, b) => a + b, 0));
  const max = Math.max(...totals, 0);
  const step = max > 0 ? niceStep(max) : 1;
  const top = max > 0 ? Math.ceil(max / step) * step : 1;
  // One number of decimals on the whole axis: the step's own, at least cents.
  const digits = Math.min(4, Math.max(2, (String(step).split(".")[1] || "").length));

  const width = 760;
  const height = 260;
  const left = 64;
  const right = 12;
  const topPad = 12;
  const bottom = 40;
  const plotW = width - left - right;
  const plotH = height - topPad - bottom;
  const slot = plotW / days.length;
  const barW = Math.max(Math.min(slot * 0.7, 40), 2);
  const y = (usd) => topPad + plotH - (usd / top) * plotH;

  const total = totals.reduce((a, b) => a + b, 0);
  const chart = svg(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "chart-title chart-desc",
      class: "spend-chart",
      "data-total": total.toFixed(6),
    },
    svg("title", { id: "chart-title" }, "Spend per day and provider"),
    svg("desc", { id: "chart-desc" }, `${fmtUsd(total)} from ${usage.from} to ${usage.to}, stacked by provider.`),
  );
  for (let v = 0; v <= top + 1e-12; v += step) {
    chart.append(
      svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, "$" + v.toFixed(digits)),
    );
  }
  days.forEach((day, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let base = 0;
    providers.forEach((provider, p) => {
      const usd = (spend.get(day) || new Map()).get(provider) || 0;
      if (usd <= 0) return;
      const rect = svg("rect", {
        x,
        y: y(base + usd),
        width: barW,
        height: Math.max(y(base) - y(base + usd), 1),
        fill: COLORS[p % COLORS.length],
        class: "bar",
        "data-day": day,
        "data-provider": provider,
      });
      rect.append(svg("title", {}, `${day} · ${provider}: ${fmtUsd(usd)}`));
      chart.append(rect);
      base += usd;
    });
    // Label about eight days, counted back from the last so it is always labelled.
    const every = Math.ceil(days.length / 8);
    if ((days.length - 1 - i) % every === 0) {
      chart.append(
        svg("text", { x: x + barW / 2, y: height - bottom + 16, "text-anchor": "middle", class: "axis" }, day.slice(5)),
      );
    }
  });
  chart.append(svg("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "baseline" }));
  if (max === 0) {
    chart.append(
      svg("text", { x: left + plotW / 2, y: topPad + plotH / 2, "text-anchor": "middle", class: "nodata" }, "No spend in this period"),
    );
  }

  const legend = el("ul", { class: "legend" });
  providers.forEach((provider, p) => {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = COLORS[p % COLORS.length];
    legend.append(el("li", {}, swatch, provider));
  });
  clear(document.getElementById("chart")).append(chart, legend);

  const jobs = usage.data.reduce((a, r) => a + r.jobs, 0);
  const failures = usage.data.reduce((a, r) => a + r.failures, 0);
  const failureCost = usage.data.reduce((a, r) => a + r.failure_cost_usd, 0);
  document.getElementById("totals").textContent =
    `${fmtUsd(total)} spent from ${usage.from} to ${usage.to} (UTC) · ${jobs} jobs ran · ` +
    `${failures} failed attempts, costing ${fmtUsd(failureCost)}`;

  const tbody = clear(document.getElementById("usage").tBodies[0]);
  for (const row of usage.data) {
    tbody.append(
      el(
        "tr",
        {},
        el("td", {}, row.day),
        el("td", {}, row.provider),
        el("td", { class: "num" }, fmtUsd(row.spend_usd)),
        el("td", { class: "num" }, String(row.jobs)),
        el("td", { class: "num" }, String(row.attempts)),
        el("td", { class: "num" }, String(row.seconds)),
        el("td", { class: "num" }, String(row.failures)),
        el("td", { class: "num" }, fmtUsd(row.failure_cost_usd)),
      ),
    );
  }
}

function scopeText(scope) {
  if (scope === "global") return "whole installation";
  if (session && scope === "tenant:" + session.tenant_id) return `tenant ${session.tenant_name}`;
  return scope;
}

function drawBudgets(budgets) {
  const tbody = clear(document.getElementById("budgets").tBodies[0]);
  document.getElementById("budgets-empty").hidden = budgets.data.length > 0;
  for (const b of budgets.data) {
    const used = Math.min(b.used_percent, 100);
    const meter = el("meter", { min: 0, max: 100, low: 80, high: 99, optimum: 0, value: used, "aria-label": "Used" });
    tbody.append(
      el(
        "tr",
        { dataset: { scope: b.scope, period: b.period } },
        el("td", {}, scopeText(b.scope)),
        el("td", {}, b.period),
        el("td", { class: "num" }, fmtUsd(b.limit_usd)),
        el("td", { class: "num" }, fmtUsd(b.spent_usd)),
        el("td", { class: "num" }, fmtUsd(b.reserved_usd)),
        el("td", { class: "num left" }, fmtUsd(b.remaining_usd)),
        el("td", {}, meter, ` ${b.used_percent}%`),
        el("td", {}, fmtTime(b.resets_at)),
      ),
    );
  }
  const credits = document.getElementById("credits");
  credits.hidden = budgets.credits_usd === null || budgets.credits_usd === undefined;
  credits.textContent = `Prepaid credits left: ${fmtUsd(budgets.credits_usd)}`;
}

async function load() {
  const days = Number(document.getElementById("period").value);
  const from = new Date(Date.now() - (days - 1) * 86400000);
  const query = new URLSearchParams({ group_by: "day,provider", from: isoDay(from) });
  try {
    const [usage, budgets] = await Promise.all([api("/v1/usage?" + query), api("/v1/budgets")]);
    drawChart(usage);
    drawBudgets(budgets);
  } catch (err) {
    flash(err.message);
  }
}

let timer = null;
function loadSoon() {
  clearTimeout(timer);
  timer = setTimeout(load, 500);
}

document.getElementById("period").addEventListener("change", load);

if (requireLogin()) {
  initChrome().then((s) => {
    session = s;
    load();
  });
  stream("/v1/events", {
    onEvent: (event) => {
      if (/^(step\.(attempt|succeeded|retrying|fallback)|video\.(completed|failed|canceled))$/.test(event.type)) {
        loadSoon();
      }
    },
  });
}
