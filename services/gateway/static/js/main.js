// Entry point of the operator console: the live feed, then the router with its pages.

import { startFeed, stopFeed } from "./feed.js";
import { startRouter } from "./router.js";
import { renderIngest } from "./pages/ingest.js";
import { renderJobs } from "./pages/jobs.js";
import { renderQuery } from "./pages/query.js";
import { renderTask } from "./pages/task.js";
import { renderTasks } from "./pages/tasks.js";

startFeed();
window.addEventListener("beforeunload", stopFeed);
startRouter({ tasks: renderTasks, task: renderTask, query: renderQuery, jobs: renderJobs, ingest: renderIngest });
