// buildmaster's pages: JSON-RPC actions (with the session's CSRF token) and
// a build's live log over Server-Sent Events. No build step: this file is
// served as it is.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

// The event stream of the build this page follows, if any.
let live = null;

function say(text) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.hidden = false;
}

async function call(path, method, params) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
  });
  // JSON-RPC answers in JSON; a refusal before it (a login, a CSRF token,
  // a full server) in plain text.
  const text = await response.text();
  let answer;
  try { answer = JSON.parse(text); } catch (_) { answer = { error: { message: text.trim() } }; }
  if (answer.error) { throw new Error(answer.error.message || `HTTP ${response.status}`); }
  return answer.result;
}

// After a force or a rebuild, go to the build once its request has one.
async function followRequest(brid) {
  for (let i = 0; i < 120; i++) {
    const found = await (await fetch(`/api/v2/builds?buildrequestid=${brid}`)).json();
    if (found.builds && found.builds.length) { location.href = `/builds/${found.builds[0].buildid}`; return; }
    await new Promise((done) => setTimeout(done, 500));
  }
}

function firstRequest(result) {
  const requests = Array.isArray(result) ? Object.values(result[1] || {}) : [];
  return requests[0];
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.rpc");
  if (!form) { return; }
  event.preventDefault();
  const params = {};
  for (const field of form.elements) {
    if (!field.name) { continue; }
    if (field.type === "checkbox") { params[field.name] = field.checked; }
    else if (field.multiple) { params[field.name] = [...field.selectedOptions].map((o) => o.value); }
    else { params[field.name] = field.value; }
  }
  if (form.dataset.builder) { params.builderNames = [form.dataset.builder]; }
  try {
    const result = await call(form.dataset.path, form.dataset.method, params);
    say("Build requested.");
    const brid = firstRequest(result);
    if (brid) { await followRequest(brid); }
  } catch (error) { say(`Refused: ${error.message}`); }
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.rpc-button");
  if (!button) { return; }
  const method = button.dataset.method;
  const params = method === "stop" ? { reason: "stopped from the web UI" } : {};
  try {
    const result = await call(button.dataset.path, method, params);
    say(`${method}: done.`);
    const brid = firstRequest(result);
    if (brid) { await followRequest(brid); }
    // A followed build reloads the page itself when it ends.
    else if (!live) { setTimeout(() => location.reload(), 800); }
  } catch (error) { say(`Refused: ${error.message}`); }
});

// A log keeps as many lines as the page first showed at most (the raw text
// has them all): the oldest go, and the note above it says how many.
function trim(pre) {
  const spans = pre.querySelectorAll("span");
  const keep = Number(pre.dataset.keep) || 1000;
  const extra = spans.length - keep;
  if (extra <= 0) { return; }
  for (const span of [...spans].slice(0, extra)) {
    if (span.nextSibling && span.nextSibling.nodeType === Node.TEXT_NODE) { span.nextSibling.remove(); }
    span.remove();
  }
  let note = pre.previousElementSibling;
  if (!note || !note.classList.contains("earlier")) {
    note = document.createElement("p");
    note.className = "earlier";
    pre.before(note);
  }
  note.textContent = `${Number(pre.dataset.lines) - keep} earlier lines not shown: the raw text has them.`;
}

// A running build: its logs grow as the master stores them. When the stream
// breaks (a restart, a proxy's timeout), it is followed again from the lines
// the page has, not from those it had when it loaded.
function follow() {
  const build = document.getElementById("build");
  if (!build || build.dataset.complete === "true") { return; }
  const known = [...document.querySelectorAll("pre.log")].map((pre) => `${pre.dataset.logid}:${pre.dataset.lines}`);
  const source = new EventSource(`/ui/events/builds/${build.dataset.buildid}?logs=${known.join(",")}`);
  live = source;
  source.addEventListener("log", (event) => {
    const data = JSON.parse(event.data);
    const pre = document.querySelector(`pre.log[data-logid="${data.logid}"]`);
    if (!pre) { location.reload(); return; }
    for (const line of data.lines) {
      const span = document.createElement("span");
      span.className = line.stream;
      span.textContent = line.text;
      pre.append(span, "\n");
    }
    pre.dataset.lines = data.total;
    trim(pre);
  });
  source.addEventListener("steps", () => { source.close(); location.reload(); });
  source.addEventListener("done", () => { source.close(); location.reload(); });
  source.onerror = () => { source.close(); live = null; setTimeout(follow, 2000); };
}
document.addEventListener("DOMContentLoaded", follow);
