"""The pages: search, photo, upload, indexes, API docs, and the thumbnails they show.

Server-rendered (Jinja2, autoescaped) so every page works without JavaScript and its URL says what it
shows (``/?q=summer+dress&k=40&min=0.3`` can be bookmarked); ``static/app.js`` only adds the live
minimum-score slider, the index picker's auto-submit and drag-and-drop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from indexing.word_index import UnknownWord
from library.query import QueryError
from webapp.api import ID_PATTERN, MAX_K, FilterParams
from webapp.library import BadUpload, Library
from webapp.render import render as _render
from webapp.thumbnails import GRID, SIZES, BadImage, placeholder

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
PAGE_K = 40  # photos on a results page by default
TAGS_K = 15
SIMILAR_K = 12
THUMB_MAX_AGE = 600  # s; then the browser revalidates with the ETag (a 304 costs one stat)


def _library(request: Request) -> Library:
    return request.app.state.library


@router.get("/")
def search_page(
    request: Request,
    filters: FilterParams,
    q: str = Query("", max_length=500),
    index: str | None = None,
    k: int = Query(PAGE_K, ge=1, le=MAX_K),
    min: float = Query(-1.0, ge=-1.0, le=1.0),  # the URL's name for it
    semantic: bool = False,
):
    """All k results are sent; those under ``min`` are hidden, so the slider can bring them back live."""
    result, error, suggestions, status = None, None, [], 200
    if q.strip():
        try:
            result = _library(request).search(index, q, k, semantic=semantic, **filters.options())
        except UnknownWord as err:
            error, status = str(err), 400
            words = q.lower().split()
            suggestions = [(close, " ".join(close if w == err.word else w for w in words)) for close in err.close]
        except QueryError as err:
            error, status = str(err), 400
    fields = {"in": filters.folder or "", "after": filters.after or "", "before": filters.before or ""}
    return _render(request, "search.html", status, q=q, k=k, min=min, result=result, error=error,
                   suggestions=suggestions, filters=fields, semantic=semantic)  # fmt: skip


@router.get("/photo/{item}")
def photo_page(
    request: Request, item: str = Path(pattern=ID_PATTERN), index: str | None = None, semantic: bool = False
):
    """The photo's tags (tag.py's) and its most similar photos: visually similar, or the same kind of thing."""
    library = _library(request)
    tags = library.tags(index, item, TAGS_K)
    similar = library.similar(index, item, SIMILAR_K, semantic=semantic)
    return _render(request, "photo.html", item=item, tags=tags, similar=similar, semantic=semantic,
                   files=library.files(index, item))  # fmt: skip


@router.get("/upload")
def upload_form(request: Request):
    return _render(request, "upload.html", result=None, error=None, k=TAGS_K)


@router.post("/upload")
def upload_page(
    request: Request,
    file: Annotated[UploadFile, File()],
    index: str | None = Form(None),
    k: int = Form(TAGS_K, ge=1, le=MAX_K),
):
    try:
        result = _library(request).tag_upload(index, file.file.read(), file.filename or "upload", k, preview=320)
    except BadUpload as err:
        return _render(request, "upload.html", 400, result=None, error=str(err), k=k)
    return _render(request, "upload.html", result=result, error=None, k=k)


@router.get("/indexes")
def indexes_page(request: Request):
    summaries = [index.summary() for index in _library(request).indexes.values()]
    return _render(request, "indexes.html", summaries=summaries)


@router.get("/docs")
def api_docs(request: Request):
    """The OpenAPI description rendered here: FastAPI's own page would load its code from a CDN."""
    spec = request.app.openapi()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    return _render(request, "api_docs.html", spec=spec, operations=operations)


@router.get("/thumb/{item}", response_class=Response)
def thumbnail(
    request: Request,
    item: str = Path(pattern=ID_PATTERN),
    index: str | None = None,
    size: int = Query(GRID),
):
    """A photo's thumbnail by id: the path comes from the index, never from the request."""
    if size not in SIZES:
        return Response(f"size must be one of {', '.join(map(str, SIZES))}", status_code=400)
    path = _library(request).get(index).snapshot().path(item)
    try:
        thumb = request.app.state.thumbnails.get(path, size)
    except (OSError, BadImage):  # gone or unreadable since indexing: grey, and ask again next time
        return Response(placeholder(size), media_type="image/jpeg", headers={"Cache-Control": "no-store"})
    headers = {"ETag": f'"{thumb.etag}"', "Cache-Control": f"private, max-age={THUMB_MAX_AGE}"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(thumb.file.read_bytes(), media_type="image/jpeg", headers=headers)
