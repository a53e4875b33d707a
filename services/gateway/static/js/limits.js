// Limits of the API's request bodies that the UI applies in script (the forms' own maxlength
// attributes are in index.html). tests/ui/test_form_limits.py checks both against the API.

export const TASK_TITLE_MAX = 200; // POST /api/tasks: title
export const INGEST_TITLE_MAX = 500; // POST /api/ingest: a document's title
export const INGEST_SOURCE_MAX = 2000; // POST /api/ingest: a document's source
export const INGEST_MAX_DOCUMENTS = 100; // POST /api/ingest: documents in one batch
export const INGEST_WAIT_S = 60; // POST /api/ingest?wait= (at most the API's bound)
export const SEARCH_K = 5; // POST /api/search: k (within the API's range)
export const TASK_LIST_SIZE = 200; // GET /api/tasks?limit= (within the API's range)
