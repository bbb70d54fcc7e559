// SVG drawings of cells and of the inter-cell connections, from the graph
// analysis JSON of GET /api/searches/{id}/graph.

import { el, svg, formatNumber, tableHead } from "./dom.js";

export const OP_STYLES = {
  identity: { color: "#4b5563", dash: null, label: "identity" },
  avg_pool_3x3: { color: "#d97706", dash: "5 3", label: "avg pool 3×3" },
  max_pool_3x3: { color: "#059669", dash: "5 3", label: "max pool 3×3" },
  sep_conv_3x3: { color: "#2563eb", dash: null, label: "sep conv 3×3" },
  sep_conv_5x5: { color: "#1e3a8a", dash: null, label: "sep conv 5×5" },
  dil_conv_3x3: { color: "#9333ea", dash: null, label: "dil conv 3×3" },
  dil_conv_5x5: { color: "#db2777", dash: null, label: "dil conv 5×5" },
};
export const OPERATIONS = Object.keys(OP_STYLES);

const WIDTH = 440;
const HEIGHT = 250;
const MARGIN_X = 44;
const MARGIN_Y = 30;
const LANE = 2.6;

function gateText(gate) {
  if (gate === null || gate === undefined) return "unknown";
  return gate ? "on" : "off";
}

export function describePruner(op) {
  return `${op.pruner}\n${OP_STYLES[op.op]?.label || op.op}, weight ${formatNumber(op.weight)}, gate ${gateText(op.gate)}`;
}

/** Legend of the operation styles, and of gate-off and motif marks. */
export function opLegend() {
  const items = OPERATIONS.map((op) => {
    const style = OP_STYLES[op];
    const sample = svg(
      "svg",
      { width: 28, height: 10, "aria-hidden": "true" },
      svg("line", {
        x1: 2, y1: 5, x2: 26, y2: 5, stroke: style.color, "stroke-width": 3,
        "stroke-dasharray": style.dash,
      }),
    );
    return el("span", { class: "legend-item" }, sample, style.label);
  });
  const gateOff = svg(
    "svg",
    { width: 28, height: 10, "aria-hidden": "true" },
    svg("line", { x1: 2, y1: 5, x2: 26, y2: 5, class: "gate-off-sample" }),
  );
  const motif = svg(
    "svg",
    { width: 28, height: 12, "aria-hidden": "true" },
    svg("line", { x1: 2, y1: 6, x2: 26, y2: 6, class: "motif-halo" }),
  );
  items.push(el("span", { class: "legend-item" }, gateOff, "gate off"));
  items.push(el("span", { class: "legend-item" }, motif, "residual motif"));
  items.push(el("span", { class: "legend-item muted", text: "line width: pruner weight" }));
  return el("div", { class: "legend" }, items);
}

function nodePositions(cell) {
  const positions = new Map();
  for (const node of cell.layout.nodes) {
    positions.set(node.id, {
      ...node,
      px: MARGIN_X + node.x * (WIDTH - 2 * MARGIN_X),
      py: MARGIN_Y + node.y * (HEIGHT - 2 * MARGIN_Y),
    });
  }
  return positions;
}

function weightScale(cell) {
  let max = 0;
  for (const edge of cell.edges) {
    for (const op of edge.ops) max = Math.max(max, Math.abs(op.weight ?? 0));
  }
  return (weight) => {
    if (weight === null || weight === undefined || max === 0) return 1.4;
    return 0.8 + 2.2 * Math.min(1, Math.abs(weight) / max);
  };
}

/** Path of one operation on edge source->target, offset into its lane. */
function edgePath(source, target, lane, layerSpan) {
  const dx = target.px - source.px;
  // Edges that skip layers bow away from the straight line so they pass beside the
  // nodes in between: edges from Input 0 bow up, from Input 1 down, and edges from
  // intermediate nodes alternate by target so that bundles separate.
  let direction = target.id % 2 === 0 ? -1 : 1;
  if (source.id === 0) direction = -1;
  if (source.id === 1) direction = 1;
  const bow = layerSpan > 1 ? (12 + layerSpan * 16) * direction : 0;
  const y1 = source.py + lane;
  const y2 = target.py + lane;
  const c1x = source.px + dx * 0.4;
  const c2x = target.px - dx * 0.4;
  return `M ${source.px.toFixed(1)} ${y1.toFixed(1)} C ${c1x.toFixed(1)} ${(y1 + bow).toFixed(1)} ${c2x.toFixed(1)} ${(y2 + bow).toFixed(1)} ${target.px.toFixed(1)} ${y2.toFixed(1)}`;
}

function motifPruners(cell) {
  const pruners = new Map();
  for (const motif of cell.motifs || []) {
    for (const id of motif.pruners) {
      if (!pruners.has(id)) pruners.set(id, []);
      pruners.get(id).push(motif.kind);
    }
  }
  return pruners;
}

/**
 * Draw one cell as a layered graph. Each operation of an edge is its own path with
 * data-pruner set to its pruner id; onSelectEdge(edge) runs when an edge is clicked.
 */
export function drawCell(cell, { onSelectEdge } = {}) {
  const positions = nodePositions(cell);
  const widthOf = weightScale(cell);
  const inMotif = motifPruners(cell);

  const halos = svg("g", { class: "motif-halos" });
  const edges = svg("g", { class: "edges" });
  for (const edge of cell.edges) {
    const source = positions.get(edge.source);
    const target = positions.get(edge.target);
    if (!source || !target) continue;
    const span = target.layer - source.layer;
    const group = svg("g", {
      class: "edge",
      dataset: { edge: `${edge.source}-${edge.target}` },
      tabindex: 0,
      role: "button",
      "aria-label": `Edge ${source.label} to ${target.label}: ${edge.ops.map((op) => op.op).join(", ")}`,
    });
    edge.ops.forEach((op, index) => {
      const lane = (index - (edge.ops.length - 1) / 2) * LANE;
      const d = edgePath(source, target, lane, span);
      const style = OP_STYLES[op.op] || { color: "#111827", dash: null };
      if (inMotif.has(op.pruner)) {
        halos.append(
          svg("path", {
            d,
            class: `motif-halo ${inMotif.get(op.pruner).map((kind) => `motif-${kind}`).join(" ")}`,
            dataset: { motifPruner: op.pruner },
          }),
        );
      }
      const gateOff = op.gate === 0;
      // A wide transparent stroke under the drawn one, so that an edge of 1 to 3 px
      // can be clicked without aiming at the pixel.
      group.append(svg("path", { d, class: "edge-hit" }));
      group.append(
        svg(
          "path",
          {
            d,
            class: `op op-${op.op}${gateOff ? " gate-off" : ""}`,
            stroke: style.color,
            "stroke-width": widthOf(op.weight).toFixed(2),
            "stroke-dasharray": gateOff ? "2 4" : style.dash,
            dataset: { pruner: op.pruner, op: op.op, gate: String(op.gate), weight: String(op.weight) },
          },
          svg("title", { text: describePruner(op) }),
        ),
      );
    });
    if (onSelectEdge) {
      group.addEventListener("click", () => onSelectEdge(edge));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") onSelectEdge(edge);
      });
    }
    edges.append(group);
  }

  const motifNodes = new Set((cell.motifs || []).flatMap((motif) => motif.nodes));
  const nodes = svg("g", { class: "nodes" });
  for (const node of positions.values()) {
    const isEnd = node.id <= 1 || node.label === "Out";
    const width = isEnd ? 58 : 26;
    let kind = "inner";
    if (node.id <= 1) kind = "input";
    else if (node.label === "Out") kind = "output";
    const inputDead = node.id === 1 && !(cell.input1 || []).length;
    nodes.append(
      svg(
        "g",
        {
          class: `node node-${kind}${motifNodes.has(node.id) ? " in-motif" : ""}${inputDead ? " dead" : ""}`,
          dataset: { node: String(node.id) },
          transform: `translate(${node.px.toFixed(1)} ${node.py.toFixed(1)})`,
        },
        svg("rect", { x: -width / 2, y: -12, width, height: 24, rx: isEnd ? 6 : 12 }),
        svg("text", { "text-anchor": "middle", dy: "0.35em", text: node.label }),
        inputDead ? svg("title", { text: "Input 1 lost every source" }) : null,
      ),
    );
  }

  return svg(
    "svg",
    {
      class: "cell-graph",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": `Cell ${cell.index} graph`,
      dataset: { cell: String(cell.index) },
    },
    halos,
    edges,
    nodes,
  );
}

/** Table of the operations of one edge, with pruner id, weight and gate. */
export function edgeDetails(cell, edge) {
  const label = (id) => {
    if (id <= 1) return `Input ${id}`;
    return id === cell.nodes + 1 ? "Out" : `node ${id}`;
  };
  return el(
    "div",
    { class: "edge-details" },
    el("h4", { text: `Cell ${cell.index}: ${label(edge.source)} → ${label(edge.target)}` }),
    el(
      "table",
      { class: "compact" },
      tableHead(["operation", "pruner", "weight", "gate"], ["weight"]),
      el(
        "tbody",
        {},
        edge.ops.map((op) =>
          el(
            "tr",
            {},
            el("td", {}, el("span", { class: "swatch", style: `background:${OP_STYLES[op.op]?.color}` }), OP_STYLES[op.op]?.label || op.op),
            el("td", { class: "mono", text: op.pruner }),
            el("td", { class: "num", text: formatNumber(op.weight) }),
            el("td", { text: gateText(op.gate) }),
          ),
        ),
      ),
    ),
  );
}

/**
 * Draw the inter-cell view: the stem and every cell in a row, Input 0 as the chain
 * below, and each surviving Input-1 term as an arc above from its source.
 */
export function drawInterCell(graph) {
  const entries = graph.inter_cell || [];
  const types = new Map((graph.cells || []).map((cell) => [cell.index, cell.type]));
  const names = ["stem", ...entries.map((entry) => `c${entry.cell}`)];
  const step = 78;
  const boxWidth = 50;
  const width = Math.max(320, names.length * step + 30);
  const maxSpan = Math.max(1, ...entries.flatMap((e) => e.sources.map((s) => e.cell + 1 - names.indexOf(s))));
  const baseline = 40 + Math.min(150, maxSpan * 22);
  const height = baseline + 56;
  const x = (name) => 40 + names.indexOf(name) * step;

  const arcs = svg("g", { class: "input1-arcs" });
  for (const entry of entries) {
    const target = `c${entry.cell}`;
    for (const term of entry.terms) {
      if (names.indexOf(term.source) < 0) continue;
      const x1 = x(term.source) + 8;
      const x2 = x(target) - 8;
      const lift = Math.min(150, (names.indexOf(target) - names.indexOf(term.source)) * 22);
      arcs.append(
        svg(
          "path",
          {
            d: `M ${x1} ${baseline - 14} C ${x1} ${baseline - 14 - lift} ${x2} ${baseline - 14 - lift} ${x2} ${baseline - 14}`,
            class: `input1-arc${term.gate === 0 ? " gate-off" : ""}`,
            dataset: { pruner: term.pruner, cell: String(entry.cell), source: term.source },
          },
          svg("title", { text: `${term.pruner}\n${term.source} feeds Input 1 of cell ${entry.cell}, weight ${formatNumber(term.weight)}, gate ${gateText(term.gate)}` }),
        ),
      );
    }
  }

  const chain = svg("g", { class: "input0-chain" });
  for (let i = 1; i < names.length; i += 1) {
    chain.append(
      svg("line", {
        x1: x(names[i - 1]) + boxWidth / 2,
        y1: baseline,
        x2: x(names[i]) - boxWidth / 2 - 3,
        y2: baseline,
        "marker-end": "url(#arrow)",
      }),
    );
  }

  const boxes = svg("g", { class: "cell-boxes" });
  for (const name of names) {
    const index = name === "stem" ? null : Number(name.slice(1));
    const type = index === null ? "stem" : types.get(index) || "normal";
    boxes.append(
      svg(
        "g",
        { class: `cell-box cell-box-${type}`, transform: `translate(${x(name)} ${baseline})`, dataset: { cellBox: name } },
        svg("rect", { x: -boxWidth / 2, y: -14, width: boxWidth, height: 28, rx: 5 }),
        svg("text", { "text-anchor": "middle", dy: "0.35em", text: name }),
        svg("text", { class: "box-caption", "text-anchor": "middle", y: 28, text: type === "stem" ? "" : type }),
      ),
    );
  }

  const defs = svg(
    "defs",
    {},
    svg(
      "marker",
      { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }),
    ),
  );
  return svg(
    "svg",
    { class: "inter-cell", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "Inter-cell connections" },
    defs,
    arcs,
    chain,
    boxes,
  );
}
