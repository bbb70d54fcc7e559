// The list of searches, refreshed every few seconds, with a state filter and cancel.

import { api } from "../api.js";
import {
  el, formatCount, formatDuration, formatFraction, formatPercent, replaceContent, stateBadge,
  tableHead, TERMINAL_STATES, epochsDone,
} from "../dom.js";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 50;
const REFRESH_MS = 2000;

function progressBar(search) {
  const progress = Math.max(0, Math.min(1, search.progress ?? 0));
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(progress * 100) },
    el("div", { class: `progress-fill state-${search.state}`, style: `width:${(progress * 100).toFixed(1)}%` }),
    el("span", { class: "progress-label", text: `${epochsDone(search)}/${search.epochs ?? "?"} epochs` }),
  );
}

function searchLabel(search) {
  if (search.baseline) return `random level ${search.baseline}`;
  return "Bonsai-Net";
}

function row(search, onCancel) {
  const link = el("a", { href: `#/searches/${encodeURIComponent(search.id)}`, class: "search-name", text: search.name || search.id.slice(0, 8) });
  const active = !TERMINAL_STATES.has(search.state);
  const cancelling = active && search.cancel_requested;
  return el(
    "tr",
    { dataset: { searchId: search.id, state: search.state } },
    el("td", {}, link, el("div", { class: "muted small", text: searchLabel(search) })),
    el("td", {}, stateBadge(search.state)),
    el("td", { text: search.dataset }),
    el("td", { class: "progress-cell" }, progressBar(search)),
    el("td", { class: "num", text: formatDuration(search.elapsed_seconds) }),
    el("td", { class: "num", text: active ? formatDuration(search.eta_seconds) : "–" }),
    el("td", { class: "num", text: formatPercent(search.best_test_accuracy) }),
    el("td", { class: "num", text: formatCount(search.params) }),
    el("td", { class: "num", text: formatFraction(search.compression) }),
    el("td", { class: "row-actions" },
      cancelling ? el("span", { class: "muted small", text: "cancelling…" }) : null,
      active && !cancelling ? el("button", { type: "button", class: "small danger", text: "Cancel", onclick: () => onCancel(search) }) : null),
  );
}

export async function renderList(view) {
  let filter = new URLSearchParams(window.location.hash.split("?")[1] || "").get("state") || "";
  let limit = PAGE_SIZE;
  let timer = null;
  let stopped = false;

  const message = el("div", { class: "form-message", role: "alert", id: "list-message" });
  const tbody = el("tbody", { id: "search-rows" });
  const footer = el("div", { class: "list-footer" });
  const select = el(
    "select",
    { id: "state-filter", "aria-label": "Filter by state" },
    el("option", { value: "", text: "all states" }),
    STATES.map((state) => el("option", { value: state, text: state })),
  );
  select.value = filter;
  select.addEventListener("change", () => {
    filter = select.value;
    refresh();
  });

  const cancel = async (search) => {
    try {
      await api(`/api/searches/${encodeURIComponent(search.id)}/cancel`, { method: "POST" });
      message.textContent = "";
    } catch (error) {
      message.textContent = `Cancelling ${search.name || search.id} failed: ${error.message}`;
      message.className = "form-message error";
    }
    refresh();
  };

  async function refresh() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: String(limit), offset: "0" });
    if (filter) query.set("state", filter);
    try {
      const page = await api(`/api/searches?${query}`);
      if (stopped) return;
      tbody.replaceChildren(...page.items.map((search) => row(search, cancel)));
      if (!page.items.length) {
        tbody.append(el("tr", {}, el("td", { colspan: 10, class: "muted empty", text: filter ? `No ${filter} searches.` : "No searches yet. Start one from New search." })));
      }
      replaceContent(footer,
        el("span", { class: "muted", text: `${page.items.length} of ${page.total} searches` }),
        page.total > page.items.length
          ? el("button", { type: "button", text: "Show more", onclick: () => { limit += PAGE_SIZE; refresh(); } })
          : null,
      );
    } catch (error) {
      if (stopped) return;
      message.textContent = `Loading the searches failed: ${error.message}`;
      message.className = "form-message error";
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  view.append(
    el("section", { class: "panel" },
      el("div", { class: "panel-head" },
        el("h1", { text: "Searches" }),
        el("div", { class: "toolbar" },
          el("label", { for: "state-filter", text: "State" }), select,
          el("a", { class: "button primary", href: "#/new", text: "New search" }))),
      message,
      el("table", { class: "searches" },
        tableHead(
          ["search", "state", "data set", "progress", "elapsed", "ETA", "best test acc.", "params", "compression", ""],
          ["elapsed", "ETA", "best test acc.", "params", "compression"],
        ),
        tbody),
      footer),
  );
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
