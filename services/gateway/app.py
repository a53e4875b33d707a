"""The gateway's wiring: routes, lifespan (clients built once), authentication, error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from libs.commandside.locks import TaskLocks
from libs.common import Settings
from libs.common.database import create_engine, create_schema
from libs.events import EventStore, Keys, connect_redis
from services.gateway.admission import finish_undos
from services.gateway.auth import AuthMiddleware, announce, token_name_of
from services.gateway.context import GatewayContext
from services.gateway.errors import EXCEPTION_HANDLERS
from services.gateway.health import health, ready
from services.gateway.http_guard import AllowedHosts, SecurityHeaders, default_allowed_hosts
from services.gateway.hub import EventHub
from services.gateway.ingest_api import ingest, search
from services.gateway.jobs_api import jobs
from services.gateway.limits import ConcurrencyCaps, RunRateLimit
from services.gateway.locks_api import read_task_locks
from services.gateway.metrics import metrics_endpoint
from services.gateway.openapi import OPENAPI_ROUTES
from services.gateway.projection_watch import ProjectionWatch
from services.gateway.runs_api import run_agents
from services.gateway.session_api import session_routes
from services.gateway.sse import task_events
from services.gateway.sse_all import all_events
from services.gateway.tasks_api import create_task, list_all_tasks, read_task, read_task_activity
from services.gateway.tokens import gateway_tokens

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
# The web UI's files are revalidated (ETag) on every load, so an upgrade never pairs a new page
# with modules cached from the old one.
NO_CACHE = {"cache-control": "no-cache"}


class UiFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


async def index(_request: object) -> Response:
    return FileResponse(STATIC / "index.html", headers=NO_CACHE)


def create_app(settings: Settings) -> Starlette:
    """The gateway. Raises SettingsError when it must not start: a malformed API token, or no
    token while it would listen off loopback (`gateway_tokens`)."""
    tokens = gateway_tokens(settings)
    announce(settings, tokens)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, GatewayContext]]:
        redis = connect_redis(
            settings.redis_url,
            name=f"{settings.namespace}:gateway",
            cluster=settings.cluster_mode,
        )
        follower_redis = connect_redis(
            settings.redis_url,
            max_connections=10_000,
            socket_timeout=settings.sse_heartbeat_s + 15,
            name=f"{settings.namespace}:gateway-sse",
            cluster=settings.cluster_mode,
        )
        engine = create_engine(settings.sqlalchemy_url)
        await create_schema(engine)
        keys = Keys(settings.namespace, settings.partitions)
        hub = EventHub(EventStore(follower_redis, keys))
        ctx = GatewayContext(
            settings=settings,
            keys=keys,
            redis=redis,
            store=EventStore(redis, keys),
            locks=TaskLocks(redis, keys),
            engine=engine,
            follower=EventStore(follower_redis, keys),
            hub=hub,
            projection=ProjectionWatch(redis, engine, keys),
        )
        await hub.start()
        ctx.projection.start()
        await ctx.durability.probe()  # says once, at start, whether a 202 waits for the disk
        try:
            yield {"ctx": ctx}
        finally:
            await finish_undos()  # admissions cut short by the stop, before their clients close
            await hub.stop()
            await ctx.projection.stop()
            await redis.aclose()
            await follower_redis.aclose()
            await engine.dispose()

    routes = [
        Route("/", index),
        Mount("/static", app=UiFiles(directory=STATIC), name="static"),
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_endpoint),
        Route("/api/tasks", list_all_tasks, methods=["GET"]),
        Route("/api/tasks", create_task, methods=["POST"]),
        Route("/api/tasks/{task_id}", read_task),
        Route("/api/tasks/{task_id}/activity", read_task_activity),
        Route("/api/tasks/{task_id}/locks", read_task_locks),
        Route("/run-agents", run_agents, methods=["POST"]),
        Route("/api/ingest", ingest, methods=["POST"]),
        Route("/api/search", search, methods=["POST"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/events/tasks/{task_id}", task_events),
        Route("/events", all_events),
        *session_routes(tokens),
        *OPENAPI_ROUTES,
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        # outermost first: every answer gets the headers, a foreign Host is refused before
        # credentials are looked at, and the limits count only authenticated requests
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                AllowedHosts,
                allowed=settings.allowed_host_names or default_allowed_hosts(settings.host),
            ),
            Middleware(AuthMiddleware, tokens=tokens, metrics_public=settings.metrics_public),
            Middleware(
                ConcurrencyCaps,
                max_streams=settings.max_sse_clients,
                max_waiters=settings.max_waiters,
            ),
            Middleware(
                RunRateLimit,
                runs_per_minute=settings.run_rate_per_minute,
                namespace=settings.namespace,
                principal_of=token_name_of,
                redis_of=lambda scope: scope["state"]["ctx"].redis,
            ),
        ],
    )
