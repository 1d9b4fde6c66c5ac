"""The same two handlers on each HTTP stack considered, for benchmarks.http_service.

    python benchmarks/http_stacks.py (starlette|fastapi|aiohttp) PORT

GET /r answers a 20-id JSON body; POST /e parses a JSON body of events and
answers 202. Nothing else: the stacks' own cost per request is what differs.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations
# at run time (a string "Request" would become a query parameter).
import json
import sys
from typing import Any

BODY = json.dumps({"products": [f"p{i}" for i in range(20)], "source": "cached", "age_ms": 12}).encode()


def _accepted(raw: bytes) -> bytes:
    return json.dumps({"accepted": len(json.loads(raw)["events"])}).encode()


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def get(request: Request) -> Response:
        request.query_params["id"]
        return Response(BODY, media_type="application/json")

    async def post(request: Request) -> Response:
        return Response(_accepted(await request.body()), 202, media_type="application/json")

    return Starlette(routes=[Route("/r", get), Route("/e", post, methods=["POST"])])


def fastapi_app() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    app = FastAPI()

    @app.get("/r")
    async def get(id: str) -> Response:
        return Response(BODY, media_type="application/json")

    @app.post("/e", status_code=202)
    async def post(request: Request) -> Response:
        return Response(_accepted(await request.body()), 202, media_type="application/json")

    return app


def run_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def get(request: web.Request) -> web.Response:
        request.query["id"]
        return web.Response(body=BODY, content_type="application/json")

    async def post(request: web.Request) -> web.Response:
        return web.Response(body=_accepted(await request.read()), status=202, content_type="application/json")

    app = web.Application()
    app.router.add_get("/r", get)
    app.router.add_post("/e", post)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "aiohttp":
        run_aiohttp(port)
    else:
        import uvicorn

        app = starlette_app() if kind == "starlette" else fastapi_app()
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http="httptools",
        )
