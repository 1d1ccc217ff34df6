"""The web app (serve.py) through FastAPI's test client: every endpoint, its errors and its safety rules.

A tiny colour-word space and a fake embedder (tests/fakes.py) stand in for the model: a red photo's
nearest word is "red", searching "red" finds the red photo first, all in milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import search
import tag
from indexing.build.driver import build_image_index
from tests.fakes import COLOURS, FakeEmbedder, install_fake_embedder_module, write_colour_images
from webapp.app import CSP, create_app
from webapp.library import Library, item_id
from webapp.thumbnails import GRID, LARGE, ThumbnailCache, decode_reduced

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_DIR = "<script>alert(1)<"  # with its file below, the shown name is <script>alert(1)</script>.png
HOSTILE_FILE = "script>.png"
QUOTES_FILE = "\"onmouseover=\"alert(2)'.png"


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    write_colour_images(folder)
    (folder / HOSTILE_DIR).mkdir()
    Image.new("RGB", (24, 24), (231, 21, 21)).save(folder / HOSTILE_DIR / HOSTILE_FILE)  # nearly red
    Image.new("RGB", (24, 24), (21, 41, 229)).save(folder / QUOTES_FILE)  # nearly blue
    return folder


class Loader:
    """Counts how often the app asks for the model: it must be once, however many uploads."""

    def __init__(self, embedder):
        self.embedder, self.calls = embedder, []

    def __call__(self, spec):
        self.calls.append(spec)
        return self.embedder


def make_client(indexes, space, tmp_path, **options) -> TestClient:
    loader = options.pop("loader", None) or Loader(space.embedder)
    library = Library.open(indexes, space.words_index, loader)
    app = create_app(library, ThumbnailCache(tmp_path / "thumbs"), **options)
    return TestClient(app, base_url="http://127.0.0.1:8765", raise_server_exceptions=False)


@pytest.fixture
def client(index, space, tmp_path) -> TestClient:
    return make_client([index], space, tmp_path)


def png_bytes(rgb, size=(24, 24), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def ids_of(client, query="red", k=20) -> dict[str, str]:
    """Photo file name -> id, from a search."""
    results = client.get("/api/search", params={"q": query, "k": k}).json()["results"]
    return {Path(r["image"]).name: r["id"] for r in results}


def assert_clean(response) -> None:
    """An error answer: security headers, no stack trace, no Python internals."""
    assert response.headers["content-security-policy"] == CSP
    text = response.text
    assert "Traceback" not in text and 'File "' not in text and "site-packages" not in text


# ---- the JSON API: search.py / tag.py shapes


def test_search_api_matches_search_py_json(client, index, space, capfd):
    response = client.get("/api/search", params={"q": "red yellow", "k": 4})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    record = response.json()
    assert set(record) == {"query", "results"} and record["query"] == "red yellow"
    assert all(set(r) == {"image", "score", "paths", "id"} for r in record["results"])
    assert all(r["id"] == item_id(r["image"]) for r in record["results"])
    args = ["red yellow", "--index", index, "--words-index", space.words_index, "--top-k", 4, "--json"]
    assert search.main([str(a) for a in args]) == 0
    (cli_record,) = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert [{k: r[k] for k in ("image", "score", "paths")} for r in record["results"]] == cli_record["results"]
    assert Path(record["results"][0]["image"]).name == "orange.png"  # between red and yellow


def test_search_top_k_and_min_score(client):
    everything = client.get("/api/search", params={"q": "red", "k": 500}).json()["results"]
    assert len(everything) == len(COLOURS) + 2  # k beyond the collection: all photos
    some = client.get("/api/search", params={"q": "red", "k": 500, "min_score": 0.5}).json()["results"]
    assert some and all(r["score"] >= 0.5 for r in some)
    assert some == [r for r in everything if r["score"] >= 0.5]
    assert len(client.get("/api/search", params={"q": "red", "k": 2}).json()["results"]) == 2


def test_unknown_word_is_400_with_close_spellings(client):
    response = client.get("/api/search", params={"q": "rde blue"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "unknown word 'rde' (close spellings: red)",
        "word": "rde",
        "close_spellings": ["red"],
    }
    page = client.get("/", params={"q": "rde blue"})
    assert page.status_code == 400 and "unknown word" in page.text
    assert 'href="/?q=red+blue&amp;index=idx&amp;k=40"' in page.text  # the suggestion, as a search
    assert_clean(page)


@pytest.mark.parametrize(
    "params", [{"q": ""}, {"q": "red", "k": 0}, {"q": "red", "k": "many"}, {"q": "red", "min_score": 2}, {}]
)
def test_bad_parameters_are_400_json(client, params):
    response = client.get("/api/search", params=params)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and response.json()["error"]
    assert_clean(response)


def test_tags_of_an_item_match_tag_py(client, space, photos, monkeypatch, capfd):
    red = ids_of(client)["red.png"]
    response = client.get(f"/api/items/{red}/tags", params={"k": 3})
    assert response.status_code == 200
    record = response.json()
    assert set(record) == {"image", "tags", "id"} and record["id"] == red
    assert record["image"] == str((photos / "red.png").resolve())
    install_fake_embedder_module(monkeypatch, space.embedder)  # tag.py with the index's own model
    args = [photos / "red.png", "--checkpoint", "fake", "--words-index", space.words_index, "--top-k", 3, "--json"]
    assert tag.main([str(a) for a in args]) == 0
    (cli_record,) = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert record["tags"] == cli_record["tags"] and record["tags"][0] == {"word": "red", "score": 1.0}


def test_similar_items_leave_the_photo_out(client):
    red = ids_of(client)["red.png"]
    record = client.get(f"/api/items/{red}/similar", params={"k": 3}).json()
    assert set(record) == {"query", "results", "id"} and record["query"].endswith("red.png")
    names = [Path(r["image"]).name for r in record["results"]]
    assert len(names) == 3 and "red.png" not in names and names[0] == HOSTILE_FILE  # the nearly red one
    scores = [r["score"] for r in record["results"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/0123456789abcdef/tags",  # well formed, not in the index
        "/api/items/0123456789abcdef/similar",
        "/api/items/..%2F..%2Fetc%2Fpasswd/tags",  # a path where an id belongs
        "/api/items/%2Fetc%2Fpasswd/similar",
        "/api/items/ZZZZ/tags",
    ],
)
def test_bad_ids_are_clean_errors(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404)
    assert set(response.json()) == {"error"} and "root:" not in response.text  # nothing was read there
    assert_clean(response)


@pytest.mark.parametrize(
    "path",
    [
        "/thumb/0123456789abcdef",
        "/thumb/..%2F..%2Fetc%2Fpasswd",
        "/thumb/../../etc/passwd",
        "/photo/0123456789abcdef",
        "/photo/%2Fetc%2Fpasswd",
        "/static/..%2F..%2Fwebapp%2Fapp.py",
        "/no-such-page",
    ],
)
def test_no_path_traversal_and_clean_error_pages(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404)
    assert response.headers["content-type"].startswith("text/html")
    assert "root:" not in response.text and "create_app" not in response.text
    assert_clean(response)


def test_unknown_index_is_404(client):
    response = client.get("/api/search", params={"q": "red", "index": "nope"})
    assert response.status_code == 404 and "served: idx" in response.json()["error"]


# ---- uploads


def test_tag_upload_gives_tags_and_similar_photos_and_keeps_nothing(client, photos, tmp_path):
    before = sorted(p for p in photos.rglob("*"))
    temp_before = set(Path(tempfile.gettempdir()).glob("wordsight-upload-*"))
    response = client.post("/api/tag", files={"file": ("mine.png", png_bytes((235, 25, 25)), "image/png")})
    assert response.status_code == 200
    record = response.json()
    assert set(record) == {"image", "tags", "similar"} and record["image"] == "mine.png"
    assert record["tags"][0]["word"] == "red"
    assert Path(record["similar"][0]["image"]).name in {"red.png", HOSTILE_FILE}
    assert sorted(p for p in photos.rglob("*")) == before  # nothing written into the photo folder
    assert set(Path(tempfile.gettempdir()).glob("wordsight-upload-*")) == temp_before  # nor left in /tmp


def test_upload_file_name_is_only_shown(client, photos):
    response = client.post("/api/tag", files={"file": ("../../../etc/x.png", png_bytes((20, 200, 40)))})
    assert response.status_code == 200 and response.json()["image"] == "x.png"
    assert not (photos.parent / "etc").exists() and not Path("/etc/x.png").exists()


def test_undecodable_file_names(tmp_path, space):
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("RGB", (24, 24), COLOURS["green"]).save(os.path.join(os.fsencode(folder), b"caf\xe9.png"))
    build_image_index([folder], tmp_path / "odd-idx", space.embedder, progress=False)
    client = make_client([tmp_path / "odd-idx"], space, tmp_path)
    response = client.get("/api/search", params={"q": "green"})
    assert response.status_code == 200 and response.json()["results"][0]["image"].endswith("caf\udce9.png")
    page = client.get("/", params={"q": "green"})
    assert page.status_code == 200 and "odd/caf\\xe9.png" in page.text  # shown with a backslash escape
    identifier = response.json()["results"][0]["id"]
    assert client.get(f"/thumb/{identifier}").headers["content-type"] == "image/jpeg"
    assert client.get(f"/photo/{identifier}").status_code == 200


def test_upload_page_and_model_loaded_once(index, space, tmp_path):
    loader = Loader(space.embedder)
    client = make_client([index], space, tmp_path, loader=loader)
    assert client.get("/upload").status_code == 200 and loader.calls == []  # lazily, on first upload
    for colour in ("blue", "green"):
        page = client.post("/upload", files={"file": (f"{colour}.jpg", png_bytes(COLOURS[colour], fmt="JPEG"))})
        assert page.status_code == 200
        first_tag = re.search(r'<ol class="tags" id="tags">\s*<li><a href="[^"]*">(\w+)</a>', page.text)
        assert first_tag and first_tag.group(1) == colour
        assert 'src="data:image/jpeg;base64,' in page.text  # the preview, from memory
    assert len(loader.calls) == 1


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is not an image at all", "not an image"),
        (png_bytes((1, 2, 3))[:60], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt PNG header"),
        (b"", "empty file"),
    ],
)
def test_corrupt_upload_is_400_with_reason(client, data, reason):
    response = client.post("/api/tag", files={"file": ("bad.jpg", data, "image/jpeg")})
    assert response.status_code == 400 and reason in response.json()["error"]
    assert_clean(response)
    page = client.post("/upload", files={"file": ("bad.jpg", data, "image/jpeg")})
    assert page.status_code == 400 and reason in page.text


def test_decompression_bomb_upload_is_refused(client):
    buffer = io.BytesIO()
    Image.new("1", (9500, 9500)).save(buffer, format="PNG")  # 90 Mpx in a few KB
    assert len(buffer.getvalue()) < 100_000
    response = client.post("/api/tag", files={"file": ("bomb.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 400 and "too large (9500x9500)" in response.json()["error"]


def test_oversized_upload_is_413_before_it_is_read(index, space, tmp_path):
    client = make_client([index], space, tmp_path, max_upload_bytes=100_000)
    big = os.urandom(300_000)
    response = client.post("/api/tag", files={"file": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "upload too large" in response.json()["error"]
    assert_clean(response)
    page = client.post("/upload", files={"file": ("big.jpg", big, "image/jpeg")})
    assert page.status_code == 413 and "upload too large" in page.text

    def chunked():  # no Content-Length: the cap is counted as the body streams in
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        for _ in range(10):
            yield os.urandom(30_000)
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/api/tag", content=chunked(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert response.status_code == 413
    small = client.post("/api/tag", files={"file": ("ok.png", png_bytes((20, 200, 40)), "image/png")})
    assert small.status_code == 200  # under the cap: fine


def test_upload_with_the_wrong_model_is_a_clean_503(index, space, tmp_path):
    other = FakeEmbedder(space.embedder.identity["vectors_source"], space.embedder.identity["vectors_sha"],
                         sha="otherckpt0000000")  # fmt: skip
    client = make_client([index], space, tmp_path, loader=Loader(other))
    response = client.post("/api/tag", files={"file": ("a.png", png_bytes((1, 2, 3)), "image/png")})
    assert response.status_code == 503 and "--checkpoint" in response.json()["error"]


# ---- pages, escaping, headers


def test_search_page_grid(client):
    page = client.get("/", params={"q": "red", "k": 5, "min": 0.5})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    figures = re.findall(r'<figure class="hit" data-score="([0-9.-]+)"( hidden)?>', page.text)
    assert len(figures) == 5
    assert all((float(score) < 0.5) == bool(hidden) for score, hidden in figures)  # slider state in the URL
    assert page.text.count('<img src="/thumb/') == 5
    assert 'value="red"' in page.text and 'value="0.5"' in page.text  # the form shows the bookmarked query


def test_hostile_file_names_and_queries_show_as_text(client):
    page = client.get("/", params={"q": "red blue", "k": 20})
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page.text
    assert QUOTES_FILE not in page.text and "&#34;onmouseover=&#34;alert(2)&#39;.png" in page.text
    ids = ids_of(client, "red blue")
    photo = client.get(f"/photo/{ids[HOSTILE_FILE]}")
    assert photo.status_code == 200 and "<script>alert" not in photo.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in photo.text
    query = client.get("/", params={"q": "<script>alert(3)</script>"})
    assert query.status_code == 400 and "<script>alert(3)" not in query.text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in query.text
    upload = client.post("/upload", files={"file": ("<img src=x onerror=alert(4)>.png", png_bytes((9, 9, 9)))})
    assert upload.status_code == 200 and "<img src=x" not in upload.text and "&lt;img src=x" in upload.text


def test_security_headers_everywhere(client):
    red = ids_of(client)["red.png"]
    paths = ["/", "/?q=red", f"/photo/{red}", "/upload", "/indexes", "/docs", "/static/app.js",
             f"/thumb/{red}", "/api/search?q=red", "/api/indexes", "/nowhere", "/api/search?q=zzzz"]  # fmt: skip
    for path in paths:
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert response.headers["x-content-type-options"] == "nosniff", path
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    for path in ("/", f"/photo/{red}", "/upload", "/docs"):  # nothing inline for the CSP to block
        text = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", text) and "<style" not in text and " style=" not in text
        assert not re.search(r"\son[a-z]+=", text.replace("onmouseover=&#34;", ""))


def test_foreign_host_header_is_refused(client):
    response = client.get("/api/search", params={"q": "red"}, headers={"host": "evil.example:8765"})
    assert response.status_code == 400  # DNS rebinding: a foreign page cannot read the photos
    assert client.get("/api/search", params={"q": "red"}, headers={"host": "localhost:8765"}).status_code == 200


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"origin": "http://evil.example"}, 403),  # another site's page posting to the local server
        ({"sec-fetch-site": "cross-site"}, 403),
        ({"origin": "null", "sec-fetch-site": "cross-site"}, 403),
        ({"origin": "null", "sec-fetch-site": "same-origin"}, 200),  # the app's own form (no referrer sent)
        ({"origin": "http://127.0.0.1:8765"}, 200),  # an older browser on the app's own page
        ({}, 200),  # a script: no Origin
    ],
)
def test_cross_site_posts_are_refused(client, headers, status):
    upload = {"file": ("red.png", png_bytes(COLOURS["red"]), "image/png")}
    response = client.post("/api/tag", files=upload, headers=headers)
    assert response.status_code == status
    page = client.post("/upload", files=upload, headers=headers)
    assert page.status_code == status
    if status == 403:
        assert "cross-site request refused" in response.json()["error"] and "cross-site" in page.text
        assert_clean(page)


def test_uploads_are_decoded_one_at_a_time(index, space, tmp_path, monkeypatch):
    """Tagging and the preview of one upload never overlap another's decoding: a small file can decode
    into a large image, so concurrent uploads would add up."""
    import webapp.library

    decoding = {"now": 0, "most": 0}

    def counted(work):
        def run(*args, **kwargs):
            decoding["now"] += 1
            decoding["most"] = max(decoding["most"], decoding["now"])
            time.sleep(0.03)
            try:
                return work(*args, **kwargs)
            finally:
                decoding["now"] -= 1

        return run

    slow = FakeEmbedder(space.embedder.identity["vectors_source"], space.embedder.identity["vectors_sha"])
    slow.embed_paths = counted(slow.embed_paths)
    monkeypatch.setattr(webapp.library, "render", counted(webapp.library.render))
    client = make_client([index], space, tmp_path, loader=Loader(slow))
    codes = []

    def upload():
        files = {"file": ("red.png", png_bytes(COLOURS["red"]), "image/png")}
        codes.append(client.post("/upload", files=files).status_code)

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 6 and decoding["most"] == 1


SERVE_WITH_FAKE_MODEL = """
import sys, types
from foundation.vectors import load_word_vectors
from tests.fakes import FakeEmbedder
vectors = load_word_vectors(sys.argv[1])
module = types.ModuleType("models.embedder")
module.load_embedder = lambda spec=None, **options: FakeEmbedder(vectors.source, vectors.sha)
sys.modules["models.embedder"] = module
from wordsight.serve import main
sys.exit(main(sys.argv[2:]))
"""


def test_concurrent_large_uploads_do_not_add_up_and_memory_is_given_back(tmp_path, index, space):
    """A small PNG that decodes large, uploaded 8 times at once to serve.py: the server's peak memory is
    about one upload's, not eight, and what the decodes took is given back afterwards."""
    import httpx

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 4000), (120, 30, 200)).save(buffer, format="PNG")  # 16 Mpx in ~50 KB
    big = buffer.getvalue()
    command = [sys.executable, "-c", SERVE_WITH_FAKE_MODEL, str(space.glove), "--index", str(index),
               "--words-index", str(space.words_index), "--port", "0"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip

    def memory(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+)", Path(f"/proc/{server.pid}/status").read_text()).group(1)) * 1024

    try:
        line = ""
        while "serving" not in line:
            line = server.stderr.readline()
            assert line, "the server ended"
        port = re.search(r":(\d+)/ ", line).group(1)
        url = f"http://127.0.0.1:{port}/api/tag"

        def upload(data=big):
            response = httpx.post(url, files={"file": ("u.png", data, "image/png")}, timeout=120)
            assert response.status_code == 200

        upload(png_bytes((1, 2, 3)))  # the model is loaded
        base = memory("VmRSS")
        upload()
        one = memory("VmHWM") - base
        threads = [threading.Thread(target=upload) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        eight, kept = memory("VmHWM") - base, memory("VmRSS") - base
        assert one > 100 * 2**20  # the decode is large enough to see
        assert eight < 1.5 * one, (one >> 20, eight >> 20)
        assert kept < 0.3 * one, (one >> 20, kept >> 20)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


@pytest.mark.parametrize("query, message", [("- red", "only subtracts"), ("red - red", "cancels out")])
def test_queries_that_negate_everything_are_refused(client, index, space, query, message, capfd):
    response = client.get("/api/search", params={"q": query})
    assert response.status_code == 400 and message in response.json()["error"]
    assert message in client.get("/", params={"q": query}).text
    assert search.main([query, "--index", str(index), "--words-index", str(space.words_index)]) == 2
    err = capfd.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unexpected_errors_are_clean(client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internals /home/someone/boom.py")

    monkeypatch.setattr(Library, "search", boom)
    for path in ("/api/search?q=red", "/?q=red"):
        response = client.get(path)
        assert response.status_code == 500 and "internal error" in response.text
        assert "secret" not in response.text
        assert_clean(response)


def test_photo_page_shows_tags_linking_to_searches_and_similar(client):
    red = ids_of(client)["red.png"]
    page = client.get(f"/photo/{red}")
    assert page.status_code == 200
    assert '<a href="/?q=red&amp;index=idx">red</a>' in page.text
    assert f'src="/thumb/{red}?index=idx&amp;size={LARGE}"' in page.text
    assert page.text.count('<figure class="hit"') == 9  # 12 similar asked, 9 other photos in the index


def test_filter_fields_similar_switch_and_bad_days(client, photos):
    page = client.get("/", params={"q": "red - 0.5:blue", "in": str(photos), "after": "2000-01-01", "before": ""})
    assert page.status_code == 200 and 'value="2000-01-01"' in page.text and page.text.count('class="hit"') > 1
    assert f'value="{photos}"' in page.text  # the fields keep what was searched
    for name in ("after", "before"):
        bad = client.get("/api/search", params={"q": "red", name: "yesterday"})
        assert bad.status_code == 400 and "not a day like" in bad.json()["error"]
    red = ids_of(client)["red.png"]
    assert "visually similar" in client.get(f"/photo/{red}").text
    semantic = client.get(f"/photo/{red}", params={"semantic": "true"}).text
    assert "the same kind of thing" in semantic and "show visually similar photos" in semantic


def test_indexes_picker_summary_and_docs(index, space, tmp_path):
    other = tmp_path / "more" / "idx"  # same folder name: served as idx-2
    build_image_index([tmp_path / "photos" / "red.png"], other, space.embedder, progress=False)
    client = make_client([index, other], space, tmp_path)
    summaries = client.get("/api/indexes").json()
    assert [s["name"] for s in summaries] == ["idx", "idx-2"]
    assert [s["count"] for s in summaries] == [len(COLOURS) + 2, 1]
    assert summaries[0]["model"] == "fake:colour" and summaries[0]["created"]
    page = client.get("/indexes")
    assert page.status_code == 200 and "idx-2" in page.text and "fake:colour" in page.text
    assert '<option value="idx-2"' in client.get("/").text  # the picker, with several indexes
    found = client.get("/api/search", params={"q": "blue", "index": "idx-2"}).json()["results"]
    assert [Path(r["image"]).name for r in found] == ["red.png"]
    assert "1 photos" in client.get("/?index=idx-2").text
    docs = client.get("/docs")
    assert docs.status_code == 200
    for endpoint in ("GET /api/search", "GET /api/items/{item}/tags", "GET /api/items/{item}/similar",
                     "POST /api/tag", "GET /api/indexes"):  # fmt: skip
        assert endpoint in docs.text
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/tag", "/api/items/{item}/tags", "/api/items/{item}/similar"} <= set(spec["paths"])
    answers = {code for methods in spec["paths"].values() for op in methods.values() for code in op["responses"]}
    assert "422" not in answers and {"200", "400", "404", "413"} <= answers  # bad parameters are 400s here


# ---- thumbnails


def test_thumbnails_cached_atomically_with_etag(client, photos, tmp_path):
    red = ids_of(client)["red.png"]
    first = client.get(f"/thumb/{red}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.headers["cache-control"].startswith("private, max-age=")
    etag = first.headers["etag"]
    cached = list((tmp_path / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1 and not list((tmp_path / "thumbs").rglob("*.tmp"))
    mtime = cached[0].stat().st_mtime_ns
    again = client.get(f"/thumb/{red}")
    assert again.content == first.content and cached[0].stat().st_mtime_ns == mtime  # from the cache
    assert client.get(f"/thumb/{red}", headers={"if-none-match": etag}).status_code == 304
    Image.new("RGB", (24, 24), (0, 0, 0)).save(photos / "red.png")  # edited: new size/mtime, new key
    os.utime(photos / "red.png", ns=(1, 1))
    changed = client.get(f"/thumb/{red}")
    assert changed.headers["etag"] != etag and changed.content != first.content
    assert client.get(f"/thumb/{red}", params={"size": 999}).status_code == 400
    (photos / "blue.png").unlink()  # gone since indexing: a grey placeholder, not cached
    gone = client.get(f"/thumb/{ids_of(client, 'blue')['blue.png']}")
    assert gone.status_code == 200 and gone.headers["cache-control"] == "no-store"


def test_thumbnail_sizes(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1000), (10, 120, 200)).save(big, quality=90)
    reduced = decode_reduced(big, GRID)
    assert reduced.size == (500, 250)  # DCT-scaled by 1/4: the smallest scale keeping both sides >= GRID
    cache = ThumbnailCache(tmp_path / "cache")
    thumb = Image.open(cache.get(str(big), GRID).file)
    assert max(thumb.size) == GRID and thumb.size == (160, 80)
    small = tmp_path / "small.png"
    Image.new("RGB", (28, 28), (1, 2, 3)).save(small)
    assert decode_reduced(small, GRID).size == (28, 28)  # not a JPEG: the shared loader, never enlarged
    assert Image.open(cache.get(str(small), GRID).file).size == (28, 28)


# ---- an index rebuilt underneath


def test_rebuilt_index_is_picked_up_and_in_flight_queries_finish(client, index, space, photos):
    before = client.get("/api/search", params={"q": "red", "k": 500}).json()["results"]
    snapshot = client.app.state.library.get("idx").snapshot()  # what a request under way holds
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            response = client.get("/api/search", params={"q": "green", "k": 3})
            if response.status_code != 200:
                errors.append(response.text)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        Image.new("RGB", (24, 24), (229, 19, 19)).save(photos / "new-red.png")
        for _ in range(3):
            build_image_index([photos], index, space.embedder, update=True, progress=False)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    after = client.get("/api/search", params={"q": "red", "k": 500}).json()["results"]
    assert len(after) == len(before) + 1 and "new-red.png" in {Path(r["image"]).name for r in after}
    assert len(snapshot.images.nearest(np.ones(8), 500)) == len(before)  # the old generation still answers
    assert client.get("/api/indexes").json()[0]["count"] == len(before) + 1
    old_id = next(r["id"] for r in before if r["image"].endswith("/red.png"))
    assert client.get(f"/api/items/{old_id}/tags").status_code == 200  # ids survive a rebuild


def test_a_rebuild_that_cannot_be_used_keeps_the_previous_index(client, index, space, tmp_path, caplog):
    from indexing.word_index import build_word_index
    from tests.fakes import write_glove

    before = client.get("/api/search", params={"q": "red"}).json()
    other = write_glove(tmp_path / "other.txt", extra_words=5)  # other vectors: another sha
    build_word_index(space.words_index, vectors=str(other), force=True)
    for _ in range(3):
        assert client.get("/api/search", params={"q": "red"}).json() == before
    warnings = [r for r in caplog.records if "still serving the previous one" in r.getMessage()]
    assert len(warnings) == 1  # tried once per new generation, not on every request


# ---- serve.py itself


def run_serve(*args, timeout=60):
    return subprocess.run([sys.executable, "serve.py", *map(str, args)], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip


def test_serve_help_and_user_errors(tmp_path, index, space):
    done = run_serve("--help")
    assert done.returncode == 0 and "--host" in done.stdout and "--max-upload-mb" in done.stdout
    done = run_serve("--index", tmp_path / "none", "--words-index", space.words_index)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no index at" in done.stderr
    mine = tmp_path / "mine"  # a folder of the user's is never built over by the word index
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    done = run_serve("--index", index, "--words-index", mine)
    assert done.returncode == 2 and "refusing to replace it" in done.stderr and done.stderr.count("\n") == 1
    assert (mine / "notes.txt").read_text() == "mine"
    for option, value, says in (("--port", 99999, "not a TCP port"), ("--max-upload-mb", "nan", "not a size")):
        done = run_serve("--index", index, option, str(value))
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_serve("--index", index, "--words-index", space.words_index, "--port", port)
    assert done.returncode == 2 and "another --port" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_serve_answers_and_stops_cleanly_on_ctrl_c(tmp_path, index, space, host):
    import httpx

    # no --words-index, and the user cache is empty: the word index is built on first use, as tag.py does
    command = [sys.executable, "serve.py", "--index", str(index),
               "--port", "0", "--host", host, "--thumbnail-cache", str(tmp_path / "thumbs")]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    try:
        lines = []
        while not any("serving" in line for line in lines):
            line = server.stderr.readline()
            assert line, f"server ended: {''.join(lines)}"
            lines.append(line)
        assert ("visible to every machine" in "".join(lines)) == (host == "0.0.0.0")
        assert "no word index at" in "".join(lines) and "building it once" in "".join(lines)
        port = re.search(r":(\d+)/ \(Ctrl-C stops\)", lines[-1]).group(1)
        response = httpx.get(f"http://127.0.0.1:{port}/api/search", params={"q": "red", "k": 1}, timeout=30)
        assert response.status_code == 200 and response.json()["results"][0]["score"] == 1.0
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
        rest = server.stderr.read()
        assert "stopped" in rest and "Traceback" not in rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
