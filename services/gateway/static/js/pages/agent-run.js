// One agent run as the "Ask the agent" panel shows it: its task's event stream (SSE), filtered
// to this run, fills the panel as the run goes: the status, the passages retrieval returned,
// the answer token by token, and the outcome. The stream replays the task's history before it
// follows, so a run that moved (or ended) before the stream opened is shown all the same.

import { el, shortId } from "../dom.js";
import { LiveStream, TASK_EVENT_TYPES } from "../live.js";

/** The retrieved passages: title, score and text of each. */
export function sourceList(sources) {
  return el("ul", { class: "sources agent-sources" }, ...sources.map((s, i) => el("li", {},
    el("div", {}, el("strong", {}, `[${i + 1}] ${s.title || s.doc_id}`),
      el("span", { class: "muted" }, ` score ${Number(s.score).toFixed(3)}`)),
    el("div", { class: "src-text" }, s.text))));
}

/** Renders run `run` (the 202 body of POST /run-agents) of task `taskId` into `out`, live.
 * `done` resolves with the run's last status once it has ended (or the view was closed). */
export class AgentRunView {
  constructor(out, taskId, run) {
    Object.assign(this, { out, taskId, runId: run.run_id });
    this.text = "";
    this.status = el("p", { class: "muted agent-status", "aria-live": "polite" });
    this.answer = el("div", { class: "answer agent-answer", "aria-busy": "true" });
    this.sourcesTitle = el("h4", {}, "Retrieved text");
    this.sources = sourceList([]);
    this.outcome = el("div", { class: "agent-outcome", role: "alert" });
    out.replaceChildren(this.status, el("h4", {}, "Answer"), this.answer,
      this.sourcesTitle, this.sources, this.outcome);
    this.setStatus("queued");
    this.done = new Promise((resolve) => { this.resolve = resolve; });
    this.stream = new LiveStream(`agent-${taskId}`, `/events/tasks/${taskId}`, TASK_EVENT_TYPES,
      (ev) => this.onEvent(ev), (msg) => msg.lastEventId);
  }

  setStatus(status) {
    this.last = status;
    this.status.replaceChildren("Task ", el("a", { href: `#/tasks/${this.taskId}` }, `#${this.taskId}`),
      `, run ${shortId(this.runId)}: `, el("span", { class: `status status-${status}` }, status));
  }

  showSources(chunks) {
    this.sourcesTitle.textContent = `Retrieved text (${chunks.length})`;
    const list = sourceList(chunks);
    this.sources.replaceWith(list);
    this.sources = list;
  }

  onEvent(ev) {
    if (ev.run_id !== this.runId) return; // the task's other runs
    switch (ev.type) {
      case "run.started": this.setStatus("running"); break;
      case "retrieval.done": this.showSources(ev.chunks || []); break;
      case "llm.delta":
        this.text += ev.text;
        this.answer.textContent = this.text;
        break;
      case "run.completed":
        this.answer.textContent = ev.answer;
        if (ev.sources) this.showSources(ev.sources);
        this.end("done");
        break;
      case "run.failed":
      case "run.superseded":
        this.outcome.replaceChildren(el("p", { class: "alert" },
          `The run ${ev.type === "run.failed" ? "failed" : "was superseded"}: ${ev.reason || "no reason given"}`));
        this.end(ev.type === "run.failed" ? "failed" : "superseded");
        break;
      default: break;
    }
  }

  end(status) {
    this.setStatus(status);
    this.close();
  }

  close() {
    this.answer.setAttribute("aria-busy", "false");
    this.stream.close();
    this.resolve(this.last);
  }
}
