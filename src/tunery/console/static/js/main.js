// The console's frame: sign-in, navigation and a hash router (#/jobs, #/jobs/new, #/jobs/ID,
// #/playground, #/files, #/models, #/evals, #/evals/ID). Each page renders into <main> and returns what stops it
// (timers, charts) when the person leaves it.

import { api, apiKey, ApiError, signIn, signOut } from "./api.js";
import { clear, errorBox, field, h } from "./dom.js";
import * as create from "./pages/create.js";
import * as evals from "./pages/evals.js";
import * as files from "./pages/files.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as models from "./pages/models.js";
import * as playground from "./pages/playground.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let leave = null;
let signingIn = false; // a refused key while signing in is the sign-in form's to say

const NAV = [["#/jobs", "Jobs"], ["#/jobs/new", "New job"], ["#/playground", "Playground"], ["#/files", "Files"],
  ["#/models", "Models"], ["#/evals", "Evals"]];

function route() {
  const [path, search] = (window.location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "jobs" && parts[1] === "new") return [create, params, "#/jobs/new"];
  if (parts[0] === "jobs" && parts[1]) return [job, new URLSearchParams({ ...Object.fromEntries(params), id: parts[1] }), "#/jobs"];
  if (parts[0] === "playground") return [playground, params, "#/playground"];
  if (parts[0] === "files") return [files, params, "#/files"];
  if (parts[0] === "models") return [models, params, "#/models"];
  if (parts[0] === "evals") return [evals, new URLSearchParams({ ...Object.fromEntries(params), id: parts[1] || "" }), "#/evals"];
  return [jobs, params, "#/jobs"];
}

function show() {
  if (leave) leave();
  leave = null;
  if (!apiKey()) {
    renderNav(null);
    signInPage();
    return;
  }
  const [page, params, current] = route();
  renderNav(current);
  main.replaceChildren();
  leave = page.render(main, params) || null;
  main.focus({ preventScroll: true });
}

function renderNav(current) {
  clear(nav);
  if (current === null) return;
  nav.append(
    h("ul", {}, NAV.map(([href, text]) => h("li", {}, h("a", { href, "aria-current": href === current ? "page" : null }, text)))),
    h("button", { type: "button", class: "secondary small", onclick: () => { signOut(); show(); } }, "Sign out"));
}

function signInPage(message) {
  document.title = "Sign in · tunery";
  const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const remember = h("input", { type: "checkbox", name: "remember", id: "remember" });
  const problem = h("div", { "aria-live": "polite" }, message ? errorBox(new Error(message)) : null);
  const form = h("form", { class: "card signin", method: "post", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "Use an API key of your organization: the one ", h("code", {}, "tunery serve"),
      " printed, or one from ", h("code", {}, "tunery keys create"), "."),
    field("API key", key),
    h("div", { class: "field inline" }, remember, h("label", { for: "remember" }, "Remember me on this device")),
    problem,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault(); // the key stays in this page: it is never sent as a form, nor put in a URL
    const value = key.value.trim();
    if (!value) {
      clear(problem, errorBox(new Error("Enter an API key.")));
      return;
    }
    signIn(value, remember.checked);
    signingIn = true;
    try {
      await api("/v1/models");
      if (!window.location.hash) window.location.hash = "#/jobs";
      show();
    } catch (error) {
      signOut();
      clear(problem, errorBox(error instanceof ApiError && error.status === 401
        ? new Error("This key is not valid on this server.") : error));
    } finally {
      signingIn = false;
    }
  });
  clear(main, form);
  key.focus();
}

window.addEventListener("tunery:unauthorized", () => {
  if (signingIn) return;
  signOut();
  if (leave) leave();
  leave = null;
  renderNav(null);
  signInPage("Your key is no longer accepted; sign in again.");
});
window.addEventListener("hashchange", show);
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault(); // the hash is the router's
  main.focus();
});
show();
