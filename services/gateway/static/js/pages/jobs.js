// #/jobs: workers, queue lag, pending entries and dead letters per service, why queued runs
// wait, and recent failures; polls GET /api/jobs.

import { api } from "../api.js";
import { $, el, fmtTime, shortId, statusBadge } from "../dom.js";
import { mount, onLeave } from "../router.js";

const POLL_MS = 2000;

const table = (caption, head, rows, empty) => rows.length
  ? el("div", { class: "table-wrap" }, el("table", {}, el("caption", { class: "visually-hidden" }, caption),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c)))))))
  : el("p", { class: "muted" }, empty);
const ago = (iso) => (iso ? `${Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))} s ago` : "");
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
// the runners read one stream per partition: name one stream, or count them and show the first
const streamsOf = (s) => {
  const streams = s.streams || [];
  return streams.length === 1
    ? [" — stream ", el("code", {}, streams[0])]
    : [` — ${streams.length} streams (`, el("code", {}, streams[0] || ""), ", …)"];
};
const stat = (name, value, label) => el("div", {}, el("div", { class: "stat", "data-stat": name }, value), el("div", { class: "muted" }, label));

function service(name, s) {
  return el("section", { class: "card", "aria-labelledby": `svc-${name}`, "data-service": name },
    el("h3", { id: `svc-${name}` }, `${name}`, el("span", { class: "muted" }, ...streamsOf(s), ", group ", el("code", {}, s.group))),
    el("div", { class: "stats" },
      stat("workers", String((s.workers || []).length), "live workers"),
      stat("lag", s.lag === null ? "?" : String(s.lag), "queue lag"),
      stat("pending", String(s.pending_count), "pending"),
      stat("dead", String((s.dead_letters || []).length), "dead letters")),
    (s.notes || []).length ? el("ul", {}, ...s.notes.map((n) => el("li", { class: "muted" }, n))) : null,
    el("h4", {}, "Workers"),
    table(`${name} workers`, ["Worker", "PID", "Slots in use", "Working on", "Last heartbeat", "Started"],
      (s.workers || []).map((w) => [el("code", { class: "worker-id" }, w.id), String(w.pid ?? ""),
        `${w.entries_in_hand ?? (w.current_entry ? 1 : 0)} / ${w.slots ?? 1}`,
        w.current_entry ? el("code", {}, w.current_entry) : "idle", ago(w.seen), fmtTime(w.started_at)]),
      "No live workers: queued work will wait until one starts."),
    el("h4", {}, "Pending entries"),
    table(`${name} pending`, ["Entry", "Stream", "Consumer", "Idle", "Deliveries", "Consumer alive"],
      (s.pending || []).map((p) => [el("code", {}, p.id), el("code", {}, p.stream || ""), p.consumer, `${Math.round(p.idle_ms / 1000)} s`,
        String(p.deliveries), p.consumer_live ? "yes" : "no (will be reclaimed)"]), "None."),
    el("h4", {}, "Dead letters"),
    table(`${name} dead letters`, ["Entry", "Stream", "Source entry", "Deliveries", "Reason"],
      (s.dead_letters || []).map((d) => [el("code", {}, d.id), el("code", {}, d.stream || ""), el("code", {}, d.source_id || ""),
        String(d.deliveries ?? ""), d.reason]), "None."));
}

function show(data) {
  $("#jobs-services").replaceChildren(...Object.entries(data.services || {}).map(([name, s]) => service(name, s)));
  $("#jobs-waiting").replaceChildren(table("Waiting runs", ["Task", "Run", "Queued", "Claim expires", "Why it waits"],
    (data.waiting || []).map((w) => [el("a", { href: `#/tasks/${w.task_id}` }, `#${w.task_id}`), el("code", {}, shortId(w.run_id)),
      clock(w.queued_at), w.claim_expires_at ? `${clock(w.claim_expires_at)}${w.claim_expired ? " (expired)" : ""}` : "",
      w.reason || ""]), "Nothing is waiting."));
  $("#jobs-failed").replaceChildren(table("Failed runs", ["Task", "Run", "Status", "Finished", "Error"],
    (data.failed_runs || []).map((f) => [el("a", { href: `#/tasks/${f.task_id}` }, `#${f.task_id}`), el("code", {}, shortId(f.run_id)),
      statusBadge(f.status), clock(f.finished), f.error || ""]), "No recent failures."));
  $("#jobs-updated").textContent = `Last update ${new Date().toLocaleTimeString()}.`;
}

export function renderJobs() {
  mount("#tpl-jobs");
  document.title = "Jobs · rag-poc";
  let timer = 0;
  let stopped = false;
  onLeave(() => { stopped = true; clearTimeout(timer); });
  async function poll() {
    try {
      const data = await api("/api/jobs");
      if (stopped) return;
      show(data);
      $("#jobs-error").replaceChildren();
    } catch (err) {
      if (!stopped) $("#jobs-error").replaceChildren(el("p", { class: "alert" }, `Could not read /api/jobs: ${err.message}`));
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
}
