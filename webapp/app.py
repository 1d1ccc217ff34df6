"""The web app factory: pages, the JSON API, thumbnails, security headers and clean errors.

``create_app(library, thumbnails)`` wires ``webapp.pages`` and ``webapp.api`` onto one FastAPI app.
Every response carries a Content-Security-Policy that allows only this server's own scripts, styles and
images (no inline script, nothing from another origin); every error, expected or not, becomes a short
page or ``{"error": ...}`` JSON, never a stack trace. Requests whose Host header is not this machine's
are refused unless the server was bound to the network on purpose (a web page elsewhere cannot reach
the photos through DNS rebinding), and so are POSTs sent by another site's page (``Origin`` /
``Sec-Fetch-Site``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from foundation.errors import UsageError
from indexing.bundle import BundleError
from indexing.word_index import UnknownWord
from library.query import QueryError
from webapp import api, pages
from webapp.library import BadUpload, Library, NotFound
from webapp.render import HERE, SafeJSON, error_response, templates
from webapp.thumbnails import ThumbnailCache
from webapp.uploads import UploadTooLarge, limit_upload_body

DEFAULT_MAX_UPLOAD = 25 * 1024 * 1024
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
log = logging.getLogger("wordsight.webapp")


def guard(app):
    """Pure ASGI middleware: SECURITY_HEADERS on every HTTP response, and a clean 500 for any crash.

    Outside every other layer, so even the host check's refusal and an unexpected exception's answer
    carry the headers; the exception itself goes to the server's log as one line, never to the client.
    """

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    header for header in SECURITY_HEADERS if header[0] not in names
                ]
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        except Exception as err:  # whatever it was, the client gets one clean line
            log.error("unexpected error on %s: %s: %s", scope.get("path"), type(err).__name__, err)
            if started:
                raise
            message = "internal error: the server's log has the details"
            try:
                response = error_response(Request(scope), 500, message)
            except Exception:  # noqa: BLE001 - the error page itself failed: plain text then
                response = PlainTextResponse(message, status_code=500)
            await response(scope, receive, send_with_headers)

    return middleware


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SAME_SITE_FETCHES = {"same-origin", "none"}  # Sec-Fetch-Site of the app's own pages, and of a typed URL


def cross_site(headers: dict[bytes, bytes]) -> bool:
    """A request sent by another site's page. Browsers say where it comes from: ``Sec-Fetch-Site`` (every
    current one), else ``Origin`` (the app's own forms send ``null`` with ``Sec-Fetch-Site: same-origin``,
    since its pages send no referrer). Scripts and curl send neither and are not refused; the host check
    already keeps foreign hosts out."""
    fetch_site = headers.get(b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.decode("latin-1").lower() not in SAME_SITE_FETCHES
    origin = headers.get(b"origin")
    if origin is None:
        return False
    host = headers.get(b"host", b"").decode("latin-1").lower()
    return origin.decode("latin-1").lower().partition("://")[2] != host


def refuse_cross_site(app):
    """ASGI middleware: a POST (upload, tagging) from another site's page is refused with 403, so a web page
    the user visits cannot make this server decode images; the app's own forms and scripts still work."""

    async def middleware(scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and cross_site(dict(scope["headers"])):
            message = "cross-site request refused: use the wordsight page itself, or a script (no Origin header)"
            return await error_response(Request(scope), 403, message)(scope, receive, send)
        return await app(scope, receive, send)

    return middleware


def create_app(
    library: Library,
    thumbnails: ThumbnailCache,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """The app serving ``library``; ``allowed_hosts=["*"]`` when bound to the network on purpose."""
    app = FastAPI(
        title="wordsight",
        summary="Search your photos with words; tag photos; find similar photos.",
        description="The JSON API beside the pages. Results have the shapes of `search.py --json` "
        "(`{query, results: [{image, score}]}`) and `tag.py --json` (`{image, tags: [{word, score}]}`), "
        "each photo with its `id` for the other calls. Errors are `{error: MESSAGE}` with a 4xx/5xx status.",
        version="1",
        docs_url=None,  # FastAPI's Swagger page loads its code from a CDN: /docs is rendered here instead
        redoc_url=None,
        default_response_class=SafeJSON,
    )
    app.openapi = lambda: _openapi(app)
    app.state.library = library
    app.state.thumbnails = thumbnails
    app.state.max_upload_bytes = max_upload_bytes
    app.state.templates = templates()
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _error_handlers(app)
    # the last added is the outermost: guard (headers, crashes), the host check, the cross-site check, the
    # upload cap
    app.add_middleware(limit_upload_body, max_bytes=max_upload_bytes, paths=("/upload", "/api/tag"))
    app.add_middleware(refuse_cross_site)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOCAL_HOSTS)
    app.add_middleware(guard)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema without its 422 answers: invalid parameters are a 400 ``{error}`` here."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                           description=app.description, routes=app.routes)  # fmt: skip
        for methods in spec["paths"].values():
            for operation in methods.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            spec.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = spec
    return app.openapi_schema


def _error_handlers(app: FastAPI) -> None:
    respond = error_response

    @app.exception_handler(UnknownWord)
    async def unknown_word(request: Request, err: UnknownWord):
        return respond(request, 400, str(err), word=err.word, close_spellings=err.close)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, err: NotFound):
        return respond(request, 404, str(err))

    @app.exception_handler(BadUpload)
    @app.exception_handler(QueryError)
    async def bad_request(request: Request, err: Exception):
        return respond(request, 400, str(err))

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, err: UploadTooLarge):
        return respond(request, 413, err.detail)

    @app.exception_handler(BundleError)
    @app.exception_handler(UsageError)
    async def server_setup(request: Request, err: Exception):  # e.g. the index's checkpoint moved
        return respond(request, 503, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in err.errors()
        )
        return respond(request, 400, problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        message = err.detail if isinstance(err.detail, str) else "request failed"
        if err.status_code == 404 and message == "Not Found":
            message = f"no page at {request.url.path}"
        return respond(request, err.status_code, message)
