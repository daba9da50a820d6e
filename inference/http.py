"""The daemon's HTTP side: ``/metrics``, ``/healthz`` and ``/readyz``, nothing else.

Bound to ``metrics.host:metrics.port`` (loopback by default; Kubernetes sets
``0.0.0.0`` in its config). ``/healthz`` answers 200 whenever the event loop
runs (a stalled loop cannot answer: that is the liveness signal). ``/readyz``
answers 200 only when the readiness callback reports ready (feeds connected,
windows complete, models loaded: :mod:`inference.readiness`), else 503; either
way with the callback's JSON body saying what is missing and since when. Every other path is 404; other methods are 405.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from inference.readiness import Report
from whalecast.logs import get_logger
from whalecast.metrics import Metrics

log = get_logger(__name__)

#: Evaluates readiness now: ready or not, and the JSON body saying why.
Readiness = Callable[[], Report]


def build_app(metrics: Metrics, readiness: Readiness) -> web.Application:
    async def scrape(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        report = readiness()
        return web.json_response(report.body, status=200 if report.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class HttpServer:
    """Runs the app on one address; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, metrics: Metrics, readiness: Readiness, host: str, port: int) -> None:
        self.app = build_app(metrics, readiness)
        self.host = host
        self.requested_port = port
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> HttpServer:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("http server listening", host=self.host, port=self.port)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
