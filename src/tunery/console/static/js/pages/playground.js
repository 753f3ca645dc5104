// The playground: chat with any model the organization can use, answers streaming in, with a
// system message, temperature, top_p, max tokens and stop sequences. Compare sends the same
// conversation to two or three models side by side, each with its tokens and time (the guide's
// advice: judge a fine-tuned model against its base on the same prompts). Completions mode is
// for prompt/completion models, with each token's likeliest alternatives.

import { api, listAll, stream } from "../api.js";
import { clear, errorBox, field, h, number } from "../dom.js";

const MAX_PANELS = 3;

export function render(main, params) {
  document.title = "Playground · tunery";
  const state = { models: [], controller: null };
  const mode = params.get("mode") === "completions" ? "completions" : "chat";
  const modes = h("div", { class: "segmented", role: "group", "aria-label": "Mode" },
    [["chat", "Chat and compare"], ["completions", "Completions"]].map(([value, text]) =>
      h("a", { class: "button secondary", href: `#/playground?mode=${value}${params.get("model") ? `&model=${encodeURIComponent(params.get("model"))}` : ""}`,
        "aria-current": value === mode ? "page" : null }, text)));
  const problem = h("div", { "aria-live": "polite" });
  const body = h("div");
  main.append(h("div", { class: "title-row" }, h("h1", {}, "Playground"), modes), problem, body);
  listAll("/v1/models").then((models) => {
    state.models = models.map((m) => m.id);
    (mode === "chat" ? chat : completions)(body, state, params.get("model"), problem);
  }).catch((error) => clear(problem, errorBox(error)));
  return () => { if (state.controller) state.controller.abort(); };
}

function modelSelect(models, chosen, label) {
  const control = h("select", { name: "model" }, models.map((m) => h("option", { value: m, selected: m === chosen }, m)));
  return [control, field(label, control)];
}

function samplingControls() {
  const temperature = h("input", { type: "number", name: "temperature", min: 0, max: 2, step: 0.1, value: "1" });
  const topP = h("input", { type: "number", name: "top_p", min: 0, max: 1, step: 0.05, value: "1" });
  const maxTokens = h("input", { type: "number", name: "max_tokens", min: 1, max: 4096, value: "256" });
  const stop = h("input", { type: "text", name: "stop", autocomplete: "off" });
  const element = h("div", { class: "grid-4" }, field("Temperature", temperature), field("Top p", topP),
    field("Maximum tokens", maxTokens), field("Stop sequences", stop, "Up to 4, separated by |"));
  return {
    element,
    values() {
      const values = { temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value) };
      const stops = stop.value.split("|").filter((s) => s.length).slice(0, 4);
      if (stops.length) values.stop = stops;
      return values;
    },
  };
}

// Chat with one model, or the same conversation with two or three side by side.
function chat(body, state, chosen, problem) {
  const first = chosen && state.models.includes(chosen) ? chosen : state.models.find((m) => !m.startsWith("ft:")) || state.models[0];
  const base = first.startsWith("ft:") ? first.split(":")[1] : null; // ft:BASE:ORG:SUFFIX:ID
  const system = h("textarea", { name: "system", rows: 2, placeholder: "You are a helpful assistant." });
  const sampling = samplingControls();
  const panels = h("div", { class: "panels" });
  const input = h("textarea", { name: "message", rows: 3, required: true, placeholder: "Write a message; Enter sends, Shift+Enter is a new line." });
  const send = h("button", { type: "submit" }, "Send");
  const add = h("button", { type: "button", class: "secondary" }, "Compare with another model");
  const reset = h("button", { type: "button", class: "secondary" }, "Clear the conversation");
  const form = h("form", { class: "composer", method: "post", novalidate: true }, field("Message", input), h("div", { class: "actions" }, send, add, reset));
  const list = [];

  function addPanel(model) {
    const [control, labelled] = modelSelect(state.models, model, `Model ${list.length + 1}`);
    const transcript = h("ol", { class: "transcript", "aria-live": "polite" });
    const stats = h("p", { class: "stats" });
    const remove = h("button", { type: "button", class: "secondary small" }, "Remove");
    const element = h("section", { class: "panel card", "aria-label": `Conversation ${list.length + 1}` },
      h("div", { class: "panel-head" }, labelled, remove), transcript, stats);
    const panel = { control, transcript, stats, element, history: [] };
    remove.addEventListener("click", () => {
      list.splice(list.indexOf(panel), 1);
      element.remove();
      refreshButtons();
    });
    list.push(panel);
    panels.append(element);
    refreshButtons();
    return panel;
  }

  function refreshButtons() {
    add.disabled = list.length >= MAX_PANELS;
    list.forEach((p) => { p.element.querySelector("button").hidden = list.length === 1; });
    panels.dataset.count = String(list.length);
  }

  async function ask(panel, messages, sampling) {
    const said = h("div", { class: "content" });
    const item = h("li", { class: "assistant" }, h("span", { class: "role" }, panel.control.value), said);
    panel.transcript.append(item);
    const started = performance.now();
    let text = "";
    let usage = null;
    try {
      await stream("/v1/chat/completions", { model: panel.control.value, messages, ...sampling, stream_options: { include_usage: true } },
        (chunk) => {
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            text += delta.content;
            said.textContent = text;
          }
        }, state.controller.signal);
      const seconds = (performance.now() - started) / 1000;
      panel.stats.textContent = `${usage ? usage.completion_tokens : "?"} tokens in ${seconds.toFixed(1)} s`;
      panel.history.push({ role: "assistant", content: text });
    } catch (error) {
      if (error.name === "AbortError") return;
      item.append(errorBox(error));
      panel.history.pop(); // the question that got no answer
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message || send.disabled) return;
    clear(problem);
    input.value = "";
    send.disabled = true;
    state.controller = new AbortController();
    const values = sampling.values();
    await Promise.all(list.map((panel) => {
      panel.history.push({ role: "user", content: message });
      panel.transcript.append(h("li", { class: "user" }, h("span", { class: "role" }, "You"), h("div", { class: "content" }, message)));
      const messages = [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), ...panel.history];
      return ask(panel, messages, values);
    }));
    send.disabled = false;
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  add.addEventListener("click", () => {
    const used = new Set(list.map((p) => p.control.value));
    addPanel(state.models.find((m) => !used.has(m)) || state.models[0]);
  });
  reset.addEventListener("click", () => list.forEach((p) => { p.history = []; clear(p.transcript); p.stats.textContent = ""; }));

  body.append(h("section", { class: "card" }, field("System message", system), sampling.element), panels, form);
  addPanel(first);
  if (base && state.models.includes(base)) {
    // Coming from a fine-tuned model: its base beside it, as the guide compares them.
    addPanel(base);
  }
}

// Legacy completions with the likeliest alternatives of each token.
function completions(body, state, chosen, problem) {
  const [model, labelled] = modelSelect(state.models, chosen && state.models.includes(chosen) ? chosen : state.models[0], "Model");
  const prompt = h("textarea", { name: "prompt", rows: 5, required: true });
  const sampling = samplingControls();
  const logprobs = h("input", { type: "number", name: "logprobs", min: 0, max: 5, value: "5" });
  const go = h("button", { type: "submit" }, "Complete");
  const output = h("div", { class: "completion", "aria-live": "polite" });
  const form = h("form", { class: "card", method: "post", novalidate: true }, labelled, field("Prompt", prompt), sampling.element,
    field("Alternatives per token", logprobs, "0 to 5 (logprobs)"), go);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(problem);
    go.disabled = true;
    const started = performance.now();
    try {
      const values = sampling.values();
      const answer = await api("/v1/completions", { method: "POST", json: {
        model: model.value, prompt: prompt.value, ...values, ...(Number(logprobs.value) ? { logprobs: Number(logprobs.value) } : {}),
      } });
      showCompletion(output, answer, (performance.now() - started) / 1000);
    } catch (error) {
      clear(output, errorBox(error));
    }
    go.disabled = false;
  });
  body.append(form, output);
}

function showCompletion(output, answer, seconds) {
  const choice = answer.choices[0];
  const lp = choice.logprobs;
  const tokens = lp ? lp.tokens.map((token, i) => {
    const top = Object.entries((lp.top_logprobs || [])[i] || {}).sort((a, b) => b[1] - a[1]);
    const title = top.map(([t, v]) => `${JSON.stringify(t)} ${Math.exp(v).toLocaleString(undefined, { style: "percent", maximumFractionDigits: 1 })}`).join("\n");
    return h("span", { class: "token", tabindex: "0", title, "aria-describedby": `alternatives-${i}` }, token);
  }) : [choice.text];
  clear(output,
    h("h2", {}, "Completion"),
    h("p", { class: "stats" }, `${answer.usage.completion_tokens} tokens in ${seconds.toFixed(1)} s · finish reason: ${choice.finish_reason}`),
    h("pre", { class: "completion-text" }, tokens),
    lp ? h("div", { class: "table-wrap" }, h("table", { class: "logprobs" },
      h("caption", {}, "Each token and its likeliest alternatives"),
      h("thead", {}, h("tr", {}, ["Token", "Log-probability", "Alternatives"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, lp.tokens.map((token, i) => h("tr", { id: `alternatives-${i}` },
        h("td", { class: "mono" }, JSON.stringify(token)), h("td", {}, number(lp.token_logprobs[i])),
        h("td", {}, Object.entries((lp.top_logprobs || [])[i] || {}).sort((a, b) => b[1] - a[1])
          .map(([t, v]) => `${JSON.stringify(t)} ${number(v, 3)}`).join(", "))))))) : null);
}
