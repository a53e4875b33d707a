// #/query (and #/query/N for task N): "Ask the agent". A question runs the agent with retrieval
// on a new task created for it, or on the task given; the answer streams in as the run's events
// arrive (AgentRunView), with the passages retrieval returned.

import { api } from "../api.js";
import { $, el } from "../dom.js";
import { TASK_TITLE_MAX } from "../limits.js";
import { mount, onLeave } from "../router.js";
import { AgentRunView } from "./agent-run.js";

function conflictMessage(err) {
  const e = err.body?.error || {};
  return el("p", { class: "alert" }, el("strong", {}, "This task is already being run"),
    e.holder_run_id ? [" by run ", el("code", {}, e.holder_run_id)] : "",
    ". Ask again when it has finished, or leave the task empty to ask on a new one.");
}

export function renderQuery(taskId = null) {
  mount("#tpl-query");
  document.title = "Ask the agent · rag-poc";
  const out = $("#agent-response");
  const btn = $("#agent-submit");
  const taskInput = $("#agent-task");
  if (taskId) taskInput.value = String(taskId);
  const ctrl = new AbortController();
  let view = null;
  onLeave(() => { ctrl.abort(); view?.close(); });
  $("#agent-query").focus();

  $("#agent-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const query = $("#agent-query").value.trim();
    if (!query) return;
    view?.close();
    view = null;
    btn.disabled = true;
    out.setAttribute("aria-busy", "true");
    out.replaceChildren(el("p", {}, el("progress", { "aria-label": "Starting the run" }), " Starting the run…"));
    try {
      let id = Number(taskInput.value) || null;
      if (!id) {
        const title = query.slice(0, TASK_TITLE_MAX);
        id = (await api("/api/tasks", { method: "POST", body: { title }, signal: ctrl.signal })).id;
      }
      const run = await api("/run-agents", { method: "POST", body: { id, query }, signal: ctrl.signal });
      view = new AgentRunView(out, id, run);
      btn.disabled = false; // another question may go to another task meanwhile
      await view.done;
    } catch (err) {
      if (err.name === "AbortError") return;
      out.replaceChildren(err.status === 409 ? conflictMessage(err)
        : el("p", { class: "alert" }, `The question could not be asked: ${err.message}`));
    } finally {
      btn.disabled = false;
      out.setAttribute("aria-busy", "false");
    }
  });
}
