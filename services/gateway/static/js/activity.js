// A task's Activity as the server projects it (GET /api/tasks/{id}/activity): items with the
// server's one-line summary and the task as it stood after each event. The UI never folds events
// itself; live events only say when to ask the server again.
//
// The projector writes the read model a moment after an event reaches the stream, so an event
// seen over SSE may not have its item yet: the follower asks for the items after the last one it
// has until the wanted ones arrive, backing off, and gives up after MAX_MISSES empty answers in a
// row (about five seconds); the next event asks again.

import { api, sleep } from "./api.js";

const FIRST_DELAY_MS = 40;
const MAX_DELAY_MS = 800;
const MAX_MISSES = 10;
const INITIAL = Symbol("initial load");

/** What an item and the event it was projected from share, for feeds without entry ids. */
export const contentKey = (x) => `${x.type}|${x.run_id}|${x.at}`;

export class ActivityFollower {
  /** `onItems(items)` gets every new item once, oldest first (it may return a promise);
   * `onError(err)` gets a failed request (the wanted items are then dropped). */
  constructor(taskId, onItems, { signal, onError } = {}) {
    Object.assign(this, { taskId, onItems, signal, onError });
    this.after = "";          // entry id of the newest item received
    this.have = new Set();    // entry ids and content keys of the items received
    this.wanted = new Set();
    this.running = false;
  }

  /** Fetch once, whatever is there. */
  load() {
    this.wanted.add(INITIAL);
    this.run();
  }

  /** Fetch until the item with this entry id (or content key) has arrived, within the bound. */
  want(key) {
    if (this.have.has(key)) return;
    this.wanted.add(key);
    this.run();
  }

  async run() {
    if (this.running) return;
    this.running = true;
    let delay = FIRST_DELAY_MS;
    let misses = 0;
    try {
      while (this.wanted.size && !this.signal?.aborted) {
        const qs = this.after ? `?after=${encodeURIComponent(this.after)}` : "";
        const data = await api(`/api/tasks/${this.taskId}/activity${qs}`, { signal: this.signal });
        this.wanted.delete(INITIAL);
        const fresh = data.activity.filter((item) => !this.have.has(item.entry_id));
        if (fresh.length) {
          for (const item of fresh) {
            this.have.add(item.entry_id);
            this.have.add(contentKey(item));
            this.wanted.delete(item.entry_id);
            this.wanted.delete(contentKey(item));
          }
          this.after = fresh[fresh.length - 1].entry_id;
          await this.onItems(fresh);
          delay = FIRST_DELAY_MS;
          misses = 0;
        } else if (this.wanted.size) {
          if (++misses > MAX_MISSES) break;
          await sleep(delay, this.signal);
          delay = Math.min(delay * 2, MAX_DELAY_MS);
        }
      }
    } catch (err) {
      if (err.name !== "AbortError" && this.onError) this.onError(err);
    } finally {
      this.wanted.clear();
      this.running = false;
    }
  }
}
