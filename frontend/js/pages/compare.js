// A search beside its random level-1 and level-2 baselines.

import { api, fetchAllMetrics } from "../api.js";
import {
  el, formatBytes, formatCount, formatDuration, formatPercent, replaceContent, stateBadge,
  tableHead, TERMINAL_STATES,
} from "../dom.js";
import { drawOpCountBars } from "../charts.js";

const COLORS = ["#2563eb", "#d97706", "#059669", "#9333ea", "#db2777"];
const REFRESH_MS = 3000;

function role(search) {
  return search.baseline ? `random level ${search.baseline}` : "Bonsai-Net";
}

function totalCounts(graph) {
  const totals = {};
  for (const counts of Object.values(graph?.op_counts?.by_type || {})) {
    for (const [op, count] of Object.entries(counts)) totals[op] = (totals[op] || 0) + count;
  }
  return totals;
}

function peakMemory(metrics) {
  const values = metrics.map((row) => row.memory_measured).filter((value) => value !== null && value !== undefined);
  return values.length ? Math.max(...values) : null;
}

async function loadEntry(search) {
  const base = `/api/searches/${encodeURIComponent(search.id)}`;
  const [metrics, graph] = await Promise.all([
    fetchAllMetrics(search.id),
    api(`${base}/graph`),
  ]);
  return { search, metrics, graph };
}

export async function renderCompare(view, id) {
  let stopped = false;
  let timer = null;
  const message = el("div", { class: "form-message", role: "alert", id: "compare-message" });
  const table = el("div", { id: "compare-table" });
  const charts = {
    total: el("div", { class: "chart", id: "chart-compare-total" }),
    normal: el("div", { class: "chart", id: "chart-compare-normal" }),
    reduction: el("div", { class: "chart", id: "chart-compare-reduction" }),
  };
  const actions = el("div", { class: "toolbar" });
  const title = el("h1", { text: "Compare" });

  view.append(
    el("section", { class: "panel" },
      el("div", { class: "panel-head" }, title, actions),
      el("p", { class: "muted", text: "The search beside its random-search baselines: level 1 grows randomly connected sections at the search's compression, level 2 starts the whole model at random at its final compression." }),
      message, table),
    el("section", { class: "panel" }, el("h2", { text: "Operation counts" }),
      el("div", { class: "chart-grid" }, Object.values(charts))),
  );

  async function startBaseline(level) {
    try {
      await api(`/api/searches/${encodeURIComponent(id)}/baselines`, { method: "POST", body: { level } });
      message.textContent = "";
      refresh();
    } catch (error) {
      message.textContent = `Starting the level-${level} baseline failed: ${error.message}`;
      message.className = "form-message error";
    }
  }

  async function refresh() {
    clearTimeout(timer);
    let compare;
    let entries;
    try {
      compare = await api(`/api/searches/${encodeURIComponent(id)}/compare`);
      entries = await Promise.all([compare.search, ...compare.baselines].map(loadEntry));
    } catch (error) {
      message.textContent = `Loading the comparison failed: ${error.message}`;
      message.className = "form-message error";
      timer = setTimeout(refresh, REFRESH_MS);
      return;
    }
    if (stopped) return;
    message.textContent = "";
    message.className = "form-message";
    const main = compare.search;
    title.textContent = `Compare: ${main.name || main.id.slice(0, 8)}`;
    const levels = new Set(compare.baselines.map((search) => search.baseline));
    actions.replaceChildren(
      el("a", { class: "button", href: `#/searches/${encodeURIComponent(id)}`, text: "Back to the search" }),
      ...[1, 2].map((level) =>
        el("button", {
          type: "button",
          id: `compare-baseline-${level}`,
          text: levels.has(level) ? `Another level-${level} baseline` : `Start level-${level} baseline`,
          disabled: main.state !== "succeeded",
          onclick: () => startBaseline(level),
        })),
    );

    const header = ["", "search", "state", "test accuracy", "parameters", "peak memory", "time"];
    replaceContent(table,
      el("table", { class: "compare" },
        tableHead(header, ["test accuracy", "parameters", "peak memory", "time"]),
        el("tbody", {}, entries.map(({ search, metrics }) =>
          el("tr", { dataset: { searchId: search.id } },
            el("td", { text: role(search) }),
            el("td", {}, el("a", { href: `#/searches/${encodeURIComponent(search.id)}`, text: search.name || search.id.slice(0, 8) })),
            el("td", {}, stateBadge(search.state)),
            el("td", { class: "num", text: formatPercent(search.test_accuracy ?? search.best_test_accuracy) }),
            el("td", { class: "num", text: formatCount(search.params) }),
            el("td", { class: "num", text: formatBytes(peakMemory(metrics)) }),
            el("td", { class: "num", text: formatDuration(search.elapsed_seconds) }))))),
      compare.baselines.length ? null : el("p", { class: "muted", text: "No baseline yet. Start one with the buttons above once the search has succeeded." }),
    );

    // Legends name searches by role and id, not by their user-supplied names, because
    // plotly renders a subset of HTML tags in trace names.
    const series = (pick) => entries.map(({ search, graph }, index) => ({
      name: `${role(search)} ${search.id.slice(0, 6)}`,
      counts: pick(graph),
      color: COLORS[index % COLORS.length],
    }));
    drawOpCountBars(charts.total, "All cells", series(totalCounts));
    drawOpCountBars(charts.normal, "Normal cells", series((graph) => graph?.op_counts?.by_type?.normal));
    drawOpCountBars(charts.reduction, "Reduction cells", series((graph) => graph?.op_counts?.by_type?.reduction));

    const active = entries.some(({ search }) => !TERMINAL_STATES.has(search.state));
    if (active && !stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
