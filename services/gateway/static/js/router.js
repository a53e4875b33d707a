// Hash routes (#/tasks, #/tasks/N, #/query, #/query/N, #/jobs, #/ingest): each page is a <template> in
// index.html, mounted into <main>; a page registers with onLeave what to stop when it goes. The
// sign-in is mounted the same way, with the router stopped while it shows.

import { $ } from "./dom.js";

let cleanup = [];

export function onLeave(fn) {
  cleanup.push(fn);
}

export function mount(tplId) {
  for (const fn of cleanup.splice(0)) {
    try { fn(); } catch (e) { console.warn(e); }
  }
  $("#main").replaceChildren($(tplId).content.cloneNode(true));
}

function setNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function notFound() {
  mount("#tpl-notfound");
  document.title = "Not found · rag-poc";
}

let pages = null;
let routing = false;
let listening = false;

function route() {
  const hash = location.hash || "#/tasks";
  const m = hash.match(/^#\/tasks\/(\d+)$/);
  if (m) { setNav("tasks"); pages.task(Number(m[1])); }
  else if (hash === "#/tasks" || hash === "#/" || hash === "#") { setNav("tasks"); pages.tasks(); }
  else if (hash === "#/query") { setNav("query"); pages.query(); }
  else if (hash.match(/^#\/query\/(\d+)$/)) { setNav("query"); pages.query(Number(hash.split("/")[2])); }
  else if (hash === "#/jobs") { setNav("jobs"); pages.jobs(); }
  else if (hash === "#/ingest") { setNav("ingest"); pages.ingest(); }
  else { setNav(""); notFound(); }
}

/** `pages`: { tasks, task(id), query(taskId?), jobs, ingest } render functions. Renders the
 * page of the current hash, then each page the hash moves to, until `stopRouter()`. */
export function startRouter(newPages) {
  pages = newPages;
  routing = true;
  if (!listening) {
    listening = true;
    const main = $("#main");
    window.addEventListener("hashchange", () => {
      if (!routing) return; // signed out: the sign-in stays whatever the hash says
      route();
      // keyboard and screen-reader users land on the new view, not on the old link
      if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
    });
    // the skip link must not change the hash (the router owns it)
    $(".skip").addEventListener("click", (e) => { e.preventDefault(); main.focus(); });
  }
  route();
}

/** Stops following the hash (the page shown stays until something else is mounted). */
export function stopRouter() {
  routing = false;
  setNav("");
}
