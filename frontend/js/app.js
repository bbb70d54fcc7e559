// Hash router of the pages. Each page renders into #view and returns a cleanup
// function that stops its timers and event streams when the user navigates away.

import { api, login, onConnectionChange } from "./api.js";
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

/** Sign in before the first page when the server requires a token, and offer sign-out. */
async function startSession() {
  let session = null;
  try {
    session = await api("/api/session");
  } catch (error) {
    console.warn("Reading the session failed, so sign-in waits for the first 401", error);
    return;
  }
  if (session.auth_required && !session.authenticated) await login();
  if (!session.auth_required) return;
  const signOut = document.getElementById("sign-out");
  signOut.hidden = false;
  signOut.addEventListener("click", async () => {
    await api("/api/logout", { method: "POST" }).catch((error) => console.warn("Sign-out failed", error));
    window.location.reload();
  });
}

onConnectionChange(showConnection);
window.addEventListener("hashchange", route);
startSession().finally(route);
