// The console's only way to the server: the public /v1 API (and tunery's /tunery endpoints) with
// the signed-in organization's key in the Authorization header. The key lives in sessionStorage
// (this tab), or localStorage when the person asked to be remembered; never in a URL.

const KEY = "tunery.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

export function signIn(key, remember) {
  signOut();
  (remember ? localStorage : sessionStorage).setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The server answered ${status}.`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${apiKey()}`, ...extra };
}

async function fail(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("tunery:unauthorized"));
  throw new ApiError(response.status, body);
}

// JSON in, JSON out: api("/v1/models"), api("/v1/fine_tuning/jobs", {method: "POST", json: {...}}).
export async function api(path, { method = "GET", json, form, query, signal } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const options = { method, headers: headers(), signal };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  } else if (form !== undefined) {
    options.body = form;
  }
  const response = await fetch(url, options);
  if (!response.ok) await fail(response);
  return response.json();
}

// Raw bytes of a file's content (a range of them when `range` is given as [start, end]).
export async function fileContent(fileId, range) {
  const extra = range ? { Range: `bytes=${range[0]}-${range[1]}` } : {};
  const response = await fetch(`/v1/files/${encodeURIComponent(fileId)}/content`, { headers: headers(extra) });
  if (!response.ok && response.status !== 206) await fail(response);
  return response.blob();
}

// A fine-tuned model's (or checkpoint's) weights as a zip, { blob, filename }: format hf (merged),
// adapter (PEFT LoRA) or gguf (with an Ollama Modelfile). A model's first export merges its
// weights on the server and can take a while.
export async function exportModel(modelId, format) {
  const path = modelId.split("/").map(encodeURIComponent).join("/");
  const response = await fetch(`/tunery/models/${path}/export?format=${encodeURIComponent(format)}`, { headers: headers() });
  if (!response.ok) await fail(response);
  const fallback = `${modelId.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^_+|_+$/g, "")}-${format}.zip`;
  return { blob: await response.blob(), filename: attachmentName(response.headers.get("Content-Disposition")) || fallback };
}

// The file name a Content-Disposition header gives (filename*=UTF-8'' first, then filename=).
function attachmentName(header) {
  if (!header) return null;
  const encoded = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (encoded) {
    try { return decodeURIComponent(encoded[1].trim()); } catch { /* malformed: try the plain one */ }
  }
  const plain = /filename\s*=\s*(?:"([^"]*)"|([^;]+))/i.exec(header);
  return plain ? (plain[1] ?? plain[2]).trim() || null : null;
}

// Every item of a list endpoint, following `after` while has_more.
export async function listAll(path, query = {}, pageSize = 100) {
  const items = [];
  let after;
  for (;;) {
    const page = await api(path, { query: { ...query, limit: pageSize, after } });
    items.push(...page.data);
    if (!page.has_more || page.data.length === 0) return items;
    after = page.data[page.data.length - 1].id;
  }
}

// A streamed chat or completion request: calls onChunk(chunk) for each server-sent event's JSON.
export async function stream(path, body, onChunk, signal) {
  const response = await fetch(path, {
    method: "POST", signal,
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!response.ok) await fail(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await readEvents(reader, onChunk);
  } finally {
    reader.cancel().catch(() => {}); // ended early (an error event): the server stops generating
  }
}

async function readEvents(reader, onChunk) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const isError = /^event: error$/m.test(event);
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("\n");
      if (!data || data === "[DONE]") continue;
      const parsed = JSON.parse(data);
      if (isError || parsed.error) throw new ApiError(500, parsed);
      onChunk(parsed);
    }
  }
}
