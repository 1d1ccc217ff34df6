"""build-images options: one backend's options refused with the other in one line, before any work; the
default model when no --checkpoint is given; --engine and --workers reach the embedder."""

from __future__ import annotations

import json

import pytest

from indexing.__main__ import main as indexing_main
from models.embedder import DEFAULT_MODEL
from tests.fakes import colour_space, install_fake_embedder_module, write_colour_images


@pytest.mark.parametrize(
    ("backend", "option", "belongs_to"),
    [
        (["--backend", "postgres", "--db", "pg:{tmp}/db"], ["--n-trees", "5"], "annoy"),
        (["--backend", "postgres", "--db", "pg:{tmp}/db"], ["--search-k", "100"], "annoy"),
        (["--db", "pg:{tmp}/db"], ["--on-disk"], "annoy"),
        (["--out", "{tmp}/idx"], ["--ef-search", "40"], "postgres"),
        (["--backend", "annoy", "--out", "{tmp}/idx"], ["--hnsw-m", "32"], "postgres"),
        (["--out", "{tmp}/idx"], ["--ef-construction", "100"], "postgres"),
    ],
)
def test_an_option_of_the_other_backend_is_refused_in_one_line(backend, option, belongs_to, tmp_path, capfd):
    photos = tmp_path / "photos"
    write_colour_images(photos)
    argv = ["build-images", str(photos), *(a.format(tmp=tmp_path) for a in backend), *option]
    assert indexing_main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert option[0] in err and f"--backend {belongs_to}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # nothing made, no database started


def test_build_images_without_checkpoint_uses_the_default_model(tmp_path, monkeypatch, capfd):
    space = colour_space(tmp_path)
    install_fake_embedder_module(monkeypatch, space.embedder)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    assert indexing_main(["build-images", str(photos), "--out", str(tmp_path / "idx"), "--workers", "0"]) == 0
    assert space.embedder.loaded_as == {"spec": DEFAULT_MODEL, "engine": "auto"}
    assert space.embedder.workers_seen == 0
    assert DEFAULT_MODEL == "conse:efficientnet_lite0"


def test_annoy_build_records_the_engine_asked_for(tmp_path, monkeypatch, capfd):
    space = colour_space(tmp_path)
    install_fake_embedder_module(monkeypatch, space.embedder)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    assert indexing_main(["build-images", str(photos), "--out", str(tmp_path / "idx"), "--engine", "torch"]) == 0
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert space.embedder.loaded_as["engine"] == "torch" and manifest["inference"] == {"engine": "torch"}


def test_update_of_an_int8_index_embeds_new_photos_with_int8(tmp_path, monkeypatch, capfd):
    space = colour_space(tmp_path)
    install_fake_embedder_module(monkeypatch, space.embedder)
    photos = tmp_path / "photos"
    write_colour_images(photos)
    index = str(tmp_path / "idx")
    assert indexing_main(["build-images", str(photos), "--out", index, "--engine", "int8", "--workers", "0"]) == 0
    assert indexing_main(["build-images", "--update", "--out", index, "--workers", "0"]) == 0
    assert space.embedder.loaded_as["engine"] == "int8"  # recorded, not the default fp32
    assert indexing_main(["build-images", "--update", "--out", index, "--engine", "onnx", "--workers", "0"]) == 0
    assert space.embedder.loaded_as["engine"] == "onnx"  # asked for: obeyed
