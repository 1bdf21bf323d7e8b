"""``python -m starter codec-server``: Temporal's codec endpoints for the Web UI and the CLI.

``POST /decode`` and ``POST /encode`` take and answer ``{"payloads": [...]}`` (Temporal's
``Payloads`` message as protobuf JSON), as the Web UI (``--ui-codec-endpoint``, or its codec
setting) and ``temporal --codec-endpoint`` send them. Browsers may call it from the origins
allowed (CORS; the Web UI's); with a token set, every call must carry
``Authorization: Bearer <token>``. Whoever can call it reads every case: bind it to a private
address (the default is 127.0.0.1) and give the token only to those who may read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from runtime.encryption import DecryptionError, EncryptionCodec, EncryptionConfigError, keyring

DEFAULT_PORT = 8081
# A decode request is one event's payloads, or a page of them from the CLI; Temporal caps one
# payload at 2 MiB and a request at 4 MiB, so twice that bounds any request it sends.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def codec_app(
    codec: PayloadCodec, *, origins: Iterable[str] = (), token: str | None = None
) -> web.Application:
    allowed = {o.rstrip("/") for o in origins if o.strip()}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if request.method == hdrs.METH_OPTIONS:  # a browser's preflight: never needs the token
            response: web.StreamResponse = web.Response(status=204)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as refused:  # answered with the CORS headers too
                response = web.Response(
                    status=refused.status, text=refused.text, headers=refused.headers
                )
        if origin is not None and origin in allowed:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "POST, OPTIONS"
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOWED_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            response.headers[hdrs.VARY] = hdrs.ORIGIN
        return response

    def authorized(request: web.Request) -> bool:
        if token is None:
            return True
        sent = request.headers.get(hdrs.AUTHORIZATION, "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())

    def endpoint(apply: Callable[[Sequence[Payload]], Awaitable[list[Payload]]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            if not authorized(request):
                raise web.HTTPUnauthorized(
                    text="a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
                )
            payloads = Payloads()
            try:
                json_format.Parse(await request.text(), payloads)
            except json_format.ParseError as err:
                raise web.HTTPBadRequest(text=f'expected {{"payloads": [...]}}: {err}') from None
            try:
                changed = await apply(payloads.payloads)
            except DecryptionError as err:
                raise web.HTTPUnprocessableEntity(text=str(err)) from None
            body = json_format.MessageToJson(Payloads(payloads=changed))
            return web.Response(text=body, content_type="application/json")

        return handle

    app = web.Application(middlewares=[cors], client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post("/encode", endpoint(codec.encode))
    app.router.add_post("/decode", endpoint(codec.decode))
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host:port`` (port 0: a free one, see ``bound_port``)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the codec server listens nowhere")


async def serve(
    app: web.Application, host: str, port: int, ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM, or until cancelled; ``ready`` is called once it
    listens. The signals are handled here, not left to their inherited disposition: a process
    started in the background by a script inherits SIGINT ignored, and must still stop on it."""
    runner = await start(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):  # not main thread
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        await runner.cleanup()


def from_settings(
    settings: Any, origins: Iterable[str] | None = None, token: str | None = None
) -> web.Application:
    """The codec server of the settings' keys; ``EncryptionConfigError`` without a key."""
    keys = keyring(settings)
    if keys is None:
        raise EncryptionConfigError(
            "the codec server needs the keys: set CASES_ENCRYPTION_KEY or "
            "CASES_ENCRYPTION_KEYS_FILE as the worker has them"
        )
    if origins is None:
        origins = settings.codec_cors_origins.split(",")
    if token is None and settings.codec_token is not None:
        token = settings.codec_token.get_secret_value()
    return codec_app(EncryptionCodec(keys), origins=origins, token=token or None)
