"""structlog set-up: JSON lines in production, readable lines on a terminal.

Standard-library loggers (uvicorn, SQLAlchemy, httpx) go through the same renderer, so every line
a service prints has one shape."""

from __future__ import annotations

import logging
import sys

import structlog

from libs.common.redact import redact_log_fields

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", fmt: str = "auto", service: str = "") -> None:
    """Configure structlog and the stdlib root logger once per process."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # passwords are masked last, after the exception text is formatted into the line
        processors=[*shared, structlog.processors.format_exc_info, redact_log_fields, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_log_fields,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    for noisy in ("httpx", "httpcore", "sqlalchemy.engine", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    logging.getLogger("asyncio").addFilter(_not_a_replaced_cluster_node)


def _not_a_replaced_cluster_node(record: logging.LogRecord) -> bool:
    """redis-py's cluster client drops the node objects of a cluster it rediscovered (after a
    failover) without closing them, and asyncio logs each as an error: an "Unclosed
    ClusterNode" line per process per failover, which says nothing an operator can act on
    (the client has already moved on to the new master)."""
    return not str(record.msg).startswith("Unclosed ClusterNode")
