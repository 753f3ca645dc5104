// Models: the base models, the organization's fine-tuned models and their checkpoints. Fine-tuned
// models can be deleted by their owner (after a confirmation); base models cannot.

import { api, listAll } from "../api.js";
import { clear, confirmDialog, copyButton, errorBox, h, when } from "../dom.js";

export function render(main) {
  document.title = "Models · tunery";
  const problem = h("div", { "aria-live": "polite" });
  const body = h("div");
  main.append(h("h1", {}, "Models"), problem, body);

  async function load() {
    try {
      const models = await listAll("/v1/models");
      clear(body, h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Model", "Kind", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, models.map((m) => {
          const kind = m.owned_by === "tunery" ? "base" : m.id.includes(":ckpt-step-") ? "checkpoint" : "fine-tuned";
          return h("tr", { dataset: { model: m.id } },
            h("td", { class: "mono" }, m.id, " ", copyButton(m.id, "Copy")),
            h("td", {}, kind),
            h("td", {}, when(m.created)),
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
