// DOM and formatting helpers. Every piece of data reaches the page through
// textContent or an attribute, never through innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.setAttribute("class", value);
    else if (key === "text") element.textContent = String(value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key in element && !(element instanceof SVGElement)) element[key] = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Create an HTML element. Strings among the children become text nodes. */
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace the children of `node`, skipping null, undefined and false like el() does. */
export function replaceContent(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

/** Table head of `labels`, with the labels listed in `numeric` aligned right. */
export function tableHead(labels, numeric = []) {
  const right = new Set(numeric);
  return el("thead", {}, el("tr", {}, labels.map((label) => el("th", { class: right.has(label) ? "num" : null, text: label }))));
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes) return `${minutes} min ${String(rest).padStart(2, "0")} s`;
  return `${rest} s`;
}

export function formatPercent(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return `${Number(value).toFixed(digits)} %`;
}

/** Format a fraction in [0, 1] (compression, progress) as a percentage. */
export function formatFraction(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return formatPercent(Number(value) * 100, digits);
}

export function formatCount(value) {
  if (value === null || value === undefined) return "–";
  const number = Number(value);
  if (Math.abs(number) >= 1e6) return `${(number / 1e6).toFixed(2)} M`;
  if (Math.abs(number) >= 1e3) return `${(number / 1e3).toFixed(1)} k`;
  return String(number);
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return Number(value).toPrecision(digits);
}

/** Number of ended epochs, from the progress fraction over all epochs. */
export function epochsDone(search) {
  return Math.round((search.progress ?? 0) * (search.epochs ?? 0));
}

export const TERMINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);

export function stateBadge(state) {
  return el("span", { class: `badge state-${state}`, text: state, dataset: { state } });
}
