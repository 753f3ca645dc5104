// Creating a job in the browser: choose the method (supervised, or DPO with its beta), pick or
// drop a training file (and a validation file), see the report a job of that method would give it
// (every problem with its line and code, token statistics, default epochs, billed tokens, the
// training time measured on this server) before anything starts; choose the model and
// hyperparameters; create. A file with errors cannot start a job; the server's refusal of the job
// is shown in the form, its field marked.

import { api, listAll } from "../api.js";
import { clear, duration, errorBox, field, h, nextId, select } from "../dom.js";

const PREFERRED_BASE = "SmolLM2-135M-Instruct";

export function render(main) {
  document.title = "New job · tunery";
  const problem = h("div", { "aria-live": "polite" });
  const modelOptions = h("datalist", { id: "model-options" });
  const model = h("input", { type: "text", name: "model", required: true, list: "model-options", autocomplete: "off",
    spellcheck: "false" });
  const method = select([["supervised", "Supervised: examples of the answers to give"],
    ["dpo", "DPO: pairs of a preferred and a non-preferred answer"]], "supervised", { name: "method" });
  const beta = h("input", { type: "number", name: "beta", min: 0, max: 2, step: "any", placeholder: "auto", inputmode: "decimal" });
  const betaField = field("Beta", beta, "Empty: auto. Higher keeps the model closer to the model it starts from; lower "
    + "lets the preferences pull it further.");
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
    h("section", { class: "card" }, h("h2", {}, "Method"),
      h("div", { class: "grid-3" },
        field("Method", method, "Supervised trains on chat or prompt/completion examples; DPO on preference pairs "
          + "(input, preferred_output, non_preferred_output), often after a supervised fine-tune."),
        betaField)),
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
  const check = (picker) => picker.check(model.value.trim(), method.value, update);
  // The field a refusal names (the server's `param`): marked, the message under it, focused; until it changes.
  const named = [["method.dpo.hyperparameters.beta", beta], ["n_epochs", epochs], ["batch_size", batch],
    ["learning_rate_multiplier", lr], ["training_type", trainingType], ["suffix", suffix], ["seed", seed], ["model", model]];
  for (const [, control] of named) control.addEventListener("input", () => unmark(control));
  function unmark(control) {
    if (control.getAttribute("aria-invalid") !== "true") return;
    control.removeAttribute("aria-invalid");
    control.parentElement.querySelector(".field-error")?.remove();
    if (control.dataset.describedBy) control.setAttribute("aria-describedby", control.dataset.describedBy);
    else control.removeAttribute("aria-describedby");
  }
  function markInvalid(control, message) {
    unmark(control);
    const note = h("small", { class: "field-error", id: nextId("field-error") }, message);
    control.parentElement.append(note);
    control.dataset.describedBy = control.getAttribute("aria-describedby") || "";
    control.setAttribute("aria-describedby", `${control.dataset.describedBy} ${note.id}`.trim());
    control.setAttribute("aria-invalid", "true");
    control.focus();
  }
  function refused(error) {
    const hit = error.param && named.find(([name]) => error.param === name || error.param.endsWith(`.${name}`));
    if (hit) markInvalid(hit[1], error.message);
  }
  function update() {
    const states = pickers.map((p) => p.state());
    const reason = !training.chosen() ? "Choose a training file."
      : states.includes("checking") ? "Checking the files…"
        : states.includes("error") ? "Fix the files' errors first: a file with errors cannot start a job."
          : !model.value.trim() ? "Name the model." : "";
    blocked.textContent = reason;
    create.disabled = Boolean(reason);
  }
  for (const picker of pickers) picker.onChange(() => { check(picker); update(); });
  update();
  model.addEventListener("change", () => { pickers.forEach(check); update(); });
  function showMethod() { betaField.hidden = method.value !== "dpo"; }
  showMethod();
  method.addEventListener("change", () => { showMethod(); pickers.forEach(check); update(); }); // the formats it takes differ

  listAll("/v1/models").then((models) => {
    const names = models.map((m) => m.id);
    const preferred = names.includes(PREFERRED_BASE) ? PREFERRED_BASE : names[0];
    clear(modelOptions, models.map((m) => h("option", { value: m.id }, m.owned_by === "tunery" ? "base model" : "fine-tuned")));
    // A default only into an empty field nobody is typing in (the list may come mid-typing).
    if (!model.value && document.activeElement !== model) model.value = preferred || "";
    pickers.filter((p) => p.chosen()).forEach(check); // chosen before the list came
    update();
  }).catch((error) => clear(problem, errorBox(error)));
  listAll("/v1/files", { purpose: "fine-tune" }, 10000).then((files) => pickers.forEach((p) => p.offer(files)))
    .catch((error) => clear(problem, errorBox(error)));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (create.disabled) return;
    const dpo = method.value === "dpo";
    const unreadable = [[epochs, "Epochs"], [batch, "Batch size"], [lr, "Learning rate multiplier"], [seed, "Seed"],
      ...(dpo ? [[beta, "Beta"]] : [])].find(([control]) => control.validity.badInput);
    if (unreadable) { // the browser reads it as empty, which would mean auto
      const message = `${unreadable[1]} must be a number (or left empty).`;
      clear(problem, errorBox(new Error(message)));
      markInvalid(unreadable[0], message);
      return;
    }
    create.disabled = true;
    named.forEach(([, control]) => unmark(control));
    clear(problem, h("p", {}, "Creating…"));
    try {
      const body = { model: model.value.trim(), training_file: await training.fileId() };
      if (validation.chosen()) body.validation_file = await validation.fileId();
      const hyperparameters = trainingType.value ? { training_type: trainingType.value } : {};
      if (epochs.value) hyperparameters.n_epochs = Number(epochs.value);
      if (batch.value) hyperparameters.batch_size = Number(batch.value);
      if (lr.value) hyperparameters.learning_rate_multiplier = Number(lr.value);
      if (dpo) {
        hyperparameters.beta = beta.value === "" ? "auto" : Number(beta.value);
        body.method = { type: "dpo", dpo: { hyperparameters } };
      } else {
        body.method = { type: "supervised", supervised: { hyperparameters } };
      }
      if (suffix.value.trim()) body.suffix = suffix.value.trim();
      if (seed.value) body.seed = Number(seed.value);
      if (wandb.value.trim()) body.integrations = [{ type: "wandb", wandb: { project: wandb.value.trim() } }];
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      window.location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      clear(problem, errorBox(error));
      refused(error);
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
    async check(modelName, methodType, done) {
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
      form.append("method", methodType);
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
  const pairs = report.format === "preference"; // a DPO pair: its input, then each output after it
  const distributions = (pairs
    ? [["Input messages", stats.messages_per_example], ["Input tokens", stats.input_tokens_per_example],
      ["Preferred output's tokens", stats.preferred_tokens_per_example],
      ["Non-preferred output's tokens", stats.non_preferred_tokens_per_example],
      ["Tokens (both sequences)", stats.tokens_per_example], ["Trained tokens (both outputs)", stats.trained_tokens_per_example]]
    : [["Messages", stats.messages_per_example], ["Tokens", stats.tokens_per_example],
      ["Trained tokens", stats.trained_tokens_per_example]]).filter(([, d]) => d);
  return h("div", { class: `report-body ${report.ok ? "ok" : "bad"}` },
    h("p", {}, h("strong", {}, name), `: ${report.format || "unknown"} format, ${report.examples} valid ${pairs ? "pairs" : "examples"} `,
      `(tokens counted with ${report.model}, context ${stats.context_length})`),
    problems("Errors", report.errors, report.error_count, "errors"),
    problems("Warnings", report.warnings, report.warning_count, "warnings"),
    distributions.length ? h("div", { class: "table-wrap" }, h("table", { class: "stats" },
      h("caption", {}, pairs ? "Per pair" : "Per example"),
      h("thead", {}, h("tr", {}, ["", "min", "max", "mean", "median", "p5", "p95"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, distributions.map(([label, d]) => h("tr", {}, h("th", { scope: "row" }, label),
        [d.min, d.max, d.mean, d.median, d.p5, d.p95].map((v) => h("td", {}, v))))))) : null,
    stats.examples ? h("ul", { class: "facts" },
      h("li", {}, `${pairs ? "Pairs with a sequence" : "Examples"} over the context (truncated): ${stats.too_long}`),
      h("li", {}, `Default epochs (auto): ${stats.n_epochs}`),
      h("li", {}, `Billed tokens: ${Number(stats.billed_tokens).toLocaleString()} (${Number(stats.tokens).toLocaleString()} tokens × ${stats.n_epochs} epochs)`),
      stats.estimated_seconds !== null && stats.estimated_seconds !== undefined
        ? h("li", {}, `Estimated training time on this server: about ${duration(stats.estimated_seconds)}`) : null) : null,
    h("p", { class: report.ok ? "valid" : "invalid" },
      report.ok ? "The file is valid." : `The file has ${report.error_count} errors; fix them to start a job.`));
}
