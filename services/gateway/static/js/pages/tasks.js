// #/tasks: the create form and the list, whose statuses move live. An event on the feed makes
// the page ask the server for that task's projected state (its newest Activity item).

import { ActivityFollower, contentKey } from "../activity.js";
import { api } from "../api.js";
import { $, el, fmtTime, statusBadge } from "../dom.js";
import { onFeedEvent } from "../feed.js";
import { TASK_LIST_SIZE } from "../limits.js";
import { mount, onLeave } from "../router.js";

export function renderTasks() {
  mount("#tpl-tasks");
  document.title = "Tasks · rag-poc";
  const tbody = $("#tasks-table tbody");
  const filter = $("#status-filter");
  const count = $("#tasks-count");
  const rows = new Map();       // id -> <tr>
  const known = new Map();      // id -> newest task seen (by updated_at)
  const followers = new Map();  // id -> ActivityFollower
  const ctrl = new AbortController();
  let loadSeq = 0;

  // the list and the followers answer at different moments: keep whichever is newer
  function remember(task) {
    const had = known.get(task.id);
    if (!had || task.updated_at >= had.updated_at) known.set(task.id, task);
    return known.get(task.id);
  }

  function rowFor(task) {
    return el("tr", { "data-task-id": task.id },
      el("td", { class: "mono" }, String(task.id)),
      el("td", {}, el("a", { href: `#/tasks/${task.id}` }, task.title || "(untitled)")),
      el("td", { class: "status-cell" }, statusBadge(task.status)),
      el("td", {}, el("time", { datetime: new Date(task.created_at * 1000).toISOString() }, fmtTime(task.created_at))));
  }

  function upsert(task) {
    const wanted = !filter.value || task.status === filter.value;
    const existing = rows.get(task.id);
    if (!wanted) {
      if (existing) { existing.remove(); rows.delete(task.id); }
    } else if (existing) {
      existing.querySelector(".status-cell").replaceChildren(statusBadge(task.status));
    } else {
      const tr = rowFor(task);
      // newest (highest id) first
      const next = [...rows.entries()].filter(([id]) => id < task.id).sort((a, b) => b[0] - a[0])[0];
      tbody.insertBefore(tr, next ? next[1] : null);
      rows.set(task.id, tr);
    }
    updateCount();
  }

  function updateCount() {
    count.textContent =
      `${rows.size} task${rows.size === 1 ? "" : "s"}${filter.value ? ` with status ${filter.value}` : ""}`;
  }

  async function load() {
    const seq = ++loadSeq;
    const qs = new URLSearchParams({ limit: String(TASK_LIST_SIZE) });
    if (filter.value) qs.set("status", filter.value);
    try {
      const data = await api(`/api/tasks?${qs}`, { signal: ctrl.signal });
      if (seq !== loadSeq) return;
      tbody.replaceChildren();
      rows.clear();
      for (const t of data.tasks) upsert(remember(t));
      // tasks the followers brought while the request was in flight
      for (const t of known.values()) if (!rows.has(t.id)) upsert(t);
      updateCount();
    } catch (err) {
      if (err.name !== "AbortError") count.textContent = `Could not load tasks: ${err.message}`;
    }
  }

  function follower(id) {
    if (!followers.has(id)) {
      followers.set(id, new ActivityFollower(id, (items) => {
        const task = items[items.length - 1].task;
        if (task) upsert(remember(task));
      }, { signal: ctrl.signal }));
    }
    return followers.get(id);
  }

  onLeave(onFeedEvent((ev) => {
    if (ev.type !== "llm.delta") follower(ev.task_id).want(contentKey(ev));
  }));
  onLeave(() => ctrl.abort());
  filter.addEventListener("change", load);
  load();

  $("#task-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const msg = $("#task-form-msg");
    const btn = $("#task-create");
    btn.disabled = true;
    msg.textContent = "";
    try {
      const task = await api("/api/tasks", {
        method: "POST",
        body: { title: $("#task-title").value.trim(), description: $("#task-description").value },
      });
      upsert(remember(task));
      e.target.reset();
      msg.replaceChildren(el("p", { class: "alert info" }, "Created ", el("a", { href: `#/tasks/${task.id}` }, `task ${task.id}`), "."));
    } catch (err) {
      msg.replaceChildren(el("p", { class: "alert" }, `Could not create the task: ${err.message}`));
    } finally {
      btn.disabled = false;
    }
  });
}
