// The task page's "Locks and conflicts" table: one row per lock event, newest first, filled from
// GET /api/tasks/{id}/locks and from the live stream (the same entry ids, so no row shows twice).

import { el, fmtClock, shortId } from "../dom.js";
import { isAfter } from "../entries.js";

function details(ev) {
  if (ev.type === "lock.conflict") {
    return `refused at ${ev.layer}; held by ${ev.holder_run_id || "?"}` + (ev.expires_at ? ` until ${fmtClock(ev.expires_at)}` : "");
  }
  if (ev.type === "lock.acquired") return `fence ${ev.fence}, by ${ev.by ?? "?"}, ttl ${ev.ttl_ms ?? "?"} ms`;
  return ev.reason || `fence ${ev.fence}`;
}

export class LockTable {
  constructor(tbody) {
    this.tbody = tbody;
    this.rows = new Map(); // entry id -> <tr>
  }

  add(entryId, ev) {
    if (this.rows.has(entryId)) return;
    const tr = el("tr", { "data-entry": entryId, class: ev.type === "lock.conflict" ? "conflict" : "" },
      el("td", {}, fmtClock(ev.at)), el("td", { class: "mono" }, ev.type),
      el("td", { class: "mono", title: ev.run_id }, shortId(ev.run_id)), el("td", {}, details(ev)));
    const before = [...this.tbody.children].find((row) => isAfter(entryId, row.dataset.entry));
    this.tbody.insertBefore(tr, before || null);
    this.rows.set(entryId, tr);
  }
}
