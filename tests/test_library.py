"""The photo-library features end to end through the CLIs, on a small library of real photos (scikit-image
samples in nested folders with EXIF dates), with a fake embedder (colour word space + thumbnail "features")
for speed. XMP sidecars are read back with the real reader, exiftool (Debian libimage-exiftool-perl)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import search
import tag
from indexing.__main__ import main as indexing_main
from indexing.bundle import normalise, open_bundle
from indexing.bundle.columns import open_features, read_meta
from library import filters
from library.keywords import photo_keywords
from library.scores import above_min_score
from library.xmp import SidecarKeywords, Tag, merge, read_sidecar, sidecar_path
from taxonomy.hierarchy import keyword_chain
from tests.fakes import colour_space, install_fake_embedder_module
from tests.library_photos import LAYOUT, FeatureFakeEmbedder, build_library

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="apt-get install libimage-exiftool-perl (make system-deps)")


@pytest.fixture
def space(tmp_path):
    (tmp_path / "space").mkdir()
    return colour_space(tmp_path / "space")


@pytest.fixture
def embedder(monkeypatch, space) -> FeatureFakeEmbedder:
    fake = FeatureFakeEmbedder(space.embedder.identity["vectors_source"], space.embedder.identity["vectors_sha"])
    install_fake_embedder_module(monkeypatch, fake)
    return fake


@pytest.fixture
def library(tmp_path) -> Path:
    build_library(tmp_path / "Photos")
    return tmp_path / "Photos"


@pytest.fixture
def index(tmp_path, library, embedder, capfd) -> Path:
    code, _, err = run(indexing_main, ["build-images", library, "--out", tmp_path / "idx"], capfd)
    assert code == 0, err
    return tmp_path / "idx"


def run(main, argv, capfd) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out.splitlines(), err


def exiftool(*args) -> dict:
    result = subprocess.run([EXIFTOOL, "-j", "-struct", *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)[0]


def listed(value) -> list[str]:
    return value if isinstance(value, list) else [] if value is None else [value]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def search_json(args, capfd, space, index) -> list[dict]:
    code, lines, err = run(search.main, [*args, "--index", index, "--words-index", space.words_index, "--json"], capfd)
    assert code == 0, err
    return [json.loads(line) for line in lines]


# ---- 1. XMP sidecars


def test_merge_keeps_others_replaces_ours_and_remembers_rejections():
    first = merge(SidecarKeywords(subject=["holiday", "grandma"]), [Tag("cat"), Tag("sofa"), Tag("holiday")])
    assert first.subject == ["holiday", "grandma", "cat", "sofa"] and first.ours == ["cat", "sofa"]
    assert first.hierarchical == ["wordsight|cat", "wordsight|sofa"]
    # the user removes "sofa" and adds "garden"; wordsight now finds cat + dog + sofa
    edited = SidecarKeywords(["holiday", "garden", "grandma", "cat"], first.hierarchical, first.ours,
                             first.ours_hierarchical)  # fmt: skip
    second = merge(edited, [Tag("dog", chain=("animal", "canine", "dog")), Tag("cat"), Tag("sofa")])
    assert second.subject == ["holiday", "garden", "grandma", "dog", "cat"]
    assert second.rejected == ["sofa"] and "wordsight|animal|canine|dog" in second.hierarchical


@needs_exiftool
def test_write_xmp_merges_a_sidecar_made_by_another_tool(tmp_path, library, space, embedder, capfd):
    photo = library / "2023/summer/chelsea.jpg"
    other = library / "2024/spring/rocket.jpg"
    made = sidecar_path(photo)
    subprocess.run([EXIFTOOL, "-q", "-o", made, "-XMP-dc:Subject=holiday", "-XMP-dc:Subject=grandma",
                    "-XMP-lr:HierarchicalSubject=people|grandma", "-XMP-xmp:Rating=4", photo], check=True)  # fmt: skip
    photo_sha, other_sha = sha(photo), sha(other)
    argv = [photo, other, "--words-index", space.words_index, "--write-xmp", "--top-k", 3, "--json"]

    code, lines, err = run(tag.main, argv, capfd)
    assert code == 0, err
    assert "2 written, 0 already up to date" in err
    tags = {Path(r["image"]).name: [t["word"] for t in r["tags"]] for r in map(json.loads, lines)}
    read = exiftool("-XMP:Subject", "-XMP:HierarchicalSubject", "-XMP-digiKam:TagsList", "-XMP:Rating", made)
    assert listed(read["Subject"]) == ["holiday", "grandma", *tags["chelsea.jpg"]]  # theirs first, untouched
    chains = ["|".join(("wordsight", *(keyword_chain(w) or (w,)))) for w in tags["chelsea.jpg"]]  # WordNet's
    assert listed(read["HierarchicalSubject"]) == ["people|grandma", *chains]
    assert "wordsight|produce|citrus|orange" in chains  # the colour fake's "orange" is WordNet's fruit
    assert listed(read["TagsList"]) == [chain.replace("|", "/") for chain in chains]  # digiKam's hierarchy
    assert read["Rating"] == 4
    fresh = exiftool("-XMP:Subject", sidecar_path(other))
    assert listed(fresh["Subject"]) == tags["rocket.jpg"]
    assert (sha(photo), sha(other)) == (photo_sha, other_sha)  # originals never modified

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (made, sidecar_path(other))}
    code, _, err = run(tag.main, argv, capfd)
    assert code == 0 and "0 written, 2 already up to date" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before  # byte-identical, untouched

    # the user deletes one of wordsight's keywords in their photo manager: it is not written back
    rejected = tags["chelsea.jpg"][0]
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-dc:Subject-={rejected}", made], check=True)
    code, _, err = run(tag.main, [photo, "--words-index", space.words_index, "--write-xmp", "--top-k", 1], capfd)
    assert code == 0
    read = exiftool("-XMP:Subject", "-XMP:HierarchicalSubject", made)
    assert rejected not in listed(read["Subject"]) and listed(read["Subject"])[:2] == ["holiday", "grandma"]
    assert read_sidecar(made).rejected == [rejected]
    assert len(read_sidecar(made).ours) <= 1  # only wordsight's earlier tags were replaced


def test_min_score_is_honoured_by_tag_and_sidecars(tmp_path, library, space, embedder, capfd):
    photo = library / "2024/spring/astronaut.jpg"
    code, lines, _ = run(tag.main, [photo, "--words-index", space.words_index, "--top-k", 6, "--json"], capfd)
    scores = [t["score"] for t in json.loads(lines[0])["tags"]]
    cut = float(np.median(scores))
    argv = [photo, "--words-index", space.words_index, "--top-k", 6, "--json", "--min-score", cut, "--write-xmp",
            "--lightroom-sidecars"]  # fmt: skip
    code, lines, _err = run(tag.main, argv, capfd)
    kept = json.loads(lines[0])["tags"]
    assert code == 0 and 0 < len(kept) < len(scores) and all(t["score"] >= cut for t in kept)
    assert read_sidecar(photo.with_suffix(".xmp")).subject == [t["word"] for t in kept]  # IMG_1234.xmp naming
    assert not sidecar_path(photo).exists()
    assert above_min_score([("a", 0.9), ("b", 0.2)], 0.5) == [("a", 0.9)]


# ---- 2, 3, 7: search thresholds, query syntax, --paths


def test_query_arithmetic_weights_and_old_forms(index, space, capfd):
    bundle = open_bundle(index)
    words = open_bundle(space.words_index)
    unit = {w: np.asarray(words.vectors[words.row(w)]) for w in ("red", "blue", "yellow")}
    for query, vector in [
        ("red + blue", unit["red"] + unit["blue"]),
        ("2:red - blue", 2 * unit["red"] - unit["blue"]),
        ("red yellow", (unit["red"] + unit["yellow"]) / 2),  # the old averaged form
    ]:
        (record,) = search_json([query, "--exact", "--top-k", 4], capfd, space, index)
        expected = bundle.nearest(vector, 4, exact=True)
        assert [r["image"] for r in record["results"]] == [p for p, _ in expected]
        assert [r["score"] for r in record["results"]] == pytest.approx([s for _, s in expected], abs=1e-3)
    # arithmetic moves the results: red + blue is not red
    assert search_json(["red"], capfd, space, index)[0] != search_json(["red + blue"], capfd, space, index)[0]


def test_image_term_with_words_unknown_terms_and_paths(index, space, library, capfd):
    photo = library / "2023/summer/chelsea.jpg"
    (record,) = search_json([f"{photo} + 0.5:blue", "--top-k", 3], capfd, space, index)
    assert len(record["results"]) == 3
    code, lines, err = run(search.main, ["red + greeen", "--index", index, "--words-index", space.words_index], capfd)
    assert code == 2 and "'greeen'" in err and "green" in err and not lines
    code, lines, err = run(search.main, ["red", "--index", index, "--words-index", space.words_index, "--paths",
                                         "--top-k", 4], capfd)  # fmt: skip
    assert code == 0 and len(lines) == 4 and all(os.path.isfile(line) for line in lines)
    scores = [r["score"] for r in search_json(["red", "--top-k", 10], capfd, space, index)[0]["results"]]
    cut = float(np.median(scores))
    kept = search_json(["red", "--top-k", 10, "--min-score", cut], capfd, space, index)[0]["results"]
    assert 0 < len(kept) < len(scores) and all(r["score"] >= cut for r in kept)


# ---- 4. visual similarity and duplicates


def test_image_queries_are_visual_by_default_and_semantic_on_request(index, space, library, capfd):
    trio = {str((library / p).resolve()) for p in ("2023/summer/chelsea.jpg", "2024/copies/chelsea_small.jpg",
                                                    "2024/copies/chelsea_q30.jpg")}  # fmt: skip
    photo = library / "2023/summer/chelsea.jpg"
    visual = search_json([photo, "--top-k", 3], capfd, space, index)[0]["results"]
    assert {r["image"] for r in visual} == trio
    bundle = open_bundle(index)
    semantic = search_json([photo, "--top-k", 3, "--semantic", "--exact"], capfd, space, index)[0]["results"]
    row = bundle.row(str(photo.resolve()))
    assert [r["image"] for r in semantic] == [p for p, _ in bundle.nearest(bundle.vectors[row], 3, exact=True)]
    features = open_features(bundle)
    assert features.vectors.dtype == np.float16 and features.vectors.shape == (len(bundle), 108)
    assert bundle.manifest["library"]["features"]["index_bytes"] == (index / "features.ann").stat().st_size


def test_duplicates_lists_groups_largest_first(index, space, library, capfd):
    code, lines, err = run(search.main, ["--duplicates", "--index", index, "--threshold", 0.97, "--json"], capfd)
    assert code == 0, err
    groups = [[Path(r["image"]).name for r in json.loads(line)["duplicates"]] for line in lines]
    assert sorted(groups[0]) == ["chelsea.jpg", "chelsea_q30.jpg", "chelsea_small.jpg"]
    assert all(len(a) >= len(b) for a, b in itertools.pairwise(groups))
    assert not any("chelsea" in name for group in groups[1:] for name in group)
    code, lines, _ = run(search.main, ["--duplicates", "--index", index, "--threshold", 0.97], capfd)
    assert lines[0] == "3 photos" and lines[1].strip().startswith("1.000")
    code, lines, _ = run(search.main, ["--duplicates", "--index", index, "--threshold", 0.97, "--in",
                                       library / "2024"], capfd)  # fmt: skip
    assert lines[0] == "2 photos"  # the two copies; the original is in 2023


# ---- 5. renames and moves


def test_update_reuses_renamed_and_moved_photos(tmp_path, index, library, embedder, space, capfd):
    old = open_bundle(index)
    old_row = old.row(str((library / "2025/coins.jpg").resolve()))
    old_vector = np.array(old.vectors[old_row])
    old_features = np.array(open_features(old).vectors[old_row])
    old_count = len(old)
    (library / "archive").mkdir()
    os.rename(library / "2025/coins.jpg", library / "archive/coins-renamed.jpg")
    os.rename(library / "2024/spring/rocket.jpg", library / "2024/rocket-launch.jpg")
    shutil.copy(library / "2024/autumn/hubble.jpg", library / "2024/hubble-copy.jpg")  # a copy: new file
    embedder.embedded.clear()
    code, _, err = run(indexing_main, ["build-images", "--out", index, "--update"], capfd)
    assert code == 0, err
    assert [Path(p).name for p in embedder.embedded] == ["hubble-copy.jpg"]
    assert "1 embedded" in err and "0 removed" in err and "2 reused as renames or moves" in err
    bundle = open_bundle(index)
    row = bundle.row(str((library / "archive/coins-renamed.jpg").resolve()))
    assert np.allclose(bundle.vectors[row], old_vector)
    meta = read_meta(bundle)
    assert meta[row]["folder"] == str((library / "archive").resolve()) and meta[row]["date"] == "2025-01-20T08:00:00"
    assert np.array_equal(open_features(bundle).vectors[row], old_features)
    assert len(bundle) == old_count + 1


# ---- 6. filters


def test_meta_records_folder_and_date(index, library):
    bundle = open_bundle(index)
    meta = read_meta(bundle)
    by_name = {Path(p).name: m for p, m in zip(bundle.items, meta)}
    assert by_name["rocket.jpg"]["date"] == "2024-04-21T12:30:00" and by_name["rocket.jpg"]["date_source"] == "exif"
    assert by_name["rocket.jpg"]["folder"] == str((library / "2024/spring").resolve())


def test_folder_and_date_filters_still_return_k(index, space, library, capfd, monkeypatch):
    args = ["red", "--top-k", 3, "--in", library / "2024", "--after", "2024-04-01", "--before", "2024-10-05"]
    expected = {n for n, (_, taken) in LAYOUT.items() if n.startswith("2024/") and "2024:04:01" <= taken[:10]
                <= "2024:10:05"}  # rocket + both motorcycles  # fmt: skip
    for exact_cost_per_dim in (filters.EXACT_COST_PER_DIM, float("inf")):  # the cheaper side, then always the forest
        monkeypatch.setattr(filters, "EXACT_COST_PER_DIM", exact_cost_per_dim)
        results = search_json(args, capfd, space, index)[0]["results"]
        names = {str(Path(r["image"]).relative_to(library.resolve())) for r in results}
        assert names == expected and len(results) == 3
    results = search_json(["red", "--top-k", 2, "--after", "2025-01-01"], capfd, space, index)[0]["results"]
    assert [Path(r["image"]).name for r in results] == ["coins.jpg"]  # fewer match than k: all of them


def test_filter_mask_bounds_are_inclusive():
    where = filters.make_filter(None, dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    meta = [{"folder": "/a", "date": d} for d in ("2023-12-31T23:59:59", "2024-01-01T00:00:00", "2024-12-31T23:59:59",
                                                   "2025-01-01T00:00:00")]  # fmt: skip
    assert where.mask(meta).tolist() == [False, True, True, False]


# ---- 8. training on the keywords a library already has


@needs_exiftool
def test_keywords_source_reads_sidecars_and_embedded_keywords(tmp_path, space, capsys):
    from datamodules.sources import build_source
    from tests.library_photos import sample, save_with_date

    root = tmp_path / "tagged"
    a = save_with_date(sample("chelsea.png"), root / "a.jpg", None)
    b = save_with_date(sample("coffee.png"), root / "sub/b.jpg", None)
    c = save_with_date(sample("rocket.jpg"), root / "c.jpg", None)
    save_with_date(sample("coins.png"), root / "untagged.jpg", None)
    subprocess.run([EXIFTOOL, "-q", "-o", sidecar_path(a), "-XMP-dc:Subject=Orange", "-XMP-dc:Subject=zzqx"],
                   check=True)  # fmt: skip
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-IPTC:Keywords=pink", "-XMP-dc:Subject=cyan", b], check=True)
    subprocess.run([EXIFTOOL, "-q", "-o", sidecar_path(c), "-XMP-dc:Subject=zzqx"], check=True)
    from library.xmp import write_tags

    write_tags(a, [Tag("blue")])  # wordsight's own guess: never a training label
    assert photo_keywords(b).keywords == ["cyan", "pink"]
    source = build_source("keywords", str(root), vectors=str(space.glove))
    err = capsys.readouterr().err
    assert "'zzqx' (2 photos)" in err and "2 of 4 photos have usable keywords" in err
    assert sorted(zip((Path(p).name for p in source.paths), source.labels)) == [("a.jpg", "orange"),
                                                                                     ("b.jpg", "cyan pink")]
    assert source.label_words["cyan pink"] == ["cyan", "pink"]


@needs_exiftool
def test_train_on_keywords_then_tag_the_rest(tmp_path, space, capfd):
    from tests.library_photos import sample, save_with_date
    from train import cli_main

    root = tmp_path / "tagged"
    names = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "coins.png", "brick.png"]
    for k, name in enumerate(names):
        photo = save_with_date(sample(name), root / f"p{k}.jpg", None)
        words = ["red", "blue"] if k % 2 else ["green"]
        subprocess.run([EXIFTOOL, "-q", "-o", sidecar_path(photo), *(f"-XMP-dc:Subject={w}" for w in words)], check=True)
    untagged = save_with_date(sample("moon.png"), tmp_path / "rest/moon.jpg", None)
    cli_main(["fit", "--config", str(Path(__file__).resolve().parents[1] / "configs/keywords.yaml"), "--data.root", str(root),
              "--data.vectors", str(space.glove), "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "2",
              "--data.num_workers", "0", "--data.val_fraction", "0", "--data.test_fraction", "0",
              "--model.weights", "random", "--model.image_size", "32", "--model.hidden_dim", "8",
              "--model.conse_weight", "0", "--trainer.max_epochs", "1", "--trainer.logger", "false",
              "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"), "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    checkpoint = tmp_path / "ckpt/last.ckpt"
    code, _, err = run(tag.main, [untagged, "--checkpoint", checkpoint, "--words-index", space.words_index,
                                  "--write-xmp", "--top-k", 2], capfd)  # fmt: skip
    assert code == 0, err
    assert len(read_sidecar(sidecar_path(untagged)).ours) == 2


def _subject_sidecar(photo: Path, *keywords: str) -> None:
    """A sidecar of the user's photo manager holding these dc:subject keywords."""
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    sidecar_path(photo).write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>")


def test_own_keywords_tag_the_other_photos_as_the_user_spells_them(tmp_path, space, fake_embedder, capfd):
    from PIL import Image

    from library.keywords import library_keywords
    from library.xmp import write_tags
    from tests.fakes import COLOURS

    photos = {}
    for name, colour in (("a", "red"), ("b", "blue"), ("c", "purple"), ("d", "green"), ("e", "red")):
        photos[name] = tmp_path / "photos" / f"{name}.jpg"
        photos[name].parent.mkdir(exist_ok=True)
        Image.new("RGB", (64, 48), COLOURS[colour]).save(photos[name])
    _subject_sidecar(photos["a"], "Red", "2019")
    _subject_sidecar(photos["b"], "blue", "red")  # another spelling of a keyword already seen
    _subject_sidecar(photos["c"], "Purple", "Zzqx")  # a keyword the word vectors lack
    write_tags(photos["d"], [Tag("green")])  # wordsight's own earlier tag: not the user's vocabulary
    assert library_keywords(sorted(photos.values()), progress=False) == (["Red", "blue", "Purple", "Zzqx"], [])
    code, lines, err = run(tag.main, [photos["a"].parent, "--own-keywords", "--checkpoint", "fake", "--json",
                                      "--top-k", 1], capfd)  # fmt: skip
    assert code == 0, err
    assert "tagging with the 4 keywords these photos already have" in err
    assert "1 word of the given words is not in the word vectors: Zzqx" in err
    tags = {Path(r["image"]).stem: r["tags"][0]["word"] for r in map(json.loads, lines)}
    assert tags["e"] == "Red" and tags["b"] == "blue" and tags["d"] != "green"  # the user's words, spelled so
    for photo in photos.values():
        sidecar_path(photo).unlink(missing_ok=True)
    code, _, err = run(tag.main, [photos["a"].parent, "--own-keywords", "--checkpoint", "fake"], capfd)
    assert code != 0 and "none of these photos has keywords of its own yet" in err and "Traceback" not in err


def test_normalised_features_are_unit_length(index):
    features = open_features(open_bundle(index))
    assert np.allclose(np.linalg.norm(np.asarray(features.vectors, np.float32), axis=1), 1, atol=2e-3)
    assert np.allclose(normalise(features.vectors), features.vectors, atol=2e-3)


# ---- the same library with the real shipped model (EfficientNet-Lite0 ConSE + GloVe 6B 50d)


@pytest.mark.slow
@needs_exiftool
def test_real_model_library_end_to_end(tmp_path, library, capfd):
    from library.duplicates import DEFAULT_THRESHOLD

    words, idx = tmp_path / "words", tmp_path / "idx"
    code, _, err = run(indexing_main, ["build-images", library, "--out", idx, "--checkpoint", "conse:efficientnet_lite0"],
                       capfd)  # fmt: skip
    assert code == 0, err
    assert open_bundle(idx).manifest["library"]["features"]["dim"] == 1280
    photo = library / "2023/summer/chelsea.jpg"
    code, lines, err = run(tag.main, [photo, "--words-index", words, "--write-xmp", "--top-k", 5, "--json"], capfd)
    assert code == 0, err
    top = [t["word"] for t in json.loads(lines[0])["tags"]]
    assert "cat" in top
    assert listed(exiftool("-XMP:Subject", sidecar_path(photo))["Subject"]) == top

    def query(*args):
        code, lines, err = run(search.main, [*args, "--index", idx, "--words-index", words, "--json"], capfd)
        assert code == 0, err
        return [Path(r["image"]).name for r in json.loads(lines[0])["results"]]

    assert set(query(photo, "--top-k", 3)) == {"chelsea.jpg", "chelsea_small.jpg", "chelsea_q30.jpg"}
    assert query("cat", "--top-k", 1, "--in", library / "2023")[0] == "chelsea.jpg"
    assert query("rocket + launch - cat", "--top-k", 1, "--after", "2024-01-01")[0] == "rocket.jpg"
    code, lines, _ = run(search.main, ["--duplicates", "--index", idx, "--json"], capfd)
    groups = [sorted(Path(r["image"]).name for r in json.loads(line)["duplicates"]) for line in lines]
    assert ["chelsea.jpg", "chelsea_q30.jpg", "chelsea_small.jpg"] in groups, (DEFAULT_THRESHOLD, groups)
    assert all(len(g) <= 3 for g in groups)


def test_query_syntax_parses_and_is_documented(capsys):
    from library.query import IMAGE, WORDS, parse_query

    query = parse_query("photo.jpg + 2:sunset - word:people", lambda path: path == "photo.jpg")
    assert [(t.weight, t.text, t.kind) for t in query.terms] == [(1.0, "photo.jpg", IMAGE), (2.0, "sunset", WORDS),
                                                                 (-1.0, "people", WORDS)]  # fmt: skip
    assert parse_query("a b.jpg", lambda path: path == "a b.jpg").single_image  # a path with a space, as before
    for bad in ("beach +", "beach + - sun"):
        with pytest.raises(Exception, match="operator"):
            parse_query(bad, lambda path: False)
    for empty in ("word:", "beach + word:", "2:", "image:"):  # not the word "word", nor "2"
        with pytest.raises(Exception, match="empty term"):
            parse_query(empty, lambda path: False)
    assert parse_query("word:", lambda path: path == "word:").single_image  # a file of that name
    assert [t.text for t in parse_query("note: beach", lambda path: False).terms] == ["note: beach"]
    with pytest.raises(SystemExit):
        search.main(["--help"])
    help_text = capsys.readouterr().out
    assert all(s in help_text for s in ("beach + sunset - people", "2:sunset", "word:boot", "--duplicates", "--in"))


def test_content_hashes_match_one_by_one_and_mark_unreadable_files(tmp_path):
    from library.metadata import content_hash, content_hashes

    files = []
    for i, size in enumerate((10, (1 << 20) + 5000, 3 << 20)):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8).tobytes())
        files.append((str(path), size))
    files.append((str(tmp_path / "gone.jpg"), 7))
    digests = content_hashes(files)
    assert digests[:3] == [content_hash(p, s) for p, s in files[:3]]
    assert len(set(digests[:3])) == 3 and digests[3] is None
