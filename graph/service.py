"""The HTTP face of the cloud agent (`tandem cloud serve`): POST /plan, /semantic and /strategy with JSON messages.

Kept apart from the boundary so FastAPI is imported only by the process that serves. No
`from __future__ import annotations` here: FastAPI reads the handler annotations at run time.
"""

from fastapi import FastAPI, HTTPException, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from agents.cloud.agent import CloudAgent
from graph.boundary import cloud_handlers
from ground.errors import TandemError


def create_app(cloud: CloudAgent, dataset: str) -> FastAPI:
    """A FastAPI app running the same handlers as the in-process transport; GET /health for probes."""
    app = FastAPI(title="Tandem cloud", version="1")
    handlers = cloud_handlers(cloud)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "dataset": dataset}

    @app.post("/{route}")
    async def call(route: str, request: Request) -> Response:
        if route not in handlers:
            raise HTTPException(404, f"unknown route {route!r}")
        try:
            body = await run_in_threadpool(handlers[route], await request.body())
        except ValidationError as exc:
            raise HTTPException(422, f"invalid message: {exc.error_count()} error(s)") from exc
        except TandemError as exc:
            raise HTTPException(422, str(exc)) from exc
        return Response(body, media_type="application/json")

    return app
