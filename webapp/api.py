"""The JSON API, for scripts: search, tags of a photo, similar photos, tag an uploaded photo.

Shapes follow ``search.py --json`` and ``tag.py --json``; every photo also carries its ``id`` (stable
across rebuilds) for the other calls and for ``/thumb/{id}``. Documented at ``/docs`` (``/openapi.json``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from webapp.library import Library

MAX_K = 500
ID_PATTERN = "^[0-9a-f]{16}$"

router = APIRouter(prefix="/api", tags=["api"])


class Error(BaseModel):
    error: str = Field(description="one line saying what went wrong and, where it can, how to fix it")


class UnknownWordError(Error):
    word: str | None = Field(None, description="the word that is not in the word index")
    close_spellings: list[str] = Field([], description="known words spelled like it")


class Photo(BaseModel):
    image: str = Field(description="the photo's file (absolute path, as indexed)")
    score: float = Field(description="cosine similarity, -1..1, rounded to 4 decimals")
    paths: list[str] = Field(description="every file of the photo: a RAW+JPEG pair's JPEG (what it was embedded "
                             "from), then its RAW; else the image alone")
    id: str = Field(description="the photo's id: /api/items/{id}/tags, /thumb/{id}")


class Tag(BaseModel):
    word: str
    score: float = Field(description="cosine similarity (a ConSE model adds the WordNet hierarchy's share, up "
                         "to ~2.5), rounded to 4 decimals")


class SearchResult(BaseModel):
    query: str = Field(description="the query searched for, or for similar photos the photo's file")
    results: list[Photo] = Field(description="best first")


class SimilarResult(SearchResult):
    id: str = Field(description="the id of the photo the others are similar to")


class TagResult(BaseModel):
    image: str = Field(description="the photo's file")
    tags: list[Tag] = Field(description="nearest words, best first")
    id: str


class UploadResult(BaseModel):
    image: str = Field(description="the uploaded file's name, as the client sent it")
    tags: list[Tag] = Field(description="nearest words, best first")
    similar: list[Photo] = Field(description="the index's photos nearest to the upload, best first")


class IndexSummary(BaseModel):
    name: str = Field(description="what ?index= takes")
    path: str
    count: int = Field(description="photos in the index")
    model: str | None = Field(description="what embedded the photos")
    checkpoint: str | None
    created: str | None = Field(description="when the index was built")
    sources: list[str]
    skipped: int = Field(description="files left out at build time (unreadable)")
    recall_at_10: float | None = Field(description="Annoy recall@10 vs exact search, measured at build time")


ERRORS = {400: {"model": Error}, 404: {"model": Error}, 503: {"model": Error}}
INDEX = Query(None, description="which served index (GET /api/indexes); default: the first")
K = Query(10, ge=1, le=MAX_K, description="how many results")
MIN_SCORE = Query(-1.0, ge=-1.0, le=1.0, description="leave out results scoring below this")
ITEM = Path(pattern=ID_PATTERN, description="a photo id from a search result")
SEMANTIC = Query(False, description="photos of the same kind of thing (word space) instead of visually similar ones")


class Filters:
    """The folder and date filters of ``search.py --in/--after/--before``, as query parameters."""

    def __init__(
        self,
        folder: str | None = Query(None, alias="in", max_length=4096, description="only photos in this folder or below it"),
        after: str | None = Query(None, description="only photos taken on or after this day (YYYY-MM-DD)"),
        before: str | None = Query(None, description="only photos taken on or before this day (YYYY-MM-DD)"),
    ):
        self.folder = folder or None
        self.after, self.before = parse_day(after, "after"), parse_day(before, "before")

    def options(self) -> dict:
        return {"folder": self.folder, "after": self.after, "before": self.before}


FilterParams = Annotated[Filters, Depends()]


def parse_day(text: str | None, name: str) -> dt.date | None:
    """A day from a form field; an empty field is no filter."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"{name}: {text[:40]!r} is not a day like 2024-12-31") from None


def _library(request: Request) -> Library:
    return request.app.state.library


@router.get("/indexes", response_model=list[IndexSummary], summary="The served indexes")
def indexes(request: Request):
    """Each served index with its manifest summary: photo count, model, when it was built."""
    return [index.summary() for index in _library(request).indexes.values()]


@router.get(
    "/search",
    response_model=SearchResult,
    summary="Photos nearest to a query",
    responses={**ERRORS, 400: {"model": UnknownWordError, "description": "unknown word (close spellings)"}},
)
def search(
    request: Request,
    filters: FilterParams,
    q: str = Query(min_length=1, max_length=500, description='a word, several ("summer dress") averaged, '
                   'arithmetic ("beach + 2:sunset - people"), a photo id as an image term'),
    index: str | None = INDEX,
    k: int = K,
    min_score: float = MIN_SCORE,
    semantic: bool = SEMANTIC,
):
    """Like `search.py QUERY --json` with `--in`, `--after`, `--before`, `--semantic`: a lone photo id
    finds visually similar photos. An unknown word is a 400 naming close spellings."""
    return _library(request).search(index, q, k, min_score, semantic=semantic, **filters.options())


@router.get("/items/{item}/tags", response_model=TagResult, summary="Tags of a photo", responses=ERRORS)
def tags(request: Request, item: str = ITEM, index: str | None = INDEX, k: int = K):
    """Like `tag.py PHOTO --json` with the index's own model: a ConSE model's WordNet tags embed the photo's
    file again (its class probabilities are not stored), a trained model's come from the stored vector."""
    return _library(request).tags(index, item, k)


@router.get(
    "/items/{item}/similar", response_model=SimilarResult, summary="Photos similar to a photo", responses=ERRORS
)
def similar(
    request: Request, item: str = ITEM, index: str | None = INDEX, k: int = K, min_score: float = MIN_SCORE,
    semantic: bool = SEMANTIC,
):  # fmt: skip
    """Like `search.py PHOTO --json` (visually similar; `semantic`: like `--semantic`); the photo itself is
    left out."""
    return _library(request).similar(index, item, k, min_score, semantic)


@router.post(
    "/tag",
    response_model=UploadResult,
    summary="Tag an uploaded photo",
    responses={**ERRORS, 413: {"model": Error, "description": "over the upload size cap"}},
)
def tag_upload(
    request: Request,
    file: Annotated[UploadFile, File(description="a JPEG, PNG, GIF, WebP, BMP or TIFF photo")],
    index: str | None = Form(None, description="which served index; default: the first"),
    k: int = Query(10, ge=1, le=MAX_K, description="how many tags and similar photos"),
):
    """Tags (as `tag.py` gives them) and the most similar photos of a photo that is not in the index. The photo is not kept:
    it is held in memory (or the server's private temp folder) for the request only. The first upload
    loads the index's image model (seconds); later ones take milliseconds plus the model's run."""
    data = file.file.read()
    return _library(request).tag_upload(index, data, file.filename or "upload", k)
