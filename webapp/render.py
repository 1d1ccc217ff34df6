"""Rendering shared by the pages, the API and the error handlers: templates, JSON, the error answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

from foundation.images import IMAGE_EXTENSIONS, printable
from webapp.library import Library

HERE = Path(__file__).resolve().parent


class SafeJSON(JSONResponse):
    """JSON with non-ASCII escaped: file names with undecodable bytes (lone surrogates) still encode."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["printable"] = printable
    env.filters["code"] = lambda text: Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text or ""))))
    env.filters["short"] = lambda path: printable("/".join(str(path).rsplit("/", 2)[-2:]))
    # what the upload form offers: browsers know no image/* type for HEIC or camera RAW files
    env.globals["accepted"] = ",".join(["image/*", *sorted(IMAGE_EXTENSIONS)])
    return Jinja2Templates(env=env)


def pages_context(request: Request) -> dict:
    """What every page shows: the served indexes (picker) and the chosen one's manifest summary."""
    library: Library = request.app.state.library
    name = request.query_params.get("index") or library.default
    if name not in library.indexes:
        name = library.default
    try:
        summary = library.get(name).summary()
    except Exception:  # noqa: BLE001 - an error page must render even if the index is in trouble
        summary = None
    return {"indexes": list(library.indexes), "index": name, "summary": summary}


def render(request: Request, name: str, status_code: int = 200, **context):
    """The template ``name`` with the index picker's context; autoescaped."""
    context = {**pages_context(request), **context}
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


def error_response(request: Request, status: int, message: str, **extra):
    """``{"error": message, ...}`` for the API, the error page for everything else."""
    if request.url.path.startswith("/api") or request.url.path == "/openapi.json":
        return SafeJSON({"error": message, **extra}, status_code=status)
    return render(request, "error.html", status, status=status, message=message, **extra)
