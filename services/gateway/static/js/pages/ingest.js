// #/ingest: paste text or upload .txt/.md files, wait until they are searchable, then search
// the index.

import { api } from "../api.js";
import { $, el, shortId } from "../dom.js";
import { INGEST_MAX_DOCUMENTS, INGEST_SOURCE_MAX, INGEST_TITLE_MAX, INGEST_WAIT_S, SEARCH_K } from "../limits.js";
import { mount, onLeave } from "../router.js";

const TEXT_FILE = /\.(txt|md|markdown)$/i;

/** The documents the form describes, or a string saying what is wrong with it. */
async function documentsOf(progress) {
  const documents = [];
  const text = $("#ingest-text").value;
  const title = $("#ingest-title").value.trim();
  const source = $("#ingest-source").value.trim();
  if (text.trim()) documents.push({ text, ...(title && { title }), ...(source && { source }) });
  const files = [...$("#ingest-files").files];
  progress.replaceChildren(el("p", {}, `Reading ${files.length} file(s)…`));
  for (const f of files) {
    if (!TEXT_FILE.test(f.name)) return `${f.name} is not a .txt or .md file.`;
    const body = await f.text();
    if (body.trim()) {
      documents.push({ text: body, title: f.name.slice(0, INGEST_TITLE_MAX), source: (source || f.name).slice(0, INGEST_SOURCE_MAX) });
    }
  }
  if (!documents.length) return "Paste some text or choose a file first.";
  if (documents.length > INGEST_MAX_DOCUMENTS) {
    return `At most ${INGEST_MAX_DOCUMENTS} documents at a time: choose fewer files.`;
  }
  return documents;
}

function resultTable(res, documents) {
  const byId = new Map((res.documents || []).map((d) => [d.doc_id, d]));
  return el("div", { class: "table-wrap" }, el("table", { id: "ingest-table" },
    el("thead", {}, el("tr", {}, ...["Document", "Title", "Status", "Chunks"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...(res.document_ids || []).map((docId, i) => {
      const d = byId.get(docId) || {};
      return el("tr", {}, el("td", {}, el("code", {}, shortId(docId))), el("td", {}, documents[i]?.title || ""),
        el("td", {}, d.status || res.status), el("td", {}, d.chunks ?? ""));
    }))));
}

export function renderIngest() {
  mount("#tpl-ingest");
  document.title = "Ingest · rag-poc";
  const ctrl = new AbortController();
  onLeave(() => ctrl.abort());
  const progress = $("#ingest-progress");
  const result = $("#ingest-result");

  $("#ingest-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const btn = $("#ingest-submit");
    const documents = await documentsOf(progress);
    if (typeof documents === "string") {
      progress.replaceChildren(el("p", { class: "alert" }, documents));
      return;
    }
    btn.disabled = true;
    result.replaceChildren();
    const started = performance.now();
    progress.replaceChildren(el("p", {}, el("progress", { "aria-label": "Ingesting" }),
      ` Sending ${documents.length} document(s); waiting for chunking, embedding and indexing…`));
    try {
      const res = await api(`/api/ingest?wait=${INGEST_WAIT_S}`, { method: "POST", body: { documents }, signal: ctrl.signal });
      const secs = ((performance.now() - started) / 1000).toFixed(2);
      progress.replaceChildren(el("p", { class: "alert info" }, `Batch ${res.status} in ${secs} s.`));
      result.replaceChildren(resultTable(res, documents));
      e.target.reset();
    } catch (err) {
      if (err.name === "AbortError") return;
      progress.replaceChildren(el("p", { class: "alert" }, `Ingest failed: ${err.message}`));
    } finally {
      btn.disabled = false;
    }
  });

  $("#search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#search-results");
    try {
      const res = await api("/api/search", { method: "POST", body: { query: $("#search-query").value, k: SEARCH_K }, signal: ctrl.signal });
      out.replaceChildren(res.hits.length ? el("ol", { class: "sources search-hits" }, ...res.hits.map((h) => el("li", {},
        el("div", {}, el("strong", {}, h.title || h.doc_id), el("span", { class: "muted" }, ` score ${Number(h.score).toFixed(3)}`)),
        el("div", { class: "src-text" }, h.text)))) : el("p", { class: "muted" }, "No hits."));
    } catch (err) {
      if (err.name === "AbortError") return;
      out.replaceChildren(el("p", { class: "alert" }, `Search failed: ${err.message}`));
    }
  });
}
