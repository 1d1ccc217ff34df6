"""The web app in a real browser: Playwright driving Debian's chromium against a real uvicorn server.

The server runs on a free loopback port in a thread of this process (so the fake embedder of
tests/fakes.py stands in for the model) and is stopped by the fixture, also when a test fails.
Playwright's own browser download is not used: ``executable_path`` points at the system chromium.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from indexing.build.driver import build_image_index
from tests.fakes import COLOURS, colour_space
from webapp.app import create_app
from webapp.library import Library
from webapp.server import bind, url_of
from webapp.thumbnails import ThumbnailCache

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make system-deps)")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
HOSTILE = "<script>alert(1)</script>.png"  # a folder "<script>alert(1)<" holding "script>.png"


def write_photos(folder: Path) -> None:
    """One 64 px photo per colour, two shades each, plus one with a hostile name."""
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for shade, k in ((0, "a"), (12, "b")):
            colour = tuple(max(0, c - shade) for c in rgb)
            Image.new("RGB", (64, 64), colour).save(folder / name / f"{name}-{k}.jpg", quality=95)
    (folder / "<script>alert(1)<").mkdir()
    Image.new("RGB", (64, 64), (225, 25, 25)).save(folder / "<script>alert(1)<" / "script>.png")


@pytest.fixture
def server(tmp_path):
    """A real uvicorn server on 127.0.0.1:<free port>; yields its URL; always stopped afterwards."""
    import uvicorn

    space = colour_space(tmp_path)
    write_photos(tmp_path / "photos")
    build_image_index([tmp_path / "photos"], tmp_path / "idx", space.embedder, progress=False)
    library = Library.open([tmp_path / "idx"], space.words_index, lambda spec: space.embedder)
    app = create_app(library, ThumbnailCache(tmp_path / "thumbs"))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def page(tmp_path):
    """A fresh headless chromium page; console errors (e.g. CSP violations) and dialogs are recorded."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.problems = []
            tab.on("console", lambda m: m.type == "error" and tab.problems.append(m.text))
            tab.on("pageerror", lambda e: tab.problems.append(str(e)))
            tab.on("dialog", lambda d: (tab.problems.append(f"dialog: {d.message}"), d.dismiss()))
            tab.set_default_timeout(20_000)
            yield tab
        finally:
            browser.close()


def loaded_thumbnails(page) -> int:
    return page.evaluate(
        "() => [...document.querySelectorAll('#grid .hit:not([hidden]) img')]"
        ".filter(img => img.complete && img.naturalWidth > 0).length"
    )


def test_search_grid_photo_page_and_slider(server, page, tmp_path):
    page.goto(server + "/")
    page.fill("input[name=q]", "red")
    page.press("input[name=q]", "Enter")
    page.wait_for_selector("#grid .hit img")
    page.wait_for_function("() => [...document.images].every(img => img.complete)")
    assert page.locator("#grid .hit").count() == 2 * len(COLOURS) + 1  # top 40 of 17 photos: all
    assert loaded_thumbnails(page) == 2 * len(COLOURS) + 1
    assert "q=red" in page.url  # the query is in the URL: bookmarkable
    assert page.locator("#grid .name").first.inner_text() in {"red/red-a.jpg", HOSTILE}
    assert page.get_by_text(HOSTILE, exact=True).count() == 1  # the hostile name shows as text
    shot = tmp_path / "webapp_search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1200

    page.locator("#min-score").fill("0.9")  # the slider hides low scores live and updates the URL
    assert 0 < loaded_thumbnails(page) < 2 * len(COLOURS) + 1
    assert "min=0.9" in page.url
    page.reload()
    assert 0 < page.locator("#grid .hit:not([hidden])").count() < 2 * len(COLOURS) + 1  # bookmarked state

    page.locator("#grid .hit a").first.click()
    page.wait_for_selector("#tags li")
    tags = page.locator("#tags li a").all_inner_texts()
    assert tags[0] == "red" and len(tags) > 3
    page.wait_for_function("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    page.locator("#tags li a", has_text="orange").click()  # each tag searches for itself
    page.wait_for_selector("#grid .hit")
    assert page.locator("#grid .name").first.inner_text().startswith("orange/")
    assert page.problems == []


def test_upload_shows_tags_and_similar(server, page, tmp_path):
    photo = tmp_path / "my photo.png"
    Image.new("RGB", (80, 60), COLOURS["blue"]).save(photo)
    page.goto(server + "/upload")
    page.set_input_files("#file", str(photo))  # choosing a file sends the form (app.js)
    page.wait_for_selector("#tags li")
    assert page.locator("#tags li a").first.inner_text() == "blue"
    assert page.locator("#upload-name").inner_text() == "my photo.png"
    assert page.locator("#similar .name").first.inner_text().startswith("blue/")
    page.wait_for_function("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    assert page.problems == []


def test_unknown_word_suggests_spellings(server, page):
    response = page.goto(server + "/?q=rde")
    assert response.status == 400 and "close spellings: red" in page.locator("#error").inner_text()
    assert [p for p in page.problems if "status of 400" not in p] == []  # the page's own status only
    page.problems.clear()
    page.locator("#error a", has_text="red").click()
    page.wait_for_selector("#grid .hit")
    assert page.locator("#grid .hit").count() > 0 and page.problems == []


def test_search_box_speaks_the_query_syntax_with_filters(server, page, tmp_path):
    page.goto(server + "/")
    page.fill("input[name=q]", "red + 2:yellow - blue")
    page.fill("#filter-in", str(tmp_path / "photos" / "orange"))
    page.click("button[type=submit]")
    page.wait_for_selector("#grid .hit")
    names = page.locator("#grid .name").all_inner_texts()
    assert len(names) == 2 and all(name.startswith("orange/") for name in names)  # only that folder
    page.locator("#grid .hit a").first.click()
    page.wait_for_selector("#similar-switch a")
    page.click("#search-with")  # the photo's id as an image term
    page.wait_for_selector("#grid .hit")
    assert page.locator("#grid .name").first.inner_text().startswith("orange/")
    assert page.problems == []


def test_an_upload_from_another_site_is_refused(server, page, tmp_path):
    photo = tmp_path / "x.png"
    Image.new("RGB", (32, 32), COLOURS["red"]).save(photo)
    page.set_content(f'<form method="post" action="{server}/upload" enctype="multipart/form-data">'
                     '<input type="file" name="file" id="file"><button id="send">send</button></form>')  # fmt: skip
    page.set_input_files("#file", str(photo))
    with page.expect_navigation():
        page.click("#send")
    assert "cross-site request refused" in page.content()
