// Server-Sent Events: an EventSource wrapper that survives drops, and the header's connection
// indicator (#conn), which sums up the state of every open stream.

import { $ } from "./dom.js";
import { currentSession, sessionEnded } from "./session.js";

// the `event:` names the gateway sends (an EventSource only delivers names it listens for)
export const TASK_EVENT_TYPES = [
  "task.created", "lock.acquired", "lock.conflict", "lock.lost", "lock.expired", "lock.released",
  "run.requested", "run.started", "retrieval.done", "llm.delta", "run.completed", "run.failed",
  "run.superseded",
];

const LABELS = {
  live: "Live", reconnecting: "Reconnecting…", offline: "Offline — retrying", connecting: "Connecting…",
};
const streams = new Map(); // name -> state

function setStreamState(name, state) {
  if (state === null) streams.delete(name); else streams.set(name, state);
  const states = [...streams.values()];
  const overall = states.includes("offline") ? "offline"
    : states.includes("reconnecting") ? "reconnecting"
    : states.includes("connecting") ? "connecting" : states.length ? "live" : "connecting";
  const conn = $("#conn");
  if (conn.dataset.state === overall) return;
  conn.dataset.state = overall;
  $("#conn-text").textContent = LABELS[overall];
}

/** An EventSource that reports its state, drops events it has delivered already (by
 * `keyOf(message, event)`), and reopens itself when the browser gives up (CLOSED). The browser
 * retries network errors by itself, resuming with Last-Event-ID; it gives up on an error
 * status, such as the 401 of an expired session, which the EventSource cannot see: the session
 * is asked for, and the stream ends with it. */
export class LiveStream {
  constructor(name, url, types, onEvent, keyOf) {
    Object.assign(this, { name, url, types, onEvent, keyOf });
    this.seen = new Set();
    this.lastId = "";
    this.stopped = false;
    this.everOpen = false;
    this.timer = null;
    this.open();
  }

  open() {
    if (this.stopped) return;
    let url = this.url;
    if (this.lastId) url += (url.includes("?") ? "&" : "?") + "last_event_id=" + encodeURIComponent(this.lastId);
    const es = new EventSource(url);
    this.es = es;
    setStreamState(this.name, this.everOpen ? "reconnecting" : "connecting");
    es.addEventListener("open", () => { this.everOpen = true; setStreamState(this.name, "live"); });
    es.addEventListener("error", () => {
      if (this.stopped) return;
      if (es.readyState === EventSource.CLOSED) {
        setStreamState(this.name, "offline");
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.open(), 2000);
        this.checkSession();
      } else {
        setStreamState(this.name, "reconnecting");
      }
    });
    const handler = (msg) => {
      if (msg.lastEventId) this.lastId = msg.lastEventId;
      let ev;
      try { ev = JSON.parse(msg.data); } catch { return; }
      const key = this.keyOf(msg, ev);
      if (this.seen.has(key)) return;
      this.seen.add(key);
      this.onEvent(ev, msg.lastEventId);
    };
    for (const t of this.types) es.addEventListener(t, handler);
  }

  async checkSession() {
    let session;
    try { session = await currentSession(); } catch { return; } // unreachable: retry anyway
    if (session === null && !this.stopped) {
      this.close();
      sessionEnded();
    }
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
    setStreamState(this.name, null);
  }
}
