"""Bounds on what uploads cost: bytes read, images decoded at once, and memory kept afterwards.

The size cap is enforced on the request body as it streams in, before anything is parsed or spooled: a
declared ``Content-Length`` over the cap is refused at once; a body without one (chunked) is counted and
stopped at the cap. Either way the client gets 413 with one line, and at most the cap (plus a little for
the form's own fields) is ever read. The decompression-bomb guard is the shared image loader's.

A small file can decode into a large image (an 86 KB PNG of 9400x9400 pixels takes ~0.9 GB to decode and
scale), so uploads are decoded one at a time (``decoding_one_upload``), and the memory a decode took is
handed back to the system afterwards: the model's allocator tuning would otherwise keep it for the next
inference, and a few concurrent uploads held gigabytes.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections.abc import Iterator

from starlette.exceptions import HTTPException

FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the small form fields around the file


class UploadTooLarge(HTTPException):
    """413. An HTTPException so that FastAPI's form parsing passes it on instead of calling it a bad body."""

    def __init__(self, max_bytes: int):
        shown = f"{max_bytes / 2**20:g} MB" if max_bytes >= 2**20 else f"{max_bytes / 1024:g} KB"
        super().__init__(413, f"upload too large: at most {shown} per photo (serve.py --max-upload-mb)")


def limit_upload_body(app, max_bytes: int, paths: tuple[str, ...]):
    """ASGI middleware: POST bodies to ``paths`` may hold ``max_bytes`` of file (plus FORM_OVERHEAD)."""
    limit = max_bytes + FORM_OVERHEAD

    async def middleware(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in paths:
            return await app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        refuse_now = declared is not None and (not declared.isdigit() or int(declared) > limit)
        received = 0

        async def counted():
            # raised inside the form parser's read: the app's handler renders the 413 (page or JSON)
            nonlocal received
            if refuse_now:
                raise UploadTooLarge(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise UploadTooLarge(max_bytes)
            return message

        return await app(scope, counted, send)

    return middleware



_DECODING = threading.BoundedSemaphore(1)
_M_ARENA_MAX = -8  # glibc's mallopt parameter


@contextlib.contextmanager
def decoding_one_upload() -> Iterator[None]:
    """Hold while an upload is decoded (tagged, previewed): one at a time; afterwards memory goes back."""
    with _DECODING:
        try:
            yield
        finally:
            give_memory_back()


def give_memory_back() -> None:
    """Return the heap's free pages to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def share_malloc_arenas(arenas: int = 2) -> None:
    """Let the server's request threads share ``arenas`` glibc heaps. With one heap per thread (the
    default), each kept what its requests had freed: 8 concurrent 9400x9400 uploads peaked at 1265 MB and
    held 646 MB afterwards, against 884 MB and 197 MB with two. Call before the threads start."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
