"""The screenshot of the web app in docs/usage.md: docs/webapp_search.png, from real photos and the real model.

    python benchmarks/webapp_screenshot.py [--query animal] [--out docs/webapp_search.png]

The photos are the ones registry packages ship (scikit-image's samples, foolbox's ImageNet samples; see
evaluation/photos.py), indexed with ConSE (conse:efficientnet_lite0, no training) into a temp folder with
a word index of the shipped GloVe vectors; the real server runs on a free loopback port and headless
Debian chromium takes the picture. Takes a minute or two; writes nothing but ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image

import cli.options
import cli.output
from evaluation.photos import SKIMAGE_PHOTOS
from indexing.build.driver import build_image_index
from indexing.word_index import build_word_index
from models.embedder import load_embedder
from webapp.app import create_app
from webapp.library import Library
from webapp.server import bind, url_of
from webapp.thumbnails import ThumbnailCache

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SPEC = "conse:efficientnet_lite0"


def shipped_photos(folder: Path) -> None:
    import skimage.data

    (folder / "skimage").mkdir(parents=True)
    for name in SKIMAGE_PHOTOS:
        shutil.copy(Path(skimage.data.__file__).parent / name, folder / "skimage" / name)
    spec = importlib.util.find_spec("foolbox")
    if spec is not None:
        (folder / "imagenet").mkdir()
        for path in sorted((Path(next(iter(spec.submodule_search_locations))) / "data").glob("imagenet_*.jpg")):
            shutil.copy(path, folder / "imagenet" / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", default="animal")
    parser.add_argument("--k", type=int, default=18)
    parser.add_argument("--min", type=float, default=0.3, help="the minimum-score slider")
    parser.add_argument("--out", default=str(ROOT / "docs" / "webapp_search.png"))
    args = parser.parse_args()
    import uvicorn
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="webapp-shot-"))
    try:
        shipped_photos(root / "photos")
        embedder = load_embedder(SPEC)
        build_word_index(root / "words", log=cli.output.log)
        build_image_index([root / "photos"], root / "index", embedder, log=cli.output.log)
        library = Library.open([root / "index"], root / "words", lambda spec: embedder)
        app = create_app(library, ThumbnailCache(root / "thumbs"))
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1200, "height": 760})
                page.goto(f"{url_of(sock)}?q={args.query}&k={args.k}&min={args.min}", wait_until="load")
                page.screenshot(path=args.out)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        shot = Image.open(args.out).convert("RGB")  # 256 colours: a third of the bytes, still sharp text
        shot.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out, optimize=True)
        cli.output.log(f"wrote {args.out}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
