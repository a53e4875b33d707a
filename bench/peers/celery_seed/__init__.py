"""rag-poc's original ("seed") design as a benchmark peer: a Starlette app admits runs behind a
Redis precheck, a `SET NX PX` token lock and an atomic SQLite update, then `.delay()`s a Celery
task that does the RAG run and publishes its progress over Redis pub/sub."""
