// Plotly charts. Plotly itself is loaded by index.html from the service's copy of
// the plotly Python package, so no chart code comes from a CDN.

import { OP_STYLES, OPERATIONS } from "./cellgraph.js";

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const FONT = { family: "system-ui, -apple-system, 'Segoe UI', sans-serif", size: 12, color: "#1f2937" };
const CELL_COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#9333ea", "#0891b2", "#dc2626", "#4b5563"];

function baseLayout(title, extra = {}) {
  return {
    title: { text: title, font: { size: 14 }, x: 0, xanchor: "left" },
    font: FONT,
    margin: { l: 56, r: 40, t: 36, b: 72 },
    height: 300,
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
    legend: { orientation: "h", y: -0.3, x: 0, yanchor: "top" },
    xaxis: { gridcolor: "#e5e7eb", zeroline: false, ...extra.xaxis },
    yaxis: { gridcolor: "#e5e7eb", zeroline: false, ...extra.yaxis },
    ...Object.fromEntries(Object.entries(extra).filter(([key]) => !["xaxis", "yaxis"].includes(key))),
  };
}

function plot(node, traces, layout) {
  if (!window.Plotly) {
    node.textContent = "Charts are unavailable because plotly.min.js did not load.";
    node.classList.add("error");
    return;
  }
  window.Plotly.react(node, traces, layout, CONFIG);
}

export function purgeCharts(root) {
  if (!window.Plotly) return;
  for (const node of root.querySelectorAll(".js-plotly-plot")) window.Plotly.purge(node);
}

/** Vertical lines at section starts (after the first) and at the replayed epoch. */
function epochMarks(sections, markedEpoch) {
  const shapes = [];
  const annotations = [];
  for (const section of sections || []) {
    if (!section.section) continue;
    const x = section.start_epoch - 0.5;
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color: "#9ca3af", width: 1, dash: "dot" } });
    annotations.push({ x, xref: "x", yref: "paper", y: 1, yanchor: "bottom", text: `S${section.section}`, showarrow: false, font: { size: 10, color: "#6b7280" } });
  }
  if (markedEpoch !== null && markedEpoch !== undefined) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: markedEpoch, x1: markedEpoch, y0: 0, y1: 1, line: { color: "#f59e0b", width: 2 } });
  }
  return { shapes, annotations };
}

function line(name, x, y, extra = {}) {
  return { type: "scatter", mode: "lines+markers", name, x, y, marker: { size: 4 }, ...extra };
}

/** Draw every training curve into the nodes of `targets`, keyed by chart name. */
export function drawCurves(targets, metrics, sections, markedEpoch) {
  const epochs = metrics.map((row) => row.epoch);
  const marks = epochMarks(sections, markedEpoch);
  const axis = { xaxis: { title: { text: "epoch", standoff: 4 }, dtick: epochs.length > 20 ? undefined : 1 } };

  plot(targets.accuracy, [
    line("train", epochs, metrics.map((row) => row.train_accuracy)),
    line("test", epochs, metrics.map((row) => row.test_accuracy)),
  ], baseLayout("Accuracy", { ...axis, ...marks, yaxis: { title: { text: "%" } } }));

  plot(targets.loss, [
    line("train", epochs, metrics.map((row) => row.train_loss)),
    line("test", epochs, metrics.map((row) => row.test_loss)),
  ], baseLayout("Loss", { ...axis, ...marks, yaxis: { title: { text: "cross-entropy" } } }));

  const cellCount = Math.max(0, ...metrics.map((row) => (row.compression || []).length));
  const compression = [];
  for (let cell = 0; cell < cellCount; cell += 1) {
    const color = CELL_COLORS[cell % CELL_COLORS.length];
    compression.push(line(`cell ${cell}`, epochs, metrics.map((row) => (row.compression || [])[cell] ?? null), { line: { color }, legendgroup: `c${cell}` }));
    const targetValues = metrics.map((row) => (row.targets || [])[cell] ?? null);
    if (targetValues.some((value) => value !== null)) {
      compression.push(line(`target ${cell}`, epochs, targetValues, { mode: "lines", line: { color, dash: "dash", width: 1 }, legendgroup: `c${cell}`, showlegend: false }));
    }
  }
  plot(targets.compression, compression, baseLayout("Compression per cell (dashed: target)", {
    ...axis, ...marks, yaxis: { title: { text: "fraction kept" }, range: [0, 1.05] },
  }));

  // λ doubles while a target is unmet, so a log axis shows it best. It is 0 once the
  // last section trains without a compression term, and then the axis is linear.
  const lambdas = metrics.map((row) => row.lambda);
  const logAxis = lambdas.every((value) => value === null || value > 0);
  plot(targets.lambda, [line("lambda", epochs, lambdas, { line: { color: "#9333ea" } })],
    baseLayout("Compression-loss weight λ", {
      ...axis, ...marks, showlegend: false,
      yaxis: logAxis ? { type: "log", title: { text: "λ" }, exponentformat: "power" } : { title: { text: "λ" }, rangemode: "tozero" },
    }));

  const mib = (value) => (value === null || value === undefined ? null : value / 2 ** 20);
  plot(targets.memory, [
    line("measured", epochs, metrics.map((row) => mib(row.memory_measured))),
    line("predicted", epochs, metrics.map((row) => mib(row.memory_predicted))),
    line("budget", epochs, metrics.map((row) => mib(row.budget)), { mode: "lines", line: { color: "#dc2626", dash: "dash" } }),
  ], baseLayout("Training memory", { ...axis, ...marks, yaxis: { title: { text: "MiB" }, rangemode: "tozero" } }));
}

/** Grouped bars of operation counts, one group per operation and one series per entry. */
export function drawOpCountBars(node, title, series) {
  const labels = OPERATIONS.map((op) => OP_STYLES[op].label);
  const traces = series.map(({ name, counts, color }) => ({
    type: "bar",
    name,
    x: labels,
    y: OPERATIONS.map((op) => counts?.[op] ?? 0),
    marker: color ? { color } : undefined,
  }));
  plot(node, traces, baseLayout(title, { barmode: "group", yaxis: { title: { text: "operations" }, rangemode: "tozero" } }));
}

/** Stacked bars of operation counts per cell, one colour per operation. */
export function drawOpCountsByDepth(node, byDepth) {
  const cells = byDepth.map((entry) => `c${entry.cell} ${entry.type === "reduction" ? "R" : "N"}`);
  const traces = OPERATIONS.map((op) => ({
    type: "bar",
    name: OP_STYLES[op].label,
    x: cells,
    y: byDepth.map((entry) => entry.counts[op] ?? 0),
    marker: { color: OP_STYLES[op].color },
  }));
  plot(node, traces, baseLayout("Operations by cell depth", { barmode: "stack", yaxis: { title: { text: "operations" } } }));
}
