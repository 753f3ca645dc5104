// A job's page, live: status, progress and time left, charts of loss and token accuracy growing
// as the job trains, the event log, the checkpoints (each a model to try or copy), the resolved
// hyperparameters, the result file, the error of a failed job, and cancel / pause / resume.

import { api, fileContent } from "../api.js";
import { metricsChart } from "../charts.js";
import {
  clear, confirmDialog, copyButton, download, duration, errorBox, h, number, statusBadge, when,
} from "../dom.js";

const REFRESH_MS = 2000;
const SHOWN_EVENTS = 1000; // the newest; the charts use them all
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const LOSS = [{ key: "train_loss", label: "Training loss" }, { key: "valid_loss", label: "Validation loss" },
  { key: "full_valid_loss", label: "Full validation loss (epoch end)", pointsOnly: true }];
const ACCURACY = [{ key: "train_mean_token_accuracy", label: "Training token accuracy" },
  { key: "valid_mean_token_accuracy", label: "Validation token accuracy" },
  { key: "full_valid_mean_token_accuracy", label: "Full validation token accuracy (epoch end)", pointsOnly: true }];

export function render(main, params) {
  const id = params.get("id");
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  document.title = `${id} · tunery`;
  const parts = {
    header: h("div"), problem: h("div"), actions: h("div", { class: "actions" }), progress: h("div"),
    details: h("div", { class: "grid" }), checkpoints: h("div"), events: h("ol", { class: "events", "aria-live": "off" }),
  };
  const loss = metricsChart("Loss", LOSS);
  const accuracy = metricsChart("Token accuracy", ACCURACY);
  const charts = h("section", { class: "charts", "aria-label": "Metrics" }, loss.element, accuracy.element);
  main.append(parts.header, parts.problem, parts.actions, parts.progress, charts,
    parts.details,
    h("section", {}, h("h2", {}, "Checkpoints"), parts.checkpoints),
    h("section", {}, h("h2", {}, "Events"), parts.events));

  const seen = new Set(); // ids of the events so far
  let ordered = []; // the events, newest first, as the API lists them
  let timer = null;
  let stopped = false;
  let checkpointsSeen = -1;
  let lastJob = null;
  let eventsShown = -1;

  async function newEvents() {
    const fresh = []; // newer than every event seen: the API lists newest first
    let after;
    for (;;) {
      const page = await api(`${path}/events`, { query: { limit: 100, after } });
      const unseen = page.data.filter((e) => !seen.has(e.id));
      fresh.push(...unseen);
      if (!page.has_more || unseen.length < page.data.length || !page.data.length) break;
      after = page.data.at(-1).id;
    }
    fresh.forEach((e) => seen.add(e.id));
    ordered = fresh.concat(ordered);
  }

  let running = null; // the refresh under way: one at a time, or events would be merged twice

  function refresh() {
    clearTimeout(timer);
    running = (running || Promise.resolve()).then(refreshOnce);
    return running;
  }

  async function refreshOnce() {
    if (stopped) return;
    try {
      const job = await api(path);
      await newEvents();
      if (stopped) return;
      const metrics = ordered.filter((e) => e.type === "metrics" && e.data).map((e) => e.data);
      // Parts are drawn again only when what they show changed: focus stays where it was.
      const shown = JSON.stringify({ ...job, estimated_finish: null });
      if (shown !== lastJob) {
        lastJob = shown;
        showJob(job);
      }
      showProgress(job, metrics[0]);
      charts.hidden = FINISHED.has(job.status) && !metrics.length; // a job that ended before training: no empty frames
      if (ordered.length !== eventsShown) {
        eventsShown = ordered.length;
        loss.update(metrics);
        accuracy.update(metrics);
        showEvents(ordered);
      }
      const checkpointEvents = ordered.filter((e) => e.message.startsWith("Checkpoint created")).length;
      if (checkpointEvents !== checkpointsSeen || FINISHED.has(job.status)) {
        checkpointsSeen = checkpointEvents;
        const checkpoints = (await api(`${path}/checkpoints`, { query: { limit: 100 } })).data;
        if (stopped) return;
        showCheckpoints(checkpoints);
      }
      clearTimeout(timer);
      if (!FINISHED.has(job.status)) timer = setTimeout(refresh, REFRESH_MS);
    } catch (error) {
      if (stopped) return;
      clear(parts.problem, errorBox(error));
      clearTimeout(timer);
      if (error.status !== 404 && error.status !== 401) timer = setTimeout(refresh, REFRESH_MS * 3);
    }
  }

  function showJob(job) {
    clear(parts.header,
      h("div", { class: "title-row" }, h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)), statusBadge(job.status)),
      job.fine_tuned_model ? h("p", { class: "model-name" }, "Fine-tuned model: ", h("code", {}, job.fine_tuned_model), " ",
        copyButton(job.fine_tuned_model, "Copy name"), " ",
        h("a", { class: "button small", href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}` }, "Try in playground"))
        : null);
    clear(parts.problem, job.status === "failed" && job.error
      ? h("div", { class: "error", role: "alert" }, h("strong", {}, "The job failed: "), job.error.message,
        job.error.param ? ` (${job.error.param})` : "")
      : null);
    showActions(job);
    const hp = job.hyperparameters || {};
    const rows = [["Base model", job.model], ["Suffix", job.user_provided_suffix || "—"], ["Created", when(job.created_at)],
      ["Finished", when(job.finished_at) || "—"], ["Training file", job.training_file],
      ["Validation file", job.validation_file || "—"], ["Seed", job.seed], ["Trained tokens", job.trained_tokens ?? "—"],
      ...Object.entries(job.metadata || {}).map(([key, value]) => [`Metadata: ${key}`, value])];
    const hpRows = [["Epochs", hp.n_epochs], ["Batch size", hp.batch_size], ["Learning rate multiplier", hp.learning_rate_multiplier],
      ["Training type", hp.training_type], ["Prompt loss weight", hp.prompt_loss_weight]].filter(([, v]) => v !== undefined && v !== null);
    const result = (job.result_files || [])[0];
    clear(parts.details,
      h("section", {}, h("h2", {}, "Job"), definitions(rows)),
      h("section", {}, h("h2", {}, "Hyperparameters"), definitions(hpRows),
        result ? h("button", { type: "button", class: "secondary", onclick: () => downloadResults(result) }, "Download result file") : null));
  }

  function showProgress(job, last) {
    clear(parts.progress, last && !FINISHED.has(job.status) ? h("div", { class: "progress-row" },
      h("progress", { max: last.total_steps, value: last.step, "aria-label": "Training progress" }),
      h("span", {}, `Step ${last.step} of ${last.total_steps}`,
        job.status === "running" && job.estimated_finish ? ` · about ${duration(job.estimated_finish - Date.now() / 1000)} left` : ""))
      : null);
  }

  function showActions(job) {
    const buttons = [];
    if (!FINISHED.has(job.status) && job.status !== "paused") buttons.push(action("Pause", "pause", "secondary"));
    if (job.status === "paused") buttons.push(action("Resume", "resume", "secondary"));
    if (!FINISHED.has(job.status)) {
      buttons.push(h("button", { type: "button", class: "danger", onclick: async () => {
        if (await confirmDialog(`Cancel job ${job.id}? Its checkpoints are deleted.`, "Cancel job")) act("cancel");
      } }, "Cancel job"));
    }
    clear(parts.actions, buttons);
  }

  function action(text, verb, style) {
    return h("button", { type: "button", class: style, onclick: () => act(verb) }, text);
  }

  async function act(verb) {
    try {
      await api(`${path}/${verb}`, { method: "POST" });
    } catch (error) {
      clear(parts.problem, errorBox(error));
    }
    refresh();
  }

  function showCheckpoints(checkpoints) {
    clear(parts.checkpoints, checkpoints.length ? h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Step", "Model", "Training loss", "Validation loss", "Full validation loss", "Token accuracy", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, checkpoints.map((c) => h("tr", {},
        h("td", {}, c.step_number),
        h("td", { class: "mono" }, c.fine_tuned_model_checkpoint, " ", copyButton(c.fine_tuned_model_checkpoint, "Copy")),
        h("td", {}, number(c.metrics.train_loss)), h("td", {}, number(c.metrics.valid_loss)),
        h("td", {}, number(c.metrics.full_valid_loss)), h("td", {}, number(c.metrics.train_mean_token_accuracy)),
        h("td", {}, h("a", { class: "button small", href: `#/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}` },
          "Try in playground")))))))
      : h("p", { class: "empty" }, "No checkpoint yet: one is written at the end of each epoch."));
  }

  function showEvents(ordered) {
    clear(parts.events, ordered.slice(0, SHOWN_EVENTS).map((e) => h("li", { class: `level-${e.level}` },
      h("time", {}, when(e.created_at)), " ", h("span", {}, e.message))));
  }

  async function downloadResults(fileId) {
    try {
      const info = await api(`/v1/files/${fileId}`);
      download(await fileContent(fileId), info.filename);
    } catch (error) {
      clear(parts.problem, errorBox(error));
    }
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); loss.destroy(); accuracy.destroy(); };
}

function definitions(rows) {
  return h("dl", {}, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, String(value))]));
}
