// Evals: the organization's evals (#/evals), and one eval's runs side by side with the items
// where two runs differ (#/evals/ID, ?run=RUN marks the run a report_url names). The page reads
// the public Evals API only; runs are created with the SDK or `tunery evals run`.

import { api } from "../api.js";
import { clear, errorBox, field, h, select, statusBadge, when } from "../dom.js";

const PAGE = 20;
const REFRESH_MS = 2000;
const MAX_ITEMS = 2000; // output items read per run for the comparison (100 a page)
const UNFINISHED = new Set(["queued", "in_progress"]);

export function render(main, params) {
  return params.get("id") ? evalPage(main, params.get("id"), params.get("run")) : listPage(main);
}

// The list ----------------------------------------------------------------------------------------
function listPage(main) {
  document.title = "Evals · tunery";
  const body = h("div", { "aria-live": "polite" });
  const previous = h("button", { type: "button", class: "secondary", disabled: true }, "Newer");
  const next = h("button", { type: "button", class: "secondary", disabled: true }, "Older");
  main.append(h("h1", {}, "Evals"), body, h("nav", { class: "pager", "aria-label": "Pages of evals" }, previous, next));
  const cursors = [undefined];
  let stopped = false;

  async function load() {
    try {
      const page = await api("/v1/evals", { query: { limit: PAGE, after: cursors.at(-1), order: "desc" } });
      if (stopped) return;
      clear(body, page.data.length ? evalsTable(page.data) : h("p", { class: "empty" },
        "No evals yet. Create one with the SDK (", h("code", {}, "client.evals.create"), ") or from a test file with ",
        h("code", {}, "tunery evals run FILE -m MODEL"), "."));
      previous.disabled = cursors.length === 1;
      next.disabled = !page.has_more;
      next.onclick = () => { cursors.push(page.data.at(-1).id); load(); };
      previous.onclick = () => { cursors.pop(); load(); };
    } catch (error) {
      if (!stopped) clear(body, errorBox(error));
    }
  }

  load();
  return () => { stopped = true; };
}

function evalsTable(evals) {
  return h("div", { class: "table-wrap" }, h("table", { class: "evals" },
    h("thead", {}, h("tr", {}, ["Eval", "Testing criteria", "Created", "Id"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, evals.map((ev) => h("tr", { dataset: { eval: ev.id } },
      h("td", {}, h("a", { href: `#/evals/${ev.id}` }, ev.name || ev.id)),
      h("td", {}, ev.testing_criteria.map((c) => c.name).join(", ")),
      h("td", {}, when(ev.created_at)),
      h("td", { class: "mono" }, ev.id))))));
}

// One eval ----------------------------------------------------------------------------------------
function evalPage(main, evalId, markedRun) {
  document.title = "Eval · tunery";
  const head = h("div", { "aria-live": "polite" }, h("p", { class: "checking" }, "Loading…"));
  const runsBody = h("div", { "aria-live": "polite" });
  const compareBody = h("div");
  main.append(h("p", {}, h("a", { href: "#/evals" }, "← All evals")), head,
    h("h2", {}, "Runs"), runsBody,
    h("h2", {}, "Where two runs differ"), compareBody);
  let stopped = false;
  let timer = null;
  let criteria = [];
  let picked = null; // [runA, runB] ids chosen by the person; null: the page's default

  async function load() {
    clearTimeout(timer);
    try {
      const [ev, runs] = await Promise.all([api(`/v1/evals/${evalId}`), allRuns(evalId)]);
      if (stopped) return;
      criteria = ev.testing_criteria.map((c) => c.name);
      document.title = `${ev.name || ev.id} · Evals · tunery`;
      clear(head, h("h1", {}, ev.name || ev.id),
        h("dl", {}, h("dt", {}, "Eval"), h("dd", { class: "mono" }, ev.id),
          h("dt", {}, "Created"), h("dd", {}, when(ev.created_at)),
          h("dt", {}, "Testing criteria"), h("dd", {}, ev.testing_criteria.map((c) => `${c.name} (${c.type})`).join(", "))));
      clear(runsBody, runs.length ? runsTable(runs, criteria, markedRun)
        : h("p", { class: "empty" }, "No runs yet: ", h("code", {}, "client.evals.runs.create"), " starts one."));
      renderComparison(runs);
      if (runs.some((r) => UNFINISHED.has(r.status))) timer = setTimeout(load, REFRESH_MS);
    } catch (error) {
      if (!stopped) clear(head, errorBox(error));
    }
  }

  let compared = ""; // the runs (and their statuses) the comparison shows: redrawn only when they change
  function renderComparison(runs) {
    const finished = runs.filter((r) => !UNFINISHED.has(r.status));
    if (finished.length < 2) {
      compared = "";
      clear(compareBody, h("p", { class: "empty" }, "Two finished runs (the same eval on two models) are compared here."));
      return;
    }
    const [a, b] = picked && picked.every((id) => finished.some((r) => r.id === id)) ? picked : defaultPair(finished, markedRun);
    const key = `${a}|${b}|${finished.map((r) => r.id + r.status).join()}`;
    if (key === compared) return;
    compared = key;
    const options = finished.map((r) => [r.id, runLabel(r)]);
    const first = select(options, a, { name: "run-a" });
    const second = select(options, b, { name: "run-b" });
    const result = h("div", { "aria-live": "polite" }, h("p", { class: "checking" }, "Reading their output items…"));
    const change = () => { picked = [first.value, second.value]; compared = ""; renderComparison(runs); };
    first.addEventListener("change", change);
    second.addEventListener("change", change);
    clear(compareBody, h("div", { class: "toolbar" }, field("Run A", first), field("Run B", second)), result);
    const byId = Object.fromEntries(finished.map((r) => [r.id, r]));
    compare(evalId, byId[a], byId[b]).then((node) => { if (!stopped && compared === key) clear(result, node); })
      .catch((error) => { if (!stopped) clear(result, errorBox(error)); });
  }

  load();
  return () => { stopped = true; clearTimeout(timer); };
}

async function allRuns(evalId) {
  const runs = [];
  let after;
  for (;;) {
    const page = await api(`/v1/evals/${evalId}/runs`, { query: { limit: 100, after, order: "desc" } });
    runs.push(...page.data);
    if (!page.has_more || runs.length >= 500) return runs;
    after = page.data.at(-1).id;
  }
}

function runLabel(run) {
  return `${run.name || run.id} · ${run.model || "given samples"}`;
}

// The run the report_url named and the newest other run on another model (else the newest other run).
function defaultPair(runs, marked) {
  const a = runs.find((r) => r.id === marked) || runs[0];
  const b = runs.find((r) => r.id !== a.id && r.model !== a.model) || runs.find((r) => r.id !== a.id);
  return [a.id, b.id];
}

function rate(passed, total) {
  return total ? `${Math.round((100 * passed) / total)}%` : "";
}

function runsTable(runs, criteria, markedRun) {
  return h("div", { class: "table-wrap" }, h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Model", "Status", "Pass rate", "Passed", "Failed", "Errored", "Total",
      ...criteria.map((c) => `${c} passed`), "Tokens", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, runs.map((run) => {
      const counts = run.result_counts;
      const byCriterion = Object.fromEntries(run.per_testing_criteria_results.map((c) => [c.testing_criteria, c]));
      const tokens = run.per_model_usage.reduce((sum, u) => sum + u.total_tokens, 0);
      const graded = counts.passed + counts.failed + counts.errored;
      return h("tr", { dataset: { run: run.id }, class: run.id === markedRun ? "marked" : null,
        "aria-current": run.id === markedRun ? "true" : null },
        h("td", {}, h("span", { title: run.id }, run.name || run.id)),
        h("td", { class: "mono" }, run.model || "given samples"),
        h("td", {}, statusBadge(run.status), run.error && run.error.message ? h("div", { class: "hint" }, run.error.message) : null),
        h("td", {}, graded ? h("div", { class: "progress-cell" },
          h("meter", { min: 0, max: graded, value: counts.passed, "aria-label": `${counts.passed} of ${graded} passed` }),
          h("strong", {}, rate(counts.passed, graded))) : ""),
        h("td", {}, counts.passed), h("td", {}, counts.failed), h("td", {}, counts.errored), h("td", {}, counts.total),
        criteria.map((name) => {
          const c = byCriterion[name];
          return h("td", {}, c ? `${c.passed}/${c.passed + c.failed} (${rate(c.passed, c.passed + c.failed)})` : "");
        }),
        h("td", {}, tokens || ""),
        h("td", {}, when(run.created_at)));
    }))));
}

// Comparing two runs' output items, matched by the data source row they graded.
async function outputItems(evalId, runId) {
  const items = [];
  let after;
  for (;;) {
    const page = await api(`/v1/evals/${evalId}/runs/${runId}/output_items`, { query: { limit: 100, after } });
    items.push(...page.data);
    if (!page.has_more || items.length >= MAX_ITEMS) return items;
    after = page.data.at(-1).id;
  }
}

async function compare(evalId, runA, runB) {
  const [itemsA, itemsB] = await Promise.all([outputItems(evalId, runA.id), outputItems(evalId, runB.id)]);
  const inB = new Map(itemsB.map((item) => [item.datasource_item_id, item]));
  const pairs = itemsA.filter((item) => inB.has(item.datasource_item_id)).map((item) => [item, inB.get(item.datasource_item_id)])
    .sort((x, y) => x[0].datasource_item_id - y[0].datasource_item_id);
  const tally = { same: 0, onlyA: 0, onlyB: 0, other: 0 };
  const differing = [];
  for (const [a, b] of pairs) {
    if (a.status === b.status) tally.same += 1;
    else {
      differing.push([a, b]);
      if (a.status === "pass") tally.onlyA += 1;
      else if (b.status === "pass") tally.onlyB += 1;
      else tally.other += 1;
    }
  }
  const capped = itemsA.length >= MAX_ITEMS || itemsB.length >= MAX_ITEMS;
  const summary = h("p", { class: "compare-summary" },
    `${pairs.length} items in both runs: ${tally.same} graded the same, ${tally.onlyA} pass only in A, `
    + `${tally.onlyB} pass only in B` + (tally.other ? `, ${tally.other} differ otherwise (an error)` : "") + "."
    + (capped ? ` Only the first ${MAX_ITEMS} items of each run are compared.` : ""));
  if (!differing.length) return h("div", {}, summary);
  return h("div", {}, summary, h("div", { class: "table-wrap" }, h("table", { class: "differing" },
    h("thead", {}, h("tr", {}, ["Item", "Input", `A: ${runLabel(runA)}`, `B: ${runLabel(runB)}`]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, differing.map(([a, b]) => h("tr", { dataset: { item: a.datasource_item_id } },
      h("td", {}, `#${a.datasource_item_id}`),
      h("td", {}, h("pre", { class: "item" }, JSON.stringify(a.datasource_item, null, 1))),
      answerCell(a), answerCell(b)))))));
}

function answerCell(item) {
  const sample = item.sample || {};
  const text = (sample.output || []).map((m) => m.content || "").join("\n");
  return h("td", {}, statusBadge(item.status),
    h("div", { class: "content answer" }, text || (sample.error && sample.error.message) || ""),
    h("ul", { class: "grades" }, (item.results || []).map((r) =>
      h("li", {}, r.error ? `${r.name}: error: ${r.error}` : `${r.name}: ${r.passed ? "passed" : "not passed"} (score ${r.score})`))));
}
