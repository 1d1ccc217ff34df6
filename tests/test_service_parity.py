"""Every door gives the same answer: tag.py --json, wordsight.Tagger and /api/items/ID/tags list the same tags;
search.py --json, wordsight.Searcher and /api/search list the same images in the same order.

The fast tests use a small real photo library with a fake embedder (colour word space + thumbnail
features, tests/library_photos.py); the slow one the shipped ConSE model, whose WordNet hierarchy tags
the web app once left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import search
import tag
from cli.options import day
from indexing.__main__ import main as indexing_main
from tests.fakes import colour_space, install_fake_embedder_module
from tests.library_photos import FeatureFakeEmbedder, build_library
from webapp.app import create_app
from webapp.library import Library, item_id
from webapp.thumbnails import ThumbnailCache
from wordsight import Searcher, Tagger


def run_ok(main, argv, capfd) -> str:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert code == 0, err
    return out


def cli_json(main, argv, capfd) -> list[dict]:
    return [json.loads(line) for line in run_ok(main, argv, capfd).splitlines()]


def web(index, words_index, embedder, tmp_path) -> TestClient:
    library = Library.open([str(index)], words_index, lambda spec: embedder)
    app = create_app(library, ThumbnailCache(tmp_path / "thumbs"))
    return TestClient(app, base_url="http://127.0.0.1:8765", raise_server_exceptions=False)


def images_of(record: dict) -> list[tuple[str, float]]:
    return [(r["image"], r["score"]) for r in record["results"]]


def same_images(*records: dict) -> bool:
    """The same images in the same order, with scores equal to float16 storage precision: a file given on
    the command line is embedded afresh, a photo id in the web app uses the index's stored features."""
    first = images_of(records[0])
    return all(
        [image for image, _ in images_of(r)] == [image for image, _ in first]
        and all(abs(a - b) < 2e-3 for (_, a), (_, b) in zip(images_of(r), first))
        for r in records[1:]
    )


@pytest.fixture
def photos(tmp_path) -> Path:
    build_library(tmp_path / "Photos")
    return tmp_path / "Photos"


@pytest.fixture
def setup(tmp_path, photos, monkeypatch, capfd):
    (tmp_path / "space").mkdir()
    space = colour_space(tmp_path / "space")
    identity = space.embedder.identity
    embedder = FeatureFakeEmbedder(identity["vectors_source"], identity["vectors_sha"])
    install_fake_embedder_module(monkeypatch, embedder)
    index = tmp_path / "idx"
    run_ok(indexing_main, ["build-images", photos, "--out", index], capfd)
    return space, embedder, index, web(index, space.words_index, embedder, tmp_path)


def test_tags_are_the_same_through_every_door(setup, photos, capfd):
    space, _, _, client = setup
    photo = str((photos / "2023/summer/coffee.jpg").resolve())
    (cli,) = cli_json(tag.main, [photo, "--checkpoint", "fake", "--words-index", space.words_index,
                                 "--top-k", 5, "--json"], capfd)  # fmt: skip
    api = Tagger("fake", words_index=space.words_index).tag(photo, top_k=5).record()
    answer = client.get(f"/api/items/{item_id(photo)}/tags", params={"k": 5})
    assert answer.status_code == 200
    assert cli == api == {k: v for k, v in answer.json().items() if k != "id"}
    assert len(cli["tags"]) == 5


@pytest.mark.parametrize("query", ["red + 2:yellow - blue", "green", "red yellow"])
def test_searches_are_the_same_through_every_door(setup, photos, query, capfd):
    space, _, index, client = setup
    (cli,) = cli_json(search.main, [query, "--index", index, "--words-index", space.words_index, "--top-k", 6,
                                    "--json"], capfd)  # fmt: skip
    api = Searcher(index, words_index=space.words_index).search(query, top_k=6).record()
    answer = client.get("/api/search", params={"q": query, "k": 6})
    assert answer.status_code == 200
    assert images_of(cli) == images_of(api) == images_of(answer.json()) and len(cli["results"]) == 6


def test_filters_and_image_terms_are_the_same_through_every_door(setup, photos, capfd):
    space, _, index, client = setup
    photo = str((photos / "2023/summer/chelsea.jpg").resolve())
    filters = {"in": str(photos / "2024"), "after": "2024-04-01", "before": "2024-12-31"}
    options = [a for name, value in filters.items() for a in (f"--{name}", value)]
    (cli,) = cli_json(search.main, ["red - 0.5:blue", "--index", index, "--words-index", space.words_index,
                                    *options, "--json"], capfd)  # fmt: skip
    api = Searcher(index, words_index=space.words_index).search(
        "red - 0.5:blue", folder=filters["in"], after=day(filters["after"]), before=day(filters["before"])
    ).record()
    answer = client.get("/api/search", params={"q": "red - 0.5:blue", **filters}).json()
    assert images_of(cli) == images_of(api) == images_of(answer)
    assert cli["results"] and all("/2024/" in image and "/spring/astronaut" not in image for image, _ in images_of(cli))

    # an image with words: a file on the command line and in Python, the photo's id in the web app
    (cli,) = cli_json(search.main, [f"{photo} + 0.5:green", "--index", index, "--words-index", space.words_index,
                                    "--json"], capfd)  # fmt: skip
    answer = client.get("/api/search", params={"q": f"{item_id(photo)} + 0.5:green"}).json()
    assert same_images(cli, answer)

    # a lone photo: visually similar (the features), as search.py PHOTO; the web's similar leaves it out
    (cli,) = cli_json(search.main, [photo, "--index", index, "--json"], capfd)
    api = Searcher(index).search(photo).record()
    capfd.readouterr()  # the fake model's loading line (the real one prints it on stderr)
    by_id = client.get("/api/search", params={"q": item_id(photo)}).json()
    similar = client.get(f"/api/items/{item_id(photo)}/similar", params={"k": 9}).json()
    assert images_of(cli) == images_of(api) and same_images(cli, by_id)
    assert same_images(similar, {"results": [r for r in cli["results"] if r["image"] != photo][:9]})
    (semantic,) = cli_json(search.main, [photo, "--index", index, "--semantic", "--json"], capfd)
    similar = client.get(f"/api/items/{item_id(photo)}/similar", params={"k": 9, "semantic": True}).json()
    assert same_images(similar, {"results": [r for r in semantic["results"] if r["image"] != photo][:9]})
    assert images_of(semantic) != images_of(cli)  # the two spaces differ, so the switch means something


@pytest.mark.slow
def test_real_model_doors_agree_on_hierarchy_tags_and_arithmetic(tmp_path, photos, capfd):
    """The shipped ConSE model: the photo page gives tag.py's WordNet tags, not plain cosine."""
    from models.embedder import DEFAULT_MODEL, load_embedder

    index = tmp_path / "idx"
    run_ok(indexing_main, ["build-images", photos, "--out", index, "--checkpoint", DEFAULT_MODEL], capfd)
    client = web(index, None, load_embedder(DEFAULT_MODEL), tmp_path)
    photo = str((photos / "2023/summer/chelsea.jpg").resolve())
    (cli,) = cli_json(tag.main, [photo, "--top-k", 5, "--json"], capfd)
    api = Tagger().tag(photo, top_k=5).record()
    answer = client.get(f"/api/items/{item_id(photo)}/tags", params={"k": 5}).json()
    assert cli == api == {k: v for k, v in answer.items() if k != "id"}
    assert {"cat", "feline"} <= {t["word"] for t in cli["tags"]}  # hierarchy words, not only cosine

    query = "cat + 2:coffee - rocket"
    (cli,) = cli_json(search.main, [query, "--index", index, "--json", "--top-k", 5], capfd)
    api = Searcher(str(index)).search(query, top_k=5).record()
    answer = client.get("/api/search", params={"q": query, "k": 5}).json()
    assert images_of(cli) == images_of(api) == images_of(answer)
    assert Path(cli["results"][0]["image"]).name == "coffee.jpg"
