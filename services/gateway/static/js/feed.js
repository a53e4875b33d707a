// The feed of every task's events (GET /events), open on every page: it keeps the connection
// indicator honest and tells the tasks list which tasks moved.

import { LiveStream, TASK_EVENT_TYPES } from "./live.js";

const listeners = new Set();
let stream = null;

// the /events id is a position over every partition; an event's own identity is its content
const eventKey = (_msg, ev) => `${ev.task_id}|${ev.type}|${ev.run_id}|${ev.at}|${ev.index ?? ""}`;

export function startFeed() {
  stopFeed();
  stream = new LiveStream("all", "/events", TASK_EVENT_TYPES, (ev) => {
    for (const fn of listeners) fn(ev);
  }, eventKey);
}

export function stopFeed() {
  if (stream) stream.close();
  stream = null;
}

/** Calls `fn(event)` for every event of every task; returns the function that unsubscribes. */
export function onFeedEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
