// #/query: ask a question; a task is created for it and the agent runs with retrieval, waiting
// for the answer (POST /run-agents?wait).

import { api } from "../api.js";
import { $, el } from "../dom.js";
import { QUERY_WAIT_S, TASK_TITLE_MAX } from "../limits.js";
import { mount, onLeave } from "../router.js";

function sourceList(sources) {
  return el("ul", { class: "sources agent-sources" }, ...sources.map((s, i) => el("li", {},
    el("div", {}, el("strong", {}, `[${i + 1}] ${s.title || s.doc_id}`),
      el("span", { class: "muted" }, ` score ${Number(s.score).toFixed(3)}`)),
    el("div", { class: "src-text" }, s.text))));
}

export function renderQuery() {
  mount("#tpl-query");
  document.title = "Agent query · rag-poc";
  const out = $("#agent-response");
  const btn = $("#agent-submit");
  const ctrl = new AbortController();
  onLeave(() => ctrl.abort());
  $("#agent-query").focus();
  $("#agent-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const query = $("#agent-query").value.trim();
    if (!query) return;
    btn.disabled = true;
    out.setAttribute("aria-busy", "true");
    out.replaceChildren(el("p", {}, el("progress", { "aria-label": "Agent running" }), " Running the agent…"));
    try {
      const title = query.slice(0, TASK_TITLE_MAX);
      const task = await api("/api/tasks", { method: "POST", body: { title }, signal: ctrl.signal });
      const res = await api(`/run-agents?wait=${QUERY_WAIT_S}`, { method: "POST", body: { id: task.id, query }, signal: ctrl.signal });
      const taskLink = el("p", { class: "muted" }, "Task ", el("a", { href: `#/tasks/${task.id}` }, `#${task.id}`),
        res.status ? ` — status ${res.status}` : "");
      if (res.answer !== undefined && res.answer !== null && res.status !== "failed") {
        const sources = res.sources || [];
        out.replaceChildren(
          el("h4", {}, "Answer"), el("div", { class: "answer agent-answer" }, res.answer),
          el("h4", {}, `Retrieved text (${sources.length})`), sourceList(sources), taskLink);
      } else {
        out.replaceChildren(el("p", { class: "alert" },
          res.status === "failed" ? `The run failed: ${res.error || res.reason || "unknown reason"}`
            : `The run has not finished yet (status ${res.status}); follow it on the task page.`), taskLink);
      }
    } catch (err) {
      if (err.name === "AbortError") return;
      out.replaceChildren(el("p", { class: "alert" }, `The query failed: ${err.message}`));
    } finally {
      btn.disabled = false;
      out.setAttribute("aria-busy", "false");
    }
  });
}
