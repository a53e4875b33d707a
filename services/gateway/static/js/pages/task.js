// #/tasks/N: the task, its Run button, the live Activity timeline with a time-travel scrubber,
// the answer token by token with its sources, and the lock history.
//
// The timeline and every state shown come from the server's projection (ActivityFollower); the
// task's event stream (SSE) supplies the tokens, sources and lock rows, and says when to ask the
// server for new items.

import { ActivityFollower } from "../activity.js";
import { api } from "../api.js";
import { $, announce, el, fmtClock, fmtTime, isFresh, shortId } from "../dom.js";
import { isAfter } from "../entries.js";
import { LiveStream, TASK_EVENT_TYPES } from "../live.js";
import { mount, onLeave } from "../router.js";
import { LockTable } from "./locks.js";
import { RunOutputs, showTask } from "./task-view.js";

const RUN_ENDS = ["run.completed", "run.failed", "run.superseded"];

export function renderTask(id) {
  mount("#tpl-task");
  document.title = `Task ${id} · rag-poc`;
  const items = [];                 // the server's Activity items, oldest first
  const outputs = new RunOutputs();
  const locks = new LockTable($("#locks-table tbody"));
  const ctrl = new AbortController();
  const scrubber = $("#scrubber");
  const activity = $("#activity");
  const runBtn = $("#run-button");
  let following = true;             // scrubber pinned to the newest item
  let holderMsg = null;
  let runDisabled = null;           // as render last set it: an unchanged state leaves the button alone
  $("#task-ask").href = `#/query/${id}`;

  function render() {
    const i = following ? items.length - 1 : Number(scrubber.value);
    const item = items[i];
    if (!item?.task || ctrl.signal.aborted) return; // nothing projected yet, or the page is gone
    const task = item.task;
    const upTo = following ? null : item.entry_id;
    // at the live end, tokens newer than the newest item belong to the run streaming now
    const newest = outputs.newestToken;
    const streaming = following && newest && isAfter(newest.entry, item.entry_id) ? newest.run : null;
    const run = streaming || task.last_run_id;
    const answer = task.status === "done" && !streaming ? task.last_answer : outputs.text(run, upTo);
    showTask(task, { answer, sources: outputs.chunks(run, upTo) });

    const busy = task.status === "queued" || task.status === "running";
    const disabled = busy || !following;
    if (disabled !== runDisabled) runBtn.disabled = runDisabled = disabled;
    runBtn.title = !following ? "Move the time-travel slider to the newest event to run"
      : busy ? `A run is ${task.status}` : "";
    scrubber.disabled = false;
    scrubber.max = String(items.length - 1);
    if (following) scrubber.value = scrubber.max;
    $("#scrub-pos").textContent = `${i + 1} of ${items.length}`;
    scrubber.setAttribute("aria-valuetext", `event ${i + 1} of ${items.length}: ${item.type}`);
    $("#scrub-note").textContent = `${following ? "Live (newest event)" : "Past state"} — ${item.type} at ${fmtTime(item.at)}, entry ${item.entry_id}`;
    for (const li of activity.querySelectorAll("li.current")) li.classList.remove("current");
    activity.querySelector(`li[data-entry="${CSS.escape(item.entry_id)}"]`)?.classList.add("current");
  }

  let raf = 0;
  function scheduleRender() {
    if (!raf) raf = requestAnimationFrame(() => { raf = 0; render(); });
  }

  scrubber.addEventListener("input", () => {
    following = Number(scrubber.value) >= items.length - 1;
    render();
  });

  // each item is shown in turn, so every state the task went through is on screen once
  async function addItems(fresh) {
    for (const item of fresh) {
      items.push(item);
      activity.append(el("li", { "data-entry": item.entry_id, "data-type": item.type },
        el("time", { datetime: new Date(item.at * 1000).toISOString() }, fmtClock(item.at)),
        el("span", { class: "type" }, item.type),
        el("span", {}, item.summary)));
      if (following) activity.scrollTop = activity.scrollHeight;
      render();
      await Promise.resolve(); // let observers of the page see this state before the next
    }
  }

  function missing(err) {
    if (err.status !== 404) return;
    live.close(); // nothing to follow: stop retrying the stream
    $("#task-heading").textContent = `Task ${id} does not exist`;
    $("#run-msg").replaceChildren(el("p", { class: "alert" }, "No such task. ", el("a", { href: "#/tasks" }, "Back to the list.")));
    runBtn.disabled = true;
  }

  const follower = new ActivityFollower(id, addItems, { signal: ctrl.signal, onError: missing });

  function onEvent(ev, entryId) {
    outputs.add(ev, entryId);
    if (ev.type === "llm.delta") {
      // token by token: show each at once (the rest of the page catches up per frame)
      if (following) $("#task-answer").textContent = outputs.text(ev.run_id);
      scheduleRender();
      return;
    }
    follower.want(entryId);
    if (ev.type.startsWith("lock.")) locks.add(entryId, ev);
    if (RUN_ENDS.includes(ev.type) && isFresh(ev)) announce(`Task ${id}: ${ev.type.replace("run.", "run ")}`);
    if (ev.type === "lock.released" && isFresh(ev)) {
      // the run that held the lock (or was just queued) has ended: its message is stale now
      if (!holderMsg || holderMsg.dataset.holder === ev.run_id) $("#run-msg").replaceChildren();
      holderMsg = null;
    }
    scheduleRender();
  }

  // the stream replays the task's whole history, then follows; ids are task-stream entry ids
  const live = new LiveStream(`task-${id}`, `/events/tasks/${id}`, TASK_EVENT_TYPES, onEvent, (msg) => msg.lastEventId);
  onLeave(() => { live.close(); ctrl.abort(); cancelAnimationFrame(raf); });
  follower.load();
  api(`/api/tasks/${id}/locks`, { signal: ctrl.signal })
    .then((data) => { for (const l of data.locks) locks.add(l.id, l); })
    .catch(() => {}); // a missing task is reported by the follower

  runBtn.addEventListener("click", async () => {
    const msg = $("#run-msg");
    runBtn.disabled = true;
    runDisabled = null; // the next render decides again
    msg.replaceChildren();
    try {
      const res = await api("/run-agents", { method: "POST", body: { id } });
      msg.replaceChildren(el("p", { class: "alert info" }, `Run ${shortId(res.run_id)} queued (fence ${res.fence}).`));
    } catch (err) {
      if (err.status === 409) {
        const e = err.body?.error || {};
        const until = e.expires_at ? new Date(e.expires_at * 1000) : null;
        holderMsg = el("div", { class: "alert", "data-holder": e.holder_run_id || "" },
          el("strong", {}, "This task is already being run. "),
          "The lock is held by run ", el("code", {}, e.holder_run_id || "unknown"),
          until ? [" until ", el("time", { datetime: until.toISOString() }, until.toLocaleTimeString()),
            ` (${Math.max(0, Math.round((until - Date.now()) / 1000))} s from now)`] : "",
          e.layer ? ` — refused at the ${e.layer} check.` : ".",
          " Try again when it has finished.");
        msg.replaceChildren(holderMsg);
      } else {
        msg.replaceChildren(el("p", { class: "alert" }, `Could not start the run: ${err.message}`));
      }
      scheduleRender();
    }
  });
}
