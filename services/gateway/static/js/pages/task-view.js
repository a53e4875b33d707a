// How the task page shows one point of the task: the task as the server projected it there,
// with the answer's tokens and the retrieved sources taken from the run's own events.

import { $, el, fmtTime } from "../dom.js";
import { isAfter } from "../entries.js";

const upToEntry = (list, upTo) => (upTo === null ? list : list.filter((x) => !isAfter(x.entry, upTo)));

/** The streamed output of each run, from its events: llm.delta tokens, and the chunks of
 * retrieval.done and run.completed. `upTo` (an entry id, or null for all) bounds what counts. */
export class RunOutputs {
  constructor() {
    this.tokens = new Map();  // run id -> [{entry, text}]
    this.sources = new Map(); // run id -> [{entry, chunks}]
    this.newestToken = null;  // {entry, run} of the newest llm.delta
  }

  add(ev, entry) {
    const push = (map, value) => {
      if (!map.has(ev.run_id)) map.set(ev.run_id, []);
      map.get(ev.run_id).push({ entry, ...value });
    };
    if (ev.type === "llm.delta") {
      push(this.tokens, { text: ev.text });
      this.newestToken = { entry, run: ev.run_id };
    } else if (ev.type === "retrieval.done") push(this.sources, { chunks: ev.chunks || [] });
    else if (ev.type === "run.completed") push(this.sources, { chunks: ev.sources || [] });
  }

  text(run, upTo = null) {
    return upToEntry(this.tokens.get(run) || [], upTo).map((t) => t.text).join("");
  }

  chunks(run, upTo = null) {
    const list = upToEntry(this.sources.get(run) || [], upTo);
    return list.length ? list[list.length - 1].chunks : [];
  }
}

/** Fills the task panel, the answer and the sources. */
export function showTask(task, { answer, sources }) {
  $("#task-heading").textContent = `Task ${task.id}: ${task.title}`;
  $("#task-description-view").textContent = task.description || "—";
  $("#task-created").textContent = fmtTime(task.created_at);
  $("#task-runs").textContent = String(task.runs || 0);
  $("#task-last-run").textContent = task.last_run_id || "—";
  const badge = $("#task-status");
  badge.className = `status status-${task.status}`;
  if (badge.textContent !== task.status) badge.textContent = task.status;
  const out = $("#task-answer");
  if (out.textContent !== answer) out.textContent = answer;
  out.setAttribute("aria-busy", String(task.status === "running"));
  const err = $("#task-error");
  err.hidden = !task.last_error || task.status !== "failed";
  err.textContent = task.last_error || "";
  $("#task-sources").replaceChildren(...sources.map((s, i) => el("li", {},
    el("div", {}, el("strong", {}, `[${i + 1}] ${s.title || s.doc_id}`),
      s.source ? ` — ${s.source}` : "", el("span", { class: "muted" }, ` score ${Number(s.score).toFixed(3)}`)),
    el("div", { class: "src-text" }, s.text))));
}
