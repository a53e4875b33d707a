// Entry point of the operator console: asks for the session (a gateway with API tokens wants
// one; main.js shows the sign-in until there is one), then the live feed and the router with
// its pages. A session that ends (a 401, or "Sign out") brings the sign-in back.

import { $ } from "./dom.js";
import { startFeed, stopFeed } from "./feed.js";
import { startRouter, stopRouter } from "./router.js";
import { renderIngest } from "./pages/ingest.js";
import { renderJobs } from "./pages/jobs.js";
import { renderQuery } from "./pages/query.js";
import { renderTask } from "./pages/task.js";
import { renderTasks } from "./pages/tasks.js";
import { currentSession, onSessionEnded, signOut } from "./session.js";
import { showSession, showSignIn } from "./signin.js";

const PAGES = { tasks: renderTasks, task: renderTask, query: renderQuery, jobs: renderJobs, ingest: renderIngest };
const RETRY_MS = 2000;
let signedIn = false;

function setAppShown(shown) {
  $("header nav").hidden = !shown;
  $("#conn").hidden = !shown;
}

function enter(session) {
  signedIn = true;
  showSession(session);
  setAppShown(true);
  startFeed();
  startRouter(PAGES);
}

function leave(message) {
  if (!signedIn) return; // several requests may learn it at once
  signedIn = false;
  stopRouter();
  stopFeed();
  setAppShown(false);
  showSession(null);
  showSignIn(message, enter);
}

async function start() {
  let session;
  try {
    session = await currentSession();
  } catch (err) {
    $("#main").textContent = `Cannot reach the gateway (${err.message}); retrying…`;
    setTimeout(start, RETRY_MS);
    return;
  }
  if (session) enter(session);
  else showSignIn("", enter);
}

onSessionEnded(() => leave("Your session has ended: sign in again."));
$("#sign-out").addEventListener("click", async () => {
  // should DELETE fail, the cookie stays until it expires, but this page leaves the session now
  try { await signOut(); } catch (err) { console.warn(err); }
  leave("You are signed out.");
});
window.addEventListener("beforeunload", stopFeed);
start();
