// The form that starts a search. Its fields come from GET /api/config/fields, a
// memory check (POST /api/estimate) runs before submitting, and the server's 422
// messages are shown at the fields they name.

import { api, ApiError } from "../api.js";
import { el, formatBytes, formatFraction, tableHead } from "../dom.js";

const MAIN_FIELDS = ["name", "preset", "dataset", "data_dir", "epochs", "budget", "device", "seed"];
const HIDDEN_FIELDS = new Set(["baseline", "reference"]);

// Fields typed int that also accept a string with a unit, such as "512MiB".
const TEXT_FIELDS = new Set(["budget"]);

function fieldKind(field) {
  const type = String(field.type || "").toLowerCase();
  if (TEXT_FIELDS.has(field.name)) return "text";
  if (type.startsWith("list")) return "list";
  if (type === "bool" || type === "boolean") return "bool";
  if (field.choices && field.choices.length && !type.startsWith("list")) return "choice";
  if (type === "int") return "int";
  if (type === "float") return "float";
  return "text";
}

function defaultText(field) {
  const value = field.default;
  if (value === null || value === undefined || value === "") return "";
  if (Array.isArray(value)) return value.join(", ");
  return String(value);
}

function fieldControl(field, datasets) {
  const kind = fieldKind(field);
  const id = `field-${field.name}`;
  const common = { id, name: field.name, "aria-describedby": `help-${field.name} error-${field.name}` };
  if (kind === "choice") {
    const select = el("select", common);
    // The data set follows the preset unless the user picks one.
    if (field.name === "dataset") select.append(el("option", { value: "", text: "from the preset" }));
    for (const choice of field.choices) {
      const dataset = datasets.get(choice);
      const unavailable = field.name === "dataset" && dataset && !dataset.available;
      select.append(el("option", { value: choice, text: unavailable ? `${choice} (files missing)` : choice }));
    }
    if (field.default !== null && field.default !== undefined) select.value = String(field.default);
    return select;
  }
  if (kind === "list") {
    const choices = field.choices || [];
    const chosen = new Set(Array.isArray(field.default) ? field.default : choices);
    return el(
      "div",
      { class: "checkbox-group", id, role: "group", "aria-describedby": common["aria-describedby"] },
      choices.map((choice) =>
        el("label", { class: "checkbox" },
          el("input", { type: "checkbox", name: field.name, value: choice, checked: chosen.has(choice) }),
          choice),
      ),
    );
  }
  if (kind === "bool") return el("input", { ...common, type: "checkbox", checked: Boolean(field.default) });
  const input = el("input", {
    ...common,
    type: kind === "int" || kind === "float" ? "number" : "text",
    step: { int: "1", float: "any" }[kind] ?? null,
    placeholder: defaultText(field) || (field.name === "name" ? "optional label" : "preset's default"),
    dataset: { default: defaultText(field) },
  });
  return input;
}

function fieldRow(field, datasets) {
  const control = fieldControl(field, datasets);
  const unit = field.unit ? el("span", { class: "unit", text: field.unit }) : null;
  return el(
    "div",
    { class: "field", dataset: { field: field.name } },
    el("label", { for: `field-${field.name}`, text: field.name }),
    el("div", { class: "control" }, control, unit),
    field.help ? el("p", { class: "help", id: `help-${field.name}`, text: field.help }) : null,
    el("p", { class: "field-error", id: `error-${field.name}`, role: "alert" }),
  );
}

/** Pick the default data set: Fashion-MNIST when its files are present, else digits. */
function defaultDataset(datasets) {
  return datasets.get("fashion-mnist")?.available ? "fashion-mnist" : "digits";
}

function readValue(form, field) {
  const kind = fieldKind(field);
  if (kind === "list") {
    const boxes = [...form.querySelectorAll(`input[name="${field.name}"]`)];
    return boxes.filter((box) => box.checked).map((box) => box.value);
  }
  const control = form.elements.namedItem(field.name);
  if (kind === "bool") return control.checked;
  const raw = control.value.trim();
  if (raw === "") return undefined;
  const type = String(field.type || "").toLowerCase();
  if (type === "int" && /^-?\d+$/.test(raw)) return Number.parseInt(raw, 10);
  if (type === "float" && raw !== "" && Number.isFinite(Number(raw))) return Number(raw);
  return raw;
}

function cellTypes(section) {
  const types = section.types || (Array.isArray(section.cells) ? section.cells : []);
  const letters = types.map((type) => (type === "reduction" ? "R" : "N")).join("");
  return letters || String(section.cells ?? "");
}

function memoryTable(estimate) {
  const budget = estimate.budget;
  const rows = (estimate.sections || []).map((section) => {
    const share = budget ? Math.min(1, section.predicted_bytes / budget) : 0;
    return el(
      "tr",
      { class: section.fits ? "" : "over-budget" },
      el("td", { text: section.section }),
      el("td", { text: cellTypes(section) }),
      el("td", { class: "num", text: formatBytes(section.predicted_bytes) }),
      el("td", {},
        el("div", { class: "meter", title: `${formatBytes(section.predicted_bytes)} of ${formatBytes(budget)}` },
          el("div", { class: `meter-fill${section.fits ? "" : " over"}`, style: `width:${(share * 100).toFixed(1)}%` }))),
      el("td", { class: "num", text: section.target === null || section.target === undefined ? "none" : formatFraction(section.target) }),
      el("td", { text: section.fits ? "fits" : "over budget" }),
    );
  });
  return el(
    "div",
    { class: "memory-check", id: "memory-check" },
    el("h3", { text: `Memory check: budget ${formatBytes(budget)}` }),
    el("table", { class: "compact" },
      tableHead(["section", "cells", "predicted", "of budget", "target", ""], ["predicted", "target"]),
      el("tbody", {}, rows)),
    el("p", { class: "muted", text: `Hyper-connected model: ${formatBytes(estimate.hyper_connected_bytes)} predicted.` }),
    estimate.error ? el("p", { class: "error", role: "alert", text: estimate.error }) : null,
  );
}

export async function renderNewSearch(view) {
  const [fields, datasetList] = await Promise.all([api("/api/config/fields"), api("/api/datasets")]);
  const datasets = new Map(datasetList.map((dataset) => [dataset.name, dataset]));
  const byName = new Map(fields.map((field) => [field.name, field]));
  const chosenDataset = defaultDataset(datasets);

  const visible = fields.filter((field) => !HIDDEN_FIELDS.has(field.name));
  const main = visible.filter((field) => MAIN_FIELDS.includes(field.name));
  main.sort((a, b) => MAIN_FIELDS.indexOf(a.name) - MAIN_FIELDS.indexOf(b.name));
  const advanced = visible.filter((field) => !MAIN_FIELDS.includes(field.name));

  const formMessage = el("div", { class: "form-message", id: "form-message", role: "alert" });
  const memory = el("div", { id: "memory-slot" });
  const submit = el("button", { type: "submit", class: "primary", id: "submit-search", text: "Start search" });
  const check = el("button", { type: "button", id: "check-memory", text: "Check memory" });
  const form = el(
    "form",
    { class: "search-form", id: "search-form", novalidate: true },
    el("div", { class: "field-grid" }, main.map((field) => fieldRow(field, datasets))),
    el("details", { class: "advanced" },
      el("summary", { text: `More settings (${advanced.length})` }),
      el("div", { class: "field-grid" }, advanced.map((field) => fieldRow(field, datasets)))),
    memory,
    formMessage,
    el("div", { class: "actions" }, check, submit),
  );

  const datasetSelect = form.elements.namedItem("dataset");
  const presetSelect = form.elements.namedItem("preset");
  const datasetNote = el("p", { class: "help dataset-note", id: "dataset-note" });
  const showDatasetNote = () => {
    const dataset = datasets.get(datasetSelect?.value);
    datasetNote.textContent = dataset
      ? `${dataset.available ? "Available" : "Not available"}${dataset.location ? ` at ${dataset.location}` : ""}${dataset.message ? `: ${dataset.message}` : ""}`
      : "";
    datasetNote.classList.toggle("error", Boolean(dataset) && !dataset.available);
  };
  // Only fields the user changed are sent, so the preset supplies the others.
  const touched = new Set(["preset", "name"]);
  const presetHasDataset = () => Boolean(presetSelect) && datasets.has(presetSelect.value);
  if (presetSelect && [...presetSelect.options].some((option) => option.value === chosenDataset)) {
    presetSelect.value = chosenDataset;
  }
  if (datasetSelect) {
    // A preset named after a data set shows that data set. Other presets, such as
    // tiny, leave the choice to the preset.
    datasetSelect.value = presetHasDataset() ? presetSelect.value : "";
    datasetSelect.closest(".field").append(datasetNote);
    datasetSelect.addEventListener("change", showDatasetNote);
    showDatasetNote();
  }
  // The defaults of GET /api/config/fields are those of the default preset, so other
  // presets show no number they might not use.
  const defaultPreset = byName.get("preset")?.default;
  const showDefaults = () => {
    for (const input of form.querySelectorAll("input[data-default]")) {
      if (!input.dataset.default) continue;
      input.placeholder = presetSelect?.value === defaultPreset ? input.dataset.default : "from the preset";
    }
  };
  showDefaults();
  presetSelect?.addEventListener("change", showDefaults);
  presetSelect?.addEventListener("change", () => {
    if (datasetSelect && !touched.has("dataset")) {
      datasetSelect.value = presetHasDataset() ? presetSelect.value : "";
      showDatasetNote();
    }
  });

  form.addEventListener("input", (event) => {
    if (event.target.name) touched.add(event.target.name);
    const row = event.target.closest(".field");
    if (row) setFieldError(row.dataset.field, "");
  });
  form.addEventListener("change", (event) => {
    if (event.target.name) touched.add(event.target.name);
  });

  const payload = () => {
    const body = {};
    for (const name of touched) {
      const field = byName.get(name);
      if (!field) continue;
      const value = readValue(form, field);
      if (value !== undefined) body[name] = value;
    }
    return body;
  };

  const setFieldError = (name, message) => {
    const slot = form.querySelector(`#error-${CSS.escape(name)}`);
    const control = form.querySelector(`#field-${CSS.escape(name)}`);
    if (slot) slot.textContent = message;
    if (control) control.setAttribute("aria-invalid", message ? "true" : "false");
    return Boolean(slot);
  };

  const showError = (error) => {
    if (error instanceof ApiError && error.status === 422) {
      const unplaced = [];
      for (const [name, message] of Object.entries(error.fieldErrors)) {
        if (!setFieldError(name, message)) unplaced.push(name ? `${name}: ${message}` : message);
      }
      formMessage.textContent = unplaced.length
        ? `The server rejected the configuration: ${unplaced.join("; ")}`
        : "The server rejected the configuration. See the marked fields.";
      form.querySelector("[aria-invalid='true']")?.focus();
    } else {
      formMessage.textContent = error.message;
    }
    formMessage.className = "form-message error";
  };

  const clearErrors = () => {
    for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
    for (const control of form.querySelectorAll("[aria-invalid]")) control.setAttribute("aria-invalid", "false");
    formMessage.textContent = "";
    formMessage.className = "form-message";
  };

  const runEstimate = async () => {
    memory.replaceChildren(el("p", { class: "muted", text: "Checking memory…" }));
    try {
      const estimate = await api("/api/estimate", { method: "POST", body: payload() });
      memory.replaceChildren(memoryTable(estimate));
      return estimate;
    } catch (error) {
      memory.replaceChildren();  // the form message explains what failed
      throw error;
    }
  };

  let confirmedOverBudget = false;
  const busy = (on) => {
    submit.disabled = on;
    check.disabled = on;
  };

  check.addEventListener("click", async () => {
    clearErrors();
    busy(true);
    try {
      await runEstimate();
    } catch (error) {
      memory.replaceChildren();
      showError(error);
    } finally {
      busy(false);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    busy(true);
    try {
      const estimate = await runEstimate();
      if (!estimate.fits && !confirmedOverBudget) {
        confirmedOverBudget = true;
        formMessage.textContent = "The predicted memory exceeds the budget. Press Start search again to start anyway.";
        formMessage.className = "form-message warning";
        submit.textContent = "Start anyway";
        return;
      }
      const search = await api("/api/searches", { method: "POST", body: payload() });
      window.location.hash = `#/searches/${encodeURIComponent(search.id)}`;
    } catch (error) {
      showError(error);
    } finally {
      busy(false);
    }
  });

  view.append(
    el("section", { class: "panel" },
      el("h1", { text: "New search" }),
      el("p", { class: "muted", text: "Fields left empty take the preset's value. The memory check runs before the search starts." }),
      form),
  );
}
