// Creating a job in the browser: pick or drop a training file (and a validation file), see the
// report a job would give it (every problem with its line and code, token statistics, default
// epochs, billed tokens, the training time measured on this server) before anything starts;
// choose the model and hyperparameters; create. A file with errors cannot start a job.

import { api, listAll } from "../api.js";
import { clear, duration, errorBox, field, h, select } from "../dom.js";

const PREFERRED_BASE = "SmolLM2-135M-Instruct";

export function render(main) {
  document.title = "New job · tunery";
  const problem = h("div", { "aria-live": "polite" });
  const modelOptions = h("datalist", { id: "model-options" });
  const model = h("input", { type: "text", name: "model", required: true, list: "model-options", autocomplete: "off",
    spellcheck: "false" });
  const training = dataPicker("training", "Training file");
  const validation = dataPicker("validation", "Validation file (optional)");
  const epochs = h("input", { type: "number", name: "n_epochs", min: 1, max: 50, placeholder: "auto", inputmode: "numeric" });
  const batch = h("input", { type: "number", name: "batch_size", min: 1, max: 256, placeholder: "auto", inputmode: "numeric" });
  const lr = h("input", { type: "number", name: "learning_rate_multiplier", min: 0, step: "any", placeholder: "auto" });
  const trainingType = select([["", "As the model was trained (LoRA for a base model)"], ["lora", "LoRA (adapter)"],
    ["full", "Full (every weight)"]], "", { name: "training_type" });
  const suffix = h("input", { type: "text", name: "suffix", maxlength: 64, pattern: "[A-Za-z0-9_\\-]{1,64}", autocomplete: "off" });
  const seed = h("input", { type: "number", name: "seed", min: 0, placeholder: "random", inputmode: "numeric" });
  const wandb = h("input", { type: "text", name: "wandb_project", autocomplete: "off" });
  const create = h("button", { type: "submit", disabled: true }, "Create job");
  const blocked = h("p", { class: "hint", id: "create-blocked" });

  const form = h("form", { class: "create", method: "post", novalidate: true, "aria-describedby": "create-blocked" },
    h("h1", {}, "New fine-tuning job"),
    h("section", { class: "card" }, h("h2", {}, "Model"),
      field("Base or fine-tuned model", model, "A model of this server (the list), or a Hugging Face id such as "
        + "Qwen/Qwen2.5-0.5B-Instruct, which the job downloads first. Fine-tuned models and checkpoints continue "
        + "their training."), modelOptions),
    h("section", { class: "card" }, h("h2", {}, "Training data"), training.element, validation.element),
    h("section", { class: "card" }, h("h2", {}, "Hyperparameters"),
      h("div", { class: "grid-3" },
        field("Epochs", epochs, "Empty: auto"), field("Batch size", batch, "Empty: auto"),
        field("Learning rate multiplier", lr, "Empty: auto")),
      field("Training type", trainingType)),
    h("section", { class: "card" }, h("h2", {}, "Options"),
      h("div", { class: "grid-3" },
        field("Suffix", suffix, "Up to 64 letters, digits, - and _; in the model's name"),
        field("Seed", seed, "Empty: random"),
        field("Weights & Biases project", wandb, "Empty: no W&B run"))),
    problem, blocked, create);
  main.append(form);

  const pickers = [training, validation];
  function update() {
    const states = pickers.map((p) => p.state());
    const reason = !training.chosen() ? "Choose a training file."
      : states.includes("checking") ? "Checking the files…"
        : states.includes("error") ? "Fix the files' errors first: a file with errors cannot start a job."
          : !model.value.trim() ? "Name the model." : "";
    blocked.textContent = reason;
    create.disabled = Boolean(reason);
  }
  for (const picker of pickers) picker.onChange(() => { picker.check(model.value.trim(), update); update(); });
  update();
  model.addEventListener("change", () => { pickers.forEach((p) => p.check(model.value.trim(), update)); update(); });

  listAll("/v1/models").then((models) => {
    const names = models.map((m) => m.id);
    const preferred = names.includes(PREFERRED_BASE) ? PREFERRED_BASE : names[0];
    clear(modelOptions, models.map((m) => h("option", { value: m.id }, m.owned_by === "tunery" ? "base model" : "fine-tuned")));
    // A default only into an empty field nobody is typing in (the list may come mid-typing).
    if (!model.value && document.activeElement !== model) model.value = preferred || "";
    pickers.filter((p) => p.chosen()).forEach((p) => p.check(model.value.trim(), update)); // chosen before the list came
    update();
  }).catch((error) => clear(problem, errorBox(error)));
  listAll("/v1/files", { purpose: "fine-tune" }, 10000).then((files) => pickers.forEach((p) => p.offer(files)))
    .catch((error) => clear(problem, errorBox(error)));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (create.disabled) return;
    create.disabled = true;
    clear(problem, h("p", {}, "Creating…"));
    try {
      const body = { model: model.value.trim(), training_file: await training.fileId() };
      if (validation.chosen()) body.validation_file = await validation.fileId();
      const hyperparameters = trainingType.value ? { training_type: trainingType.value } : {};
      if (epochs.value) hyperparameters.n_epochs = Number(epochs.value);
      if (batch.value) hyperparameters.batch_size = Number(batch.value);
      if (lr.value) hyperparameters.learning_rate_multiplier = Number(lr.value);
      body.method = { type: "supervised", supervised: { hyperparameters } };
      if (suffix.value.trim()) body.suffix = suffix.value.trim();
      if (seed.value) body.seed = Number(seed.value);
      if (wandb.value.trim()) body.integrations = [{ type: "wandb", wandb: { project: wandb.value.trim() } }];
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      window.location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      clear(problem, errorBox(error));
      update();
    }
  });
}

// A training or validation file: a local file (picked or dropped) or an uploaded one, with its report.
function dataPicker(name, label) {
  const input = h("input", { type: "file", name: `${name}_file`, accept: ".jsonl,application/jsonl" });
  const uploaded = h("select", { name: `${name}_file_id` }, h("option", { value: "" }, "—"));
  const zone = h("div", { class: "dropzone" },
    field(`${label}: a JSONL file from this computer`, input, "Or drop it here."),
    field(`${label}: or one already uploaded`, uploaded));
  const report = h("div", { class: "report", "aria-live": "polite" });
  const element = h("fieldset", { class: "picker" }, h("legend", {}, label), zone, report);
  let local = null; // a File
  const uploads = new Map(); // File -> its uploaded id
  let status = "empty"; // empty | checking | ok | error
  let sequence = 0;
  let changed = () => {};

  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => choose(input.files[0] || null));
  uploaded.addEventListener("change", () => { local = null; input.value = ""; changed(); });

  function choose(file) {
    local = file;
    uploaded.value = "";
    changed();
  }

  return {
    element,
    chosen: () => Boolean(local || uploaded.value),
    state: () => (local || uploaded.value ? status : "empty"),
    onChange(callback) { changed = callback; },
    offer(files) {
      clear(uploaded, h("option", { value: "" }, "—"), files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`)));
    },
    async check(modelName, done) {
      const mine = ++sequence;
      if (!local && !uploaded.value) {
        status = "empty";
        clear(report);
        done();
        return;
      }
      status = "checking";
      clear(report, h("p", { class: "checking", "aria-busy": "true" }, "Checking the file as a job would (counting tokens, measuring the training speed)…"));
      const form = new FormData();
      form.append("model", modelName);
      if (local) form.append("file", local, local.name);
      else form.append("file_id", uploaded.value);
      try {
        const result = await api("/tunery/files/check", { method: "POST", form });
        if (mine !== sequence) return;
        status = result.ok ? "ok" : "error";
        clear(report, reportView(result, local ? local.name : uploaded.selectedOptions[0].textContent));
      } catch (error) {
        if (mine !== sequence) return;
        if (error.code === "model_not_downloaded") { // the job downloads the model, then checks the file
          status = "ok";
          clear(report, h("p", { class: "hint", role: "status" }, error.message));
        } else {
          status = "error";
          clear(report, errorBox(error));
        }
      }
      done();
    },
    // The file's id, uploading a local file first (once: a second try at creating reuses it).
    async fileId() {
      if (!local) return uploaded.value;
      if (!uploads.has(local)) {
        const form = new FormData();
        form.append("purpose", "fine-tune");
        form.append("file", local, local.name);
        uploads.set(local, (await api("/v1/files", { method: "POST", form })).id);
      }
      return uploads.get(local);
    },
  };
}

export function reportView(report, name) {
  const stats = report.stats || {};
  const problems = (title, list, count, style) => (count ? h("div", { class: `problems ${style}` },
    h("h3", {}, `${title} (${count})`),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col" }, "Code"), h("th", { scope: "col" }, "Message"))),
      h("tbody", {}, list.map((p) => h("tr", {}, h("td", {}, p.line || "—"), h("td", { class: "mono" }, p.code), h("td", {}, p.message)))))))
    : null);
  const distributions = [["Messages", stats.messages_per_example], ["Tokens", stats.tokens_per_example],
    ["Trained tokens", stats.trained_tokens_per_example]].filter(([, d]) => d);
  return h("div", { class: `report-body ${report.ok ? "ok" : "bad"}` },
    h("p", {}, h("strong", {}, name), `: ${report.format || "unknown"} format, ${report.examples} valid examples `,
      `(tokens counted with ${report.model}, context ${stats.context_length})`),
    problems("Errors", report.errors, report.error_count, "errors"),
    problems("Warnings", report.warnings, report.warning_count, "warnings"),
    distributions.length ? h("div", { class: "table-wrap" }, h("table", { class: "stats" },
      h("caption", {}, "Per example"),
      h("thead", {}, h("tr", {}, ["", "min", "max", "mean", "median", "p5", "p95"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, distributions.map(([label, d]) => h("tr", {}, h("th", { scope: "row" }, label),
        [d.min, d.max, d.mean, d.median, d.p5, d.p95].map((v) => h("td", {}, v))))))) : null,
    stats.examples ? h("ul", { class: "facts" },
      h("li", {}, `Examples over the context (truncated): ${stats.too_long}`),
      h("li", {}, `Default epochs (auto): ${stats.n_epochs}`),
      h("li", {}, `Billed tokens: ${Number(stats.billed_tokens).toLocaleString()} (${Number(stats.tokens).toLocaleString()} tokens × ${stats.n_epochs} epochs)`),
      stats.estimated_seconds !== null && stats.estimated_seconds !== undefined
        ? h("li", {}, `Estimated training time on this server: about ${duration(stats.estimated_seconds)}`) : null) : null,
    h("p", { class: report.ok ? "valid" : "invalid" },
      report.ok ? "The file is valid." : `The file has ${report.error_count} errors; fix them to start a job.`));
}
