// Hash router of the pages. Each page renders into #view and returns a cleanup
// function that stops its timers and event streams when the user navigates away.

import { onConnectionChange } from "./api.js";
import { clear, el } from "./dom.js";
import { purgeCharts } from "./charts.js";
import { renderList } from "./pages/list.js";
import { renderNewSearch } from "./pages/new.js";
import { renderSearch } from "./pages/search.js";
import { renderCompare } from "./pages/compare.js";

const routes = [
  { pattern: /^#?\/?$/, nav: "list", render: () => renderList },
  { pattern: /^#\/new$/, nav: "new", render: () => renderNewSearch },
  { pattern: /^#\/searches\/([^/]+)\/compare$/, nav: "list", render: () => renderCompare },
  { pattern: /^#\/searches\/([^/]+)$/, nav: "list", render: () => renderSearch },
];

let cleanup = null;

function showConnection(ok, message) {
  const banner = document.getElementById("connection-banner");
  banner.hidden = ok;
  banner.textContent = ok ? "" : message;
}

async function route() {
  const view = document.getElementById("view");
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.error("Cleaning up the previous page failed", error);
    }
    cleanup = null;
  }
  purgeCharts(view);
  clear(view);
  showConnection(true, "");

  const hash = window.location.hash || "#/";
  const match = routes.map((r) => [r, hash.match(r.pattern)]).find(([, m]) => m);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", Boolean(match) && link.dataset.nav === match[0].nav);
  }
  if (!match) {
    view.append(el("section", { class: "panel error", text: `No page matches ${hash}.` }));
    return;
  }
  const [entry, groups] = match;
  try {
    cleanup = (await entry.render()(view, ...groups.slice(1).map(decodeURIComponent))) || null;
  } catch (error) {
    console.error("Rendering the page failed", error);
    view.append(el("section", { class: "panel error", role: "alert", text: error.message }));
  }
}

onConnectionChange(showConnection);
window.addEventListener("hashchange", route);
route();
