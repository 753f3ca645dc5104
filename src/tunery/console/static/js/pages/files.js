// Files: every file of the organization, a preview of a training file's first examples shown as
// conversations, download, and delete (after a confirmation).

import { api, fileContent, listAll } from "../api.js";
import { clear, confirmDialog, download, errorBox, h, when } from "../dom.js";

const PREVIEW_BYTES = 64 * 1024; // read from the file's start; only whole lines are shown
const PREVIEW_EXAMPLES = 5;

export function render(main) {
  document.title = "Files · tunery";
  const problem = h("div", { "aria-live": "polite" });
  const body = h("div");
  const preview = h("section", { class: "preview", "aria-live": "polite" });
  main.append(h("h1", {}, "Files"), problem, body, preview);

  async function load() {
    try {
      const files = await listAll("/v1/files", {}, 10000);
      clear(body, files.length ? h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, ["File", "Name", "Purpose", "Bytes", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, files.map((f) => h("tr", { dataset: { file: f.id } },
          h("td", { class: "mono" }, f.id), h("td", {}, f.filename), h("td", {}, f.purpose),
          h("td", {}, f.bytes.toLocaleString()), h("td", {}, when(f.created_at)),
          h("td", { class: "row-actions" },
            f.purpose === "fine-tune" ? h("button", { type: "button", class: "secondary small", onclick: () => show(f) }, "Preview") : null,
            h("button", { type: "button", class: "secondary small", onclick: () => save(f) }, "Download"),
            h("button", { type: "button", class: "danger small", onclick: () => remove(f) }, "Delete")))))))
        : h("p", { class: "empty" }, "No files yet."));
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  async function show(file) {
    try {
      const text = await (await fileContent(file.id, [0, PREVIEW_BYTES - 1])).text();
      const lines = text.split("\n");
      if (file.bytes > PREVIEW_BYTES) lines.pop(); // cut short: the last line may be partial
      const examples = lines.filter((l) => l.trim()).slice(0, PREVIEW_EXAMPLES);
      clear(preview, h("h2", {}, `First examples of ${file.filename}`), examples.map((line, i) => exampleView(line, i + 1)));
      preview.scrollIntoView({ behavior: "smooth", block: "start" });
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  async function save(file) {
    try {
      download(await fileContent(file.id), file.filename);
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  async function remove(file) {
    if (!(await confirmDialog(`Delete ${file.filename} (${file.id})? Jobs already trained on it keep their models.`, "Delete file"))) return;
    try {
      await api(`/v1/files/${file.id}`, { method: "DELETE" });
      clear(preview);
      load();
    } catch (error) {
      clear(problem, errorBox(error));
    }
  }

  load();
}

// One line of a training file as a conversation (chat, preference) or a prompt and completion.
export function exampleView(line, number) {
  let example;
  try {
    example = JSON.parse(line);
  } catch {
    return h("article", { class: "example card" }, h("h3", {}, `Example ${number}`), h("pre", {}, line));
  }
  const turn = (role, content, extra) => h("li", { class: `turn ${role}` }, h("span", { class: "role" }, role),
    h("div", { class: "content" }, typeof content === "string" ? content : JSON.stringify(content)), extra);
  const messages = (list) => h("ol", { class: "conversation" }, (list || []).map((m) => turn(m.role || "?", m.content ?? "",
    m.tool_calls || m.function_call ? h("pre", { class: "call" }, JSON.stringify(m.tool_calls || m.function_call)) : null)));
  let content;
  if (Array.isArray(example.messages)) content = messages(example.messages);
  else if (example.input) {
    content = [messages(example.input.messages), h("h4", {}, "Preferred"), messages(example.preferred_output),
      h("h4", {}, "Not preferred"), messages(example.non_preferred_output)];
  } else {
    content = h("ol", { class: "conversation" }, turn("prompt", example.prompt ?? ""), turn("completion", example.completion ?? ""));
  }
  return h("article", { class: "example card" }, h("h3", {}, `Example ${number}`), content);
}
