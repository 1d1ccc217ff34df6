"""Galleries: the HTML renders in a real browser with the expected images, and the contact sheet has them.

Each test image is one solid colour, so counting colours in a screenshot counts the thumbnails shown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import search
import tag
from indexing.build.driver import build_image_index
from tests.fakes import COLOURS, colour_space, install_fake_embedder_module, write_colour_images

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BLOCK = 0.5 * 160 * 160  # pixels of one colour that make a thumbnail (thumbnails are 160 x 160)


@pytest.fixture
def setup(tmp_path):
    space = colour_space(tmp_path)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    build_image_index([photos], tmp_path / "idx", space.embedder, progress=False)
    return space, photos, tmp_path / "idx"


def colours_shown(png: Path) -> set[str]:
    """The test colours covering at least a thumbnail's worth of pixels in ``png``."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16).reshape(-1, 3)
    return {
        name
        for name, rgb in COLOURS.items()
        if np.count_nonzero(np.abs(pixels - np.array(rgb)).max(axis=1) <= 12) >= BLOCK
    }


def search_red(setup, capfd, *outputs) -> list[str]:
    """Run ``search.py red --top-k 4`` with extra output options; the colour names of the results."""
    space, _, index = setup
    args = ["red", "--index", index, "--words-index", space.words_index, "--top-k", "4", "--json", *outputs]
    assert search.main([str(a) for a in args]) == 0
    (record,) = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    return [Path(r["image"]).stem for r in record["results"]]


def screenshot(html: Path, png: Path, tmp_path: Path) -> None:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1400,1000",
        html.as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert png.is_file(), "chromium wrote no screenshot"


def test_html_is_self_contained(setup, tmp_path, capfd):
    html = tmp_path / "out" / "gallery.html"
    search_red(setup, capfd, "--html", html)
    text = html.read_text()
    assert text.count("<img src='data:image/jpeg;base64,") == 4
    assert "http" not in text and "<script" not in text and "<link" not in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_search_gallery_renders_the_results_in_chromium(setup, tmp_path, capfd):
    html, png = tmp_path / "gallery.html", tmp_path / "shot.png"
    results = search_red(setup, capfd, "--html", html)
    screenshot(html, png, tmp_path)
    assert colours_shown(png) == set(results) and len(results) == 4


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_tag_gallery_renders_each_image_in_chromium(setup, tmp_path, monkeypatch, capfd):
    space, photos, _ = setup
    install_fake_embedder_module(monkeypatch, space.embedder)
    html, png = tmp_path / "tags.html", tmp_path / "shot.png"
    chosen = ["green", "purple", "cyan"]
    args = [
        *(photos / f"{c}.png" for c in chosen),
        "--words-index",
        space.words_index,
        "--top-k",
        "3",
        "--html",
        html,
    ]
    assert tag.main([str(a) for a in args]) == 0
    screenshot(html, png, tmp_path)
    assert colours_shown(png) == set(chosen)
    assert all(word in html.read_text() for word in chosen)  # each image's own colour word is a tag


def test_contact_sheet_shows_the_results(setup, tmp_path, capfd):
    grid = tmp_path / "grid.png"
    results = search_red(setup, capfd, "--grid", grid)
    assert colours_shown(grid) == set(results)
