// Client of the service's HTTP API. A 401 opens the login dialog once, and the
// request is retried after the session cookie is set.

import { el } from "./dom.js";

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.describe(status, detail));
    this.status = status;
    this.detail = detail;
  }

  static describe(status, detail) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((item) => `${(item.loc || []).slice(1).join(".")}: ${item.msg}`).join("; ");
    }
    if (status === 0) return "The server cannot be reached.";
    return `The request failed with HTTP ${status}.`;
  }

  /** Map of config field name to message, from a 422 body of FastAPI's shape. */
  get fieldErrors() {
    const errors = {};
    if (!Array.isArray(this.detail)) return errors;
    for (const item of this.detail) {
      const names = (item.loc || []).filter((part) => typeof part === "string" && part !== "body");
      const field = names.length ? names[names.length - 1] : "";
      errors[field] = errors[field] ? `${errors[field]}; ${item.msg}` : item.msg;
    }
    return errors;
  }
}

const connectionListeners = new Set();

/** Register `listener(ok, message)`, called when the server becomes unreachable or reachable. */
export function onConnectionChange(listener) {
  connectionListeners.add(listener);
  return () => connectionListeners.delete(listener);
}

export function reportConnection(ok, message = "") {
  for (const listener of connectionListeners) listener(ok, message);
}

let pendingLogin = null;

async function request(path, options) {
  try {
    return await fetch(path, { credentials: "same-origin", ...options });
  } catch (error) {
    reportConnection(false, "The server cannot be reached. Retrying…");
    throw new ApiError(0, `The server cannot be reached (${error.message}).`);
  }
}

/** Send a request to the API and return the decoded JSON (null for 204). */
export async function api(path, { method = "GET", body } = {}) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response = await request(path, options);
  if (response.status === 401 && path !== "/api/login") {
    await login();
    response = await request(path, options);
  }
  reportConnection(true);
  if (!response.ok) {
    let detail = null;
    try {
      detail = (await response.json()).detail;
    } catch {
      detail = null;
    }
    throw new ApiError(response.status, detail);
  }
  if (response.status === 204) return null;
  return response.json();
}

/** Ask for the API token until the server accepts it. Concurrent callers share one dialog. */
export function login() {
  if (!pendingLogin) {
    pendingLogin = showLoginDialog().finally(() => {
      pendingLogin = null;
    });
  }
  return pendingLogin;
}

function showLoginDialog() {
  return new Promise((resolve) => {
    const input = el("input", {
      type: "password",
      id: "login-token",
      name: "token",
      autocomplete: "current-password",
      required: true,
    });
    const message = el("p", { class: "field-error", id: "login-error", role: "alert" });
    const form = el(
      "form",
      { method: "dialog", class: "login-form" },
      el("h2", { text: "Sign in" }),
      el("p", { text: "This server requires its API token." }),
      el("label", { for: "login-token", text: "API token" }),
      input,
      message,
      el("button", { type: "submit", class: "primary", text: "Sign in" }),
    );
    const dialog = el("dialog", { id: "login-dialog" }, form);
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      const response = await request("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: input.value }),
      }).catch((error) => error);
      if (response instanceof Response && response.ok) {
        dialog.close();
        dialog.remove();
        resolve();
      } else if (response instanceof Response && response.status === 401) {
        message.textContent = "The token is invalid. Check it and try again.";
      } else {
        message.textContent = response.message || `Sign-in failed with HTTP ${response.status}.`;
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Fetch every epoch_end row of a search, page by page. */
export async function fetchAllMetrics(searchId) {
  const base = `/api/searches/${encodeURIComponent(searchId)}/metrics`;
  const items = [];
  for (;;) {
    const page = await api(`${base}?offset=${items.length}&limit=1000`);
    items.push(...page.items);
    if (!page.items.length || items.length >= page.total) return items;
  }
}
