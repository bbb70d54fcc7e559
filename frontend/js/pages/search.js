// One search, live and after the fact: cell graphs, inter-cell view, operation
// counts, motifs, curves, section timeline, replay slider and downloads.
//
// Structure comes from the graph analysis endpoint, so the page draws what the
// Python analysis computes. Events from the stream only trigger new fetches.

import { api, fetchAllMetrics, reportConnection } from "../api.js";
import {
  el, formatBytes, formatCount, formatDuration, formatFraction, formatPercent, stateBadge,
  tableHead, TERMINAL_STATES, epochsDone,
} from "../dom.js";
import { drawCell, drawInterCell, edgeDetails, opLegend } from "../cellgraph.js";
import { drawCurves, drawOpCountBars, drawOpCountsByDepth } from "../charts.js";
import { openEventStream } from "../stream.js";

const STRUCTURE_EVENTS = new Set(["section_added", "deadheaded", "pruner_snapshot", "epoch_end", "finished"]);
// Deadheaded connections fade out for this long before the refetched graph drops them.
const VANISH_MS = 700;
const REFRESH_DELAY_MS = 250;
const MOTIF_NAMES = {
  residual_edge: "residual edge",
  residual_path: "residual path",
};

function shortList(items, shown) {
  if (items.length <= shown) return items.join(" ");
  return `${items.slice(0, shown).join(" ")} and ${items.length - shown} more`;
}

function statTile(label, value, id) {
  return el("div", { class: "stat" }, el("div", { class: "stat-label", text: label }), el("div", { class: "stat-value", id, text: value }));
}

function sectionTimeline(sections, totalEpochs, running) {
  if (!sections.length) return el("p", { class: "muted", text: "No section has started yet." });
  const total = Math.max(totalEpochs || 0, ...sections.map((s) => (s.end_epoch ?? s.start_epoch) + 1));
  const bars = el("div", { class: "timeline-bar" });
  const rows = [];
  sections.forEach((section, index) => {
    // The section in training has ended no epoch yet when its end lies before its start.
    const current = running && index === sections.length - 1;
    const end = Math.max(section.end_epoch ?? section.start_epoch, section.start_epoch - 1);
    const spent = end - section.start_epoch + 1;
    const types = (section.types || []).map((type) => (type === "reduction" ? "R" : "N")).join("");
    bars.append(
      el("div", {
        class: `timeline-segment segment-${section.section % 4}`,
        style: `left:${(section.start_epoch / total) * 100}%;width:${(Math.max(spent, 0.3) / total) * 100}%`,
        title: `section ${section.section}: epochs ${section.start_epoch} to ${end}`,
        text: `S${section.section}`,
      }),
    );
    rows.push(
      el("tr", { dataset: { section: String(section.section) } },
        el("td", { text: section.section }),
        el("td", { text: `${types} (${Array.isArray(section.cells) ? section.cells.length : section.cells})` }),
        el("td", { class: "num", text: section.target === null || section.target === undefined ? "none" : formatFraction(section.target) }),
        el("td", { class: "num", text: `${section.start_epoch} to ${current ? "…" : end}` }),
        el("td", { class: "num", text: current ? `${spent} so far` : spent })),
    );
  });
  return el("div", {},
    bars,
    el("table", { class: "compact" },
      tableHead(["section", "cells", "target", "epochs", "epochs spent"], ["target", "epochs", "epochs spent"]),
      el("tbody", {}, rows)));
}

function motifSummary(graph) {
  const totals = graph.motif_counts || {};
  const rows = (graph.cells || []).map((cell) =>
    el("tr", { dataset: { cell: String(cell.index) } },
      el("td", { text: `c${cell.index}` }),
      el("td", { text: cell.type }),
      el("td", { class: "num", text: cell.motif_counts?.residual_edge ?? 0 }),
      el("td", { class: "num", text: cell.motif_counts?.residual_path ?? 0 }),
      el("td", { text: cell.parameter_free ? "yes" : "no" })),
  );
  return el("div", { class: "motif-summary" },
    el("div", { class: "stats" },
      statTile("residual edges", totals.residual_edge ?? 0, "motif-residual-edge"),
      statTile("residual paths", totals.residual_path ?? 0, "motif-residual-path"),
      statTile("parameter-free cells", totals.parameter_free_cells ?? 0, "motif-parameter-free")),
    el("table", { class: "compact" },
      tableHead(["cell", "type", "residual edges", "residual paths", "parameter-free"], ["residual edges", "residual paths"]),
      el("tbody", {}, rows)));
}

function cellCard(cell, onSelectEdge) {
  const badges = [];
  if (cell.motif_counts?.residual_edge) badges.push(el("span", { class: "tag motif", text: `${cell.motif_counts.residual_edge} residual edge${cell.motif_counts.residual_edge > 1 ? "s" : ""}` }));
  if (cell.motif_counts?.residual_path) badges.push(el("span", { class: "tag motif", text: `${cell.motif_counts.residual_path} residual path${cell.motif_counts.residual_path > 1 ? "s" : ""}` }));
  if (cell.parameter_free) badges.push(el("span", { class: "tag warn", text: "parameter-free" }));
  const sources = (cell.input1 || []).map((term) => term.source);
  const opCount = cell.edges.reduce((sum, edge) => sum + edge.ops.length, 0);
  return el(
    "article",
    { class: `cell-card cell-${cell.type}${cell.parameter_free ? " parameter-free" : ""}`, dataset: { cellIndex: String(cell.index) } },
    el("header", {},
      el("h3", { text: `Cell ${cell.index}` }),
      el("span", { class: `tag type-${cell.type}`, text: cell.type }),
      el("span", { class: "muted small", text: `section ${cell.section ?? "?"} · ${cell.channels ?? "?"} ch · ${cell.resolution ?? "?"} px · ${opCount} ops` }),
      badges),
    drawCell(cell, { onSelectEdge: (edge) => onSelectEdge(cell, edge) }),
    el("p", { class: "small muted input1-line", text: `Input 1 ← ${sources.length ? sources.join(", ") : "nothing (every source deadheaded)"}` }),
  );
}

export async function renderSearch(view, id) {
  const state = {
    search: null,
    metrics: new Map(),
    sections: [],
    graph: null,
    replayEpoch: null, // null follows the live graph
    lastBatch: null,
    failure: null,
  };
  let stopped = false;
  let stream = null;
  let refreshTimer = null;
  let pollTimer = null;
  const pending = new Set();

  // Page skeleton.
  const title = el("h1", { id: "search-title" });
  const badge = el("span", { id: "search-state" });
  const subtitle = el("p", { class: "muted", id: "search-subtitle" });
  const errorBox = el("div", { class: "error-box", id: "search-error", role: "alert", hidden: true });
  const streamStatus = el("span", { class: "stream-status", id: "stream-status" });
  const progress = el("div", { class: "progress large", id: "search-progress" });
  const stats = el("div", { class: "stats", id: "search-stats" });
  const actions = el("div", { class: "toolbar", id: "search-actions" });
  const actionMessage = el("div", { class: "form-message", role: "alert", id: "action-message" });
  const slider = el("input", { type: "range", id: "replay-slider", min: 0, max: 0, step: 1, value: 0, "aria-label": "Replay epoch" });
  const sliderLabel = el("output", { id: "replay-label", for: "replay-slider" });
  const liveButton = el("button", { type: "button", id: "replay-live", class: "small", text: "Follow live" });
  const playButton = el("button", { type: "button", id: "replay-play", class: "small", text: "▶ Play" });
  const cellsGrid = el("div", { class: "cells-grid", id: "cells" });
  const motifCheckbox = el("input", { type: "checkbox", id: "show-motifs", checked: true });
  motifCheckbox.addEventListener("change", () => cellsGrid.classList.toggle("hide-motifs", !motifCheckbox.checked));
  const motifToggle = el("label", { class: "checkbox small", for: "show-motifs" }, motifCheckbox, "highlight motifs");
  const details = el("div", { id: "edge-details", class: "edge-details-slot" }, el("p", { class: "muted small", text: "Select an edge to list its operations with pruner weight and gate." }));
  const changes = el("ol", { class: "change-log", id: "change-log", reversed: true });
  const interCell = el("div", { class: "scroll-x", id: "inter-cell" });
  const motifs = el("div", { id: "motifs" });
  const byType = el("div", { class: "chart", id: "chart-op-type" });
  const byDepth = el("div", { class: "chart", id: "chart-op-depth" });
  const curveNodes = {
    accuracy: el("div", { class: "chart", id: "chart-accuracy" }),
    loss: el("div", { class: "chart", id: "chart-loss" }),
    compression: el("div", { class: "chart", id: "chart-compression" }),
    lambda: el("div", { class: "chart", id: "chart-lambda" }),
    memory: el("div", { class: "chart", id: "chart-memory" }),
  };
  const timeline = el("div", { id: "timeline" });

  view.append(
    el("section", { class: "panel search-head" },
      el("div", { class: "panel-head" },
        el("div", { class: "title-line" }, title, badge, streamStatus),
        actions),
      subtitle, errorBox, progress, stats, actionMessage),
    el("section", { class: "panel" },
      el("div", { class: "panel-head" },
        el("h2", { text: "Cells" }),
        el("div", { class: "replay" },
          el("label", { for: "replay-slider", text: "Replay" }), slider, sliderLabel, playButton, liveButton)),
      el("div", { class: "legend-line" }, opLegend(), motifToggle),
      cellsGrid,
      el("div", { class: "two-columns" },
        el("div", {}, el("h3", { text: "Edge" }), details),
        el("div", {}, el("h3", { text: "Deadheaded connections" }), changes))),
    el("section", { class: "panel" }, el("h2", { text: "Inter-cell connections" }),
      el("p", { class: "muted small", text: "Arrows below: Input 0 from the previous cell. Arcs above: the surviving terms of each cell's Input 1." }),
      interCell),
    el("section", { class: "panel" }, el("h2", { text: "Motifs" }), motifs),
    el("section", { class: "panel" }, el("h2", { text: "Operation counts" }), el("div", { class: "two-columns" }, byType, byDepth)),
    el("section", { class: "panel" }, el("h2", { text: "Curves" }), el("div", { class: "chart-grid" }, Object.values(curveNodes))),
    el("section", { class: "panel" }, el("h2", { text: "Section timeline" }), timeline),
  );

  // Rendering.
  const selectEdge = (cell, edge) => details.replaceChildren(edgeDetails(cell, edge));

  function renderHeader() {
    const search = state.search;
    if (!search) return;
    title.textContent = search.name || `Search ${search.id.slice(0, 8)}`;
    badge.replaceChildren(stateBadge(search.state));
    const kind = search.baseline ? `random baseline level ${search.baseline}` : "Bonsai-Net search";
    subtitle.textContent = `${kind} on ${search.dataset} · id ${search.id}${search.worker ? ` · worker ${search.worker}` : ""}`;
    const fraction = Math.max(0, Math.min(1, search.progress ?? 0));
    let detail = `${epochsDone(search)} of ${search.epochs ?? "?"} epochs`;
    if (state.lastBatch && search.state === "running") {
      detail += ` · batch ${state.lastBatch.index + 1}/${state.lastBatch.batches} · loss ${Number(state.lastBatch.loss).toFixed(3)}`;
    }
    progress.replaceChildren(
      el("div", { class: `progress-fill state-${search.state}`, style: `width:${(fraction * 100).toFixed(1)}%` }),
      el("span", { class: "progress-label", text: `${formatFraction(fraction, 0)} · ${detail}` }),
    );
    const last = [...state.metrics.values()].at(-1);
    stats.replaceChildren(
      statTile("elapsed", formatDuration(search.elapsed_seconds), "stat-elapsed"),
      statTile("ETA", TERMINAL_STATES.has(search.state) ? "–" : formatDuration(search.eta_seconds), "stat-eta"),
      statTile("best test accuracy", formatPercent(search.best_test_accuracy), "stat-best"),
      statTile("test accuracy", formatPercent(search.test_accuracy ?? last?.test_accuracy), "stat-test"),
      statTile("parameters", formatCount(search.params ?? last?.params), "stat-params"),
      statTile("compression", formatFraction(search.compression), "stat-compression"),
      statTile("budget", formatBytes(search.budget), "stat-budget"),
    );
    const reason = search.error || state.failure;
    errorBox.hidden = !(search.state === "failed" || reason);
    errorBox.textContent = search.state === "failed" ? `The search failed: ${reason || "no reason was recorded."}` : reason || "";
    renderActions();
  }

  function renderActions() {
    const search = state.search;
    const base = `/api/searches/${encodeURIComponent(search.id)}`;
    const finished = TERMINAL_STATES.has(search.state);
    const buttons = [];
    if (!finished) {
      buttons.push(el("button", {
        type: "button",
        class: "danger",
        id: "cancel-search",
        text: search.cancel_requested ? "Cancelling…" : "Cancel",
        disabled: Boolean(search.cancel_requested),
        onclick: cancel,
      }));
    }
    buttons.push(el("button", { type: "button", id: "download-genotype", text: "Genotype JSON", disabled: search.state !== "succeeded" && search.state !== "cancelled", onclick: downloadGenotype }));
    buttons.push(el("a", { class: `button${search.state === "succeeded" ? "" : " disabled"}`, id: "download-checkpoint", href: search.state === "succeeded" ? `${base}/checkpoint` : null, download: "", "aria-disabled": search.state === "succeeded" ? null : "true", text: "Checkpoint" }));
    if (!search.baseline) {
      for (const level of [1, 2]) {
        buttons.push(el("button", { type: "button", id: `baseline-${level}`, text: `Random baseline ${level}`, disabled: search.state !== "succeeded", title: "Start a random-search baseline matched to this search", onclick: () => startBaseline(level) }));
      }
      buttons.push(el("a", { class: "button", id: "compare-link", href: `#/searches/${encodeURIComponent(search.id)}/compare`, text: "Compare" }));
    } else if (search.reference_id) {
      buttons.push(el("a", { class: "button", href: `#/searches/${encodeURIComponent(search.reference_id)}/compare`, text: "Compare with its search" }));
    }
    actions.replaceChildren(...buttons);
  }

  function renderSlider() {
    const epochs = state.graph?.epochs ?? [];
    const known = [...new Set([...epochs, ...state.metrics.keys()])].sort((a, b) => a - b);
    slider.max = String(known.length);
    slider.disabled = known.length === 0;
    slider.dataset.epochs = JSON.stringify(known);
    if (state.replayEpoch === null) {
      slider.value = String(known.length);
      const live = state.search && !TERMINAL_STATES.has(state.search.state);
      const last = known.length ? `epoch ${known.at(-1)}` : "no epoch yet";
      sliderLabel.textContent = live ? `live, after ${last}` : `end, ${last}`;
    } else {
      slider.value = String(known.indexOf(state.replayEpoch));
      sliderLabel.textContent = `epoch ${state.replayEpoch} of ${known.at(-1)}`;
    }
    liveButton.disabled = state.replayEpoch === null;
  }

  function renderGraph() {
    const graph = state.graph;
    if (!graph) return;
    cellsGrid.replaceChildren(...(graph.cells.length ? graph.cells.map((cell) => cellCard(cell, selectEdge)) : [el("p", { class: "muted", text: "No cell exists yet." })]));
    cellsGrid.dataset.epoch = graph.epoch === null ? "" : String(graph.epoch);
    cellsGrid.dataset.seq = graph.seq === null ? "" : String(graph.seq);
    cellsGrid.dataset.replay = state.replayEpoch === null ? "live" : String(state.replayEpoch);
    interCell.replaceChildren(drawInterCell(graph));
    motifs.replaceChildren(motifSummary(graph));
    const byTypeSeries = [
      { name: "normal", counts: graph.op_counts.by_type.normal, color: "#2563eb" },
      { name: "reduction", counts: graph.op_counts.by_type.reduction, color: "#db2777" },
    ];
    drawOpCountBars(byType, "Operations by cell type", byTypeSeries);
    drawOpCountsByDepth(byDepth, graph.op_counts.by_depth);
    renderSlider();
  }

  function renderCurves() {
    const metrics = [...state.metrics.values()].sort((a, b) => a.epoch - b.epoch);
    drawCurves(curveNodes, metrics, state.sections, state.replayEpoch);
    const running = Boolean(state.search) && !TERMINAL_STATES.has(state.search.state);
    timeline.replaceChildren(sectionTimeline(state.sections, state.search?.epochs, running));
  }

  function addChange(event) {
    const data = event.data || {};
    const item = el("li", { dataset: { seq: String(event.seq) } },
      el("span", { class: "muted", text: `epoch ${event.epoch ?? "–"}: ` }),
      `${(data.pruner_ids || []).length} pruner(s) ${data.reason === "forced" ? "forced off" : "gate off"}`,
      (data.removed_nodes || []).length ? `, nodes ${data.removed_nodes.join(", ")} removed` : "",
      el("div", {
        class: "mono small",
        title: (data.pruner_ids || []).join("\n"),
        text: shortList(data.pruner_ids || [], 6),
      }));
    changes.prepend(item);
    while (changes.children.length > 200) changes.lastChild.remove();
  }

  // Data loading.
  async function loadGraph() {
    const epoch = state.replayEpoch;
    const query = epoch === null ? "" : `?epoch=${epoch}`;
    const graph = await api(`/api/searches/${encodeURIComponent(id)}/graph${query}`);
    if (stopped || epoch !== state.replayEpoch) return;
    state.graph = graph;
    renderGraph();
  }

  async function loadSections() {
    state.sections = await api(`/api/searches/${encodeURIComponent(id)}/sections`);
  }

  async function loadSearch() {
    state.search = await api(`/api/searches/${encodeURIComponent(id)}`);
  }

  function scheduleRefresh(...what) {
    for (const item of what) pending.add(item);
    if (refreshTimer) return;
    const delay = what.includes("vanish") ? VANISH_MS : REFRESH_DELAY_MS;
    refreshTimer = setTimeout(runRefresh, delay);
  }

  async function runRefresh() {
    refreshTimer = null;
    const what = new Set(pending);
    pending.clear();
    try {
      const jobs = [];
      if (what.has("search")) jobs.push(loadSearch().then(renderHeader));
      if (what.has("sections")) jobs.push(loadSections());
      if (what.has("graph") && state.replayEpoch === null) jobs.push(loadGraph());
      await Promise.all(jobs);
      // The timeline reads the search's state too, so it is drawn once both are loaded.
      if (what.has("sections") || what.has("search")) renderCurves();
      if (what.has("graph") && state.replayEpoch !== null) renderSlider();
    } catch (error) {
      showActionError(`Updating the page failed: ${error.message}`);
    }
  }

  function showActionError(text) {
    actionMessage.textContent = text;
    actionMessage.className = text ? "form-message error" : "form-message";
  }

  // Live events.
  function onEvent(event) {
    const data = event.data || {};
    switch (event.type) {
      case "batch":
        state.lastBatch = data;
        renderHeaderThrottled();
        break;
      case "epoch_end":
        state.metrics.set(event.epoch, { ...data, epoch: event.epoch });
        state.lastBatch = null;
        renderCurvesThrottled();
        scheduleRefresh("search", "sections", "graph");
        break;
      case "deadheaded":
        if (state.replayEpoch === null) {
          for (const pruner of data.pruner_ids || []) {
            for (const node of view.querySelectorAll(`[data-pruner="${CSS.escape(pruner)}"]`)) node.classList.add("vanishing");
          }
        }
        addChange(event);
        scheduleRefresh("vanish", "graph");
        break;
      case "failed":
        state.failure = data.reason || "no reason was given";
        scheduleRefresh("search");
        renderHeader();
        break;
      case "finished":
        scheduleRefresh("search", "sections", "graph");
        break;
      default:
        if (STRUCTURE_EVENTS.has(event.type)) scheduleRefresh("graph", "sections");
    }
  }

  let headerPending = false;
  function renderHeaderThrottled() {
    if (headerPending) return;
    headerPending = true;
    requestAnimationFrame(() => {
      headerPending = false;
      renderHeader();
    });
  }

  let curvesTimer = null;
  function renderCurvesThrottled() {
    if (curvesTimer) return;
    curvesTimer = setTimeout(() => {
      curvesTimer = null;
      renderCurves();
    }, 300);
  }

  function onStatus(status) {
    streamStatus.dataset.status = status;
    if (status === "open") {
      streamStatus.textContent = "live";
      reportConnection(true);
    } else if (status === "reconnecting") {
      streamStatus.textContent = "reconnecting…";
      reportConnection(false, "The connection to the server was lost. Reconnecting…");
    } else {
      streamStatus.textContent = "";
      reportConnection(true);
    }
  }

  // Actions.
  async function cancel() {
    try {
      state.search = await api(`/api/searches/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      showActionError("");
      renderHeader();
    } catch (error) {
      showActionError(`Cancelling failed: ${error.message}`);
    }
  }

  async function downloadGenotype() {
    try {
      const genotype = await api(`/api/searches/${encodeURIComponent(id)}/genotype`);
      const blob = new Blob([JSON.stringify(genotype, null, 2)], { type: "application/json" });
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: `genotype-${id}.json` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      showActionError("");
    } catch (error) {
      showActionError(`Downloading the genotype failed: ${error.message}`);
    }
  }

  async function startBaseline(level) {
    try {
      await api(`/api/searches/${encodeURIComponent(id)}/baselines`, { method: "POST", body: { level } });
      window.location.hash = `#/searches/${encodeURIComponent(id)}/compare`;
    } catch (error) {
      showActionError(`Starting the level-${level} baseline failed: ${error.message}`);
    }
  }

  // Replay.
  function epochAt(position) {
    const known = JSON.parse(slider.dataset.epochs || "[]");
    return position >= known.length ? null : known[position];
  }

  async function replayTo(epoch) {
    state.replayEpoch = epoch;
    renderSlider();
    renderCurves();
    try {
      await loadGraph();
    } catch (error) {
      showActionError(`Loading epoch ${epoch ?? "live"} failed: ${error.message}`);
    }
  }

  slider.addEventListener("input", () => replayTo(epochAt(Number(slider.value))));
  liveButton.addEventListener("click", () => replayTo(null));
  let playTimer = null;
  playButton.addEventListener("click", () => {
    if (playTimer) {
      clearInterval(playTimer);
      playTimer = null;
      playButton.textContent = "▶ Play";
      return;
    }
    playButton.textContent = "❚❚ Pause";
    let position = state.replayEpoch === null ? 0 : Number(slider.value) + 1;
    playTimer = setInterval(() => {
      const known = JSON.parse(slider.dataset.epochs || "[]");
      if (position >= known.length) {
        clearInterval(playTimer);
        playTimer = null;
        playButton.textContent = "▶ Play";
        replayTo(null);
        return;
      }
      replayTo(known[position]);
      position += 1;
    }, 600);
  });

  // First load, then the event stream. An active search is also polled every 5 s,
  // because its elapsed time and ETA change without any event.
  await loadSearch();
  const [metrics] = await Promise.all([fetchAllMetrics(id), loadSections(), loadGraph()]);
  for (const row of metrics) state.metrics.set(row.epoch, row);
  renderHeader();
  renderCurves();

  stream = openEventStream(id, {
    onEvent,
    onStatus,
    onState: (search) => {
      state.search = search;
      renderHeader();
      if (TERMINAL_STATES.has(search.state)) scheduleRefresh("graph", "sections");
    },
    beforeRetry: () => loadSearch().then(renderHeader),
  });
  const poll = async () => {
    if (stopped) return;
    if (state.search && !TERMINAL_STATES.has(state.search.state)) {
      try {
        await loadSearch();
        renderHeader();
      } catch (error) {
        console.warn("Polling the search failed", error);
      }
    }
    pollTimer = setTimeout(poll, 5000);
  };
  pollTimer = setTimeout(poll, 5000);

  return () => {
    stopped = true;
    stream?.close();
    clearTimeout(refreshTimer);
    clearTimeout(pollTimer);
    clearTimeout(curvesTimer);
    clearInterval(playTimer);
    reportConnection(true);
  };
}
