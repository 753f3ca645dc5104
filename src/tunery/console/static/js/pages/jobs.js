// The jobs list: every job of the organization, newest first, a page at a time, filtered by
// status, with each running job's progress (step of total, time left); it refreshes itself.

import { api } from "../api.js";
import { clear, duration, errorBox, field, h, select, statusBadge, when } from "../dom.js";

const PAGE = 20;
const REFRESH_MS = 2000;
const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const ACTIVE = new Set(["validating_files", "queued", "running", "paused"]);

// The newest step of a running job: its latest metrics event.
export async function progressOf(jobId) {
  const events = await api(`/v1/fine_tuning/jobs/${jobId}/events`, { query: { limit: 20 } });
  const metrics = events.data.find((e) => e.type === "metrics" && e.data);
  return metrics ? { step: metrics.data.step, total: metrics.data.total_steps } : null;
}

export function progressCell(job, progress) {
  if (!progress || !["running", "paused"].includes(job.status)) return "";
  const left = job.estimated_finish ? duration(job.estimated_finish - Date.now() / 1000) : "";
  return h("div", { class: "progress-cell" },
    h("progress", { max: progress.total, value: progress.step, "aria-label": `step ${progress.step} of ${progress.total}` }),
    h("span", {}, `${progress.step}/${progress.total}`, left && job.status === "running" ? ` · ${left} left` : ""));
}

export function render(main, params) {
  document.title = "Jobs · tunery";
  const status = params.get("status") || "";
  const filter = select([["", "All"], ...STATUSES.map((s) => [s, s.replace("_", " ")])], status, { name: "status" });
  filter.addEventListener("change", () => {
    window.location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs";
  });
  const body = h("div", { "aria-live": "polite" });
  const previous = h("button", { type: "button", class: "secondary", disabled: true }, "Newer");
  const next = h("button", { type: "button", class: "secondary", disabled: true }, "Older");
  main.append(
    h("div", { class: "title-row" }, h("h1", {}, "Fine-tuning jobs"), h("a", { class: "button", href: "#/jobs/new" }, "New job")),
    h("div", { class: "toolbar" }, field("Status", filter)),
    body,
    h("nav", { class: "pager", "aria-label": "Pages of jobs" }, previous, next));

  const cursors = [undefined]; // `after` of each page seen; the last is the current page's
  let timer = null;
  let stopped = false;
  let latest = 0; // the newest load: an older one that answers late is dropped

  async function load() {
    clearTimeout(timer);
    const mine = ++latest;
    try {
      const page = await api("/v1/fine_tuning/jobs", { query: { limit: PAGE, after: cursors.at(-1), status } });
      const running = page.data.filter((j) => ["running", "paused"].includes(j.status));
      const progress = Object.fromEntries(await Promise.all(running.map(async (j) => [j.id, await progressOf(j.id)])));
      if (stopped || mine !== latest) return;
      clear(body, page.data.length ? table(page.data, progress)
        : h("p", { class: "empty" }, status ? `No ${status.replace("_", " ")} jobs.` : "No jobs yet. ",
          status ? null : h("a", { href: "#/jobs/new" }, "Create one.")));
      previous.disabled = cursors.length === 1;
      next.disabled = !page.has_more;
      next.onclick = () => { cursors.push(page.data.at(-1).id); load(); };
      previous.onclick = () => { cursors.pop(); load(); };
      if (page.data.some((j) => ACTIVE.has(j.status)) || cursors.length === 1) timer = setTimeout(load, REFRESH_MS);
    } catch (error) {
      if (stopped || mine !== latest) return;
      clear(body, errorBox(error));
      timer = setTimeout(load, REFRESH_MS * 3);
    }
  }

  load();
  return () => { stopped = true; clearTimeout(timer); };
}

function table(jobs, progress) {
  return h("div", { class: "table-wrap" }, h("table", { class: "jobs" },
    h("thead", {}, h("tr", {}, ["Status", "Job", "Base model", "Suffix", "Created", "Progress", "Fine-tuned model"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, jobs.map((job) => h("tr", { dataset: { job: job.id } },
      h("td", {}, statusBadge(job.status)),
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.id)),
      h("td", {}, job.model),
      h("td", {}, job.user_provided_suffix || ""),
      h("td", {}, when(job.created_at)),
      h("td", {}, progressCell(job, progress[job.id])),
      h("td", { class: "mono" }, job.fine_tuned_model || ""))))));
}
