// Models: the base models, the organization's fine-tuned models and their checkpoints. Fine-tuned
// models and checkpoints can be exported (downloaded as a zip in a chosen format); fine-tuned
// models can be deleted by their owner (after a confirmation); base models can be neither.

import { api, exportModel, listAll } from "../api.js";
import { clear, confirmDialog, copyButton, download, errorBox, h, nextId, select, when } from "../dom.js";

const EXPORT_FORMATS = [
  ["hf", "hf — merged Hugging Face weights"],
  ["adapter", "adapter — PEFT LoRA adapter"],
  ["gguf", "gguf — llama.cpp / Ollama"],
];

export function render(main) {
  document.title = "Models · tunery";
  const problem = h("div", { "aria-live": "polite" });
  const body = h("div");
  main.append(h("h1", {}, "Models"), problem, body);

  async function load() {
    try {
      const models = await listAll("/v1/models");
      clear(body, h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Model", "Kind", "Created", "Export", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, models.map((m) => {
          const kind = m.owned_by === "tunery" ? "base" : m.id.includes(":ckpt-step-") ? "checkpoint" : "fine-tuned";
          return h("tr", { dataset: { model: m.id } },
            h("td", { class: "mono" }, m.id, " ", copyButton(m.id, "Copy")),
            h("td", {}, kind),
            h("td", {}, when(m.created)),
            h("td", {}, kind === "base" ? null : exportControl(m.id)),
            h("td", { class: "row-actions" },
              h("a", { class: "button secondary small", href: `#/playground?model=${encodeURIComponent(m.id)}` }, "Playground"),
              kind === "fine-tuned" ? h("button", { type: "button", class: "danger small", onclick: () => remove(m.id) }, "Delete") : null));
        })))));
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  async function remove(id) {
    if (!(await confirmDialog(`Delete ${id} and its weights? This cannot be undone.`, "Delete model"))) return;
    try {
      await api(`/v1/models/${encodeURIComponent(id)}`, { method: "DELETE" });
      load();
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  load();
}

// A format and a Download button; while the server prepares the zip (a first export merges the
// weights: seconds to minutes) both are disabled and the row says so; a refusal is shown below.
function exportControl(modelId) {
  const format = select(EXPORT_FORMATS, "hf", { id: nextId("export"), class: "small" });
  const button = h("button", { type: "button", class: "secondary small" }, "Download");
  const status = h("div", { class: "export-status", "aria-live": "polite" });
  button.addEventListener("click", async () => {
    const chosen = format.value;
    button.disabled = format.disabled = true;
    clear(status, h("p", { class: "checking", "aria-busy": "true" }, `Preparing ${chosen} export…`));
    try {
      const { blob, filename } = await exportModel(modelId, chosen);
      download(blob, filename);
      clear(status);
    } catch (error) {
      clear(status, errorBox(error));
    } finally {
      button.disabled = format.disabled = false;
    }
  });
  return h("div", { class: "export" },
    h("div", { class: "export-row" }, h("label", { for: format.id, class: "visually-hidden" }, "Export format"), format, button), status);
}
