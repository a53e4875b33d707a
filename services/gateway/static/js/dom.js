// DOM helpers shared by every page: element building, formatting, screen-reader announcements.

export const $ = (sel, root = document) => root.querySelector(sel);

/** `el("a", { href, class }, "text", child…)`: attributes are set as attributes (never as
 * handlers: listeners are added with addEventListener by the caller); null/false are skipped. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// a stream replays history before following it: only recent events are news
export const isFresh = (ev) => Date.now() / 1000 - ev.at < 10;
export const fmtTime = (at) => (at ? new Date(at * 1000).toLocaleString() : "");
export const fmtClock = (at) => (at ? new Date(at * 1000).toLocaleTimeString() : "");
export const shortId = (id) => (id ? String(id).slice(0, 8) : "");
export const statusBadge = (status) => el("span", { class: `status status-${status}`, text: status });

export function announce(text) {
  const a = $("#announcer");
  a.textContent = "";
  setTimeout(() => { a.textContent = text; }, 30);
}
