// A job's page, live: status, method, progress and time left, charts growing as the job trains
// (supervised: loss and token accuracy; DPO: loss, reward margin and reward accuracy), the event
// log, the checkpoints (each a model to try or copy), the resolved hyperparameters, the result
// file, the error of a failed job, and cancel / pause / resume.

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
// A DPO chart's series: its title names the figure, so they are named by what they were measured on.
function preference(figure) {
  return [{ key: `train_${figure}`, label: "Training" }, { key: `valid_${figure}`, label: "Validation" },
    { key: `full_valid_${figure}`, label: "Full validation (epoch end)", pointsOnly: true }];
}
// Each method's charts, in order: [title, series, what it means (optional)].
const CHARTS = {
  supervised: [["Loss", LOSS], ["Token accuracy", ACCURACY]],
  dpo: [
    ["Loss", preference("loss"), "The DPO loss: near 0.69 (ln 2) at first, the model being its own reference; it falls "
      + "as the preferred answers pull ahead."],
    ["Reward margin", preference("reward_margin"), "The preferred minus the non-preferred answer's gain in "
      + "log-probability since the start, × beta. Above 0: the preference is being learned."],
    ["Reward accuracy", preference("reward_accuracy"), "The share of pairs (0 to 1) in which the preferred answer "
      + "gained more than the non-preferred one."],
  ],
};
const METHOD_NAMES = { supervised: "Supervised", dpo: "DPO (direct preference optimization)" };
const METHOD_BADGES = { supervised: "Supervised", dpo: "DPO" };
// The checkpoints table's figures: [column, metrics key].
const CHECKPOINT_COLUMNS = {
  supervised: [["Training loss", "train_loss"], ["Validation loss", "valid_loss"], ["Full validation loss", "full_valid_loss"],
    ["Token accuracy", "train_mean_token_accuracy"]],
  dpo: [["Training loss", "train_loss"], ["Validation loss", "valid_loss"], ["Full validation loss", "full_valid_loss"],
    ["Training reward margin", "train_reward_margin"], ["Training reward accuracy", "train_reward_accuracy"],
    ["Full validation reward accuracy", "full_valid_reward_accuracy"]],
};

// A job's method: its `method.type` (a job created without one is supervised).
function methodOf(job) {
  return (job.method && job.method.type) || "supervised";
}

export function render(main, params) {
  const id = params.get("id");
  const path = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;
  document.title = `${id} · tunery`;
  const parts = {
    header: h("div"), problem: h("div"), actions: h("div", { class: "actions" }), progress: h("div"),
    details: h("div", { class: "grid" }), checkpoints: h("div"), events: h("ol", { class: "events", "aria-live": "off" }),
  };
  const charts = h("section", { class: "charts", "aria-label": "Metrics" });
  let drawn = []; // the method's charts, made once the job (and so its method) is known
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
      if (!drawn.length) {
        drawn = (CHARTS[methodOf(job)] || CHARTS.supervised).map(([title, series, about]) => metricsChart(title, series, about));
        clear(charts, drawn.map((chart) => chart.element));
      }
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
        drawn.forEach((chart) => chart.update(metrics));
        showEvents(ordered);
      }
      const checkpointEvents = ordered.filter((e) => e.message.startsWith("Checkpoint created")).length;
      if (checkpointEvents !== checkpointsSeen || FINISHED.has(job.status)) {
        checkpointsSeen = checkpointEvents;
        const checkpoints = (await api(`${path}/checkpoints`, { query: { limit: 100 } })).data;
        if (stopped) return;
        showCheckpoints(checkpoints, methodOf(job), metrics);
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
      h("div", { class: "title-row" }, h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)),
        h("div", { class: "badges" },
          h("span", { class: "method-tag", title: `Method: ${METHOD_NAMES[methodOf(job)] || methodOf(job)}` },
            METHOD_BADGES[methodOf(job)] || methodOf(job)),
          statusBadge(job.status))),
      job.fine_tuned_model ? h("p", { class: "model-name" }, "Fine-tuned model: ", h("code", {}, job.fine_tuned_model), " ",
        copyButton(job.fine_tuned_model, "Copy name"), " ",
        h("a", { class: "button small", href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}` }, "Try in playground"))
        : null);
    clear(parts.problem, job.status === "failed" && job.error
      ? h("div", { class: "error", role: "alert" }, h("strong", {}, "The job failed: "), job.error.message,
        job.error.param ? ` (${job.error.param})` : "")
      : null);
    showActions(job);
    const method = methodOf(job);
    // A DPO job's own hyperparameters (beta among them) are in its method; the top-level field is supervised's.
    const hp = (job.method && job.method[method] && job.method[method].hyperparameters) || job.hyperparameters || {};
    const rows = [["Method", METHOD_NAMES[method] || method], ["Base model", job.model], ["Suffix", job.user_provided_suffix || "—"], ["Created", when(job.created_at)],
      ["Finished", when(job.finished_at) || "—"], ["Training file", job.training_file],
      ["Validation file", job.validation_file || "—"], ["Seed", job.seed], ["Trained tokens", job.trained_tokens ?? "—"],
      ...Object.entries(job.metadata || {}).map(([key, value]) => [`Metadata: ${key}`, value])];
    const hpRows = [["Epochs", hp.n_epochs], ["Batch size", hp.batch_size], ["Learning rate multiplier", hp.learning_rate_multiplier],
      ["Beta (how far from the starting model)", hp.beta], ["Training type", hp.training_type], ["Prompt loss weight", hp.prompt_loss_weight]].filter(([, v]) => v !== undefined && v !== null);
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

  // metrics: the job's metrics events' data, newest first: a figure the API's checkpoint metrics
  // leave out (they are OpenAI's: loss and token accuracy) is its step's.
  function showCheckpoints(checkpoints, method, metrics) {
    const columns = CHECKPOINT_COLUMNS[method] || CHECKPOINT_COLUMNS.supervised;
    const atStep = new Map([...metrics].reverse().map((m) => [m.step, m])); // the newest of a step wins
    const figure = (c, key) => c.metrics[key] ?? (atStep.get(c.step_number) || {})[key];
    clear(parts.checkpoints, checkpoints.length ? h("div", { class: "table-wrap" }, h("table", { class: "checkpoints" },
      h("thead", {}, h("tr", {}, ["Step", "Model", ...columns.map(([column]) => column), ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, checkpoints.map((c) => h("tr", {},
        h("td", {}, c.step_number),
        h("td", { class: "mono" }, c.fine_tuned_model_checkpoint, " ", copyButton(c.fine_tuned_model_checkpoint, "Copy")),
        columns.map(([, key]) => h("td", {}, number(figure(c, key)))),
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
  return () => { stopped = true; clearTimeout(timer); drawn.forEach((chart) => chart.destroy()); };
}

function definitions(rows) {
  return h("dl", {}, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, String(value))]));
}
