"""Synthesized WordNet classifiers: the graph, the GCN/DGP networks, training, the artefact and tagging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.wordnet_graph import WordNetGraphDataModule, distance_matrices, gcn_adjacency
from taxonomy import load_taxonomy
from taxonomy.wordnet import NounGraph, read_nouns

# a tiny graph: root -> animal -> {dog -> puppy, cat}; root -> thing
TINY = NounGraph(("root", "animal", "dog", "puppy", "cat", "thing"),
                 (("root",), ("animal",), ("dog",), ("puppy",), ("cat",), ("thing",)),
                 ((), (0,), (1,), (2,), (1,), (0,)))  # fmt: skip


def dense(m: torch.Tensor) -> np.ndarray:
    return m.to_dense().numpy()


def test_dgp_joins_each_synset_to_its_ancestors_and_descendants_by_distance():
    up, down = distance_matrices(TINY, 2)
    assert len(up) == len(down) == 3
    assert np.allclose(dense(up[0]), np.eye(6)) and np.allclose(dense(down[0]), np.eye(6))
    assert dense(up[1])[3, 2] == 1 and dense(up[2])[3, 1] == 1  # puppy -> dog (1 step) -> animal (2)
    assert np.allclose(dense(down[1])[1], [0, 0, 0.5, 0, 0.5, 0])  # animal's children share its row
    assert dense(down[2])[0, 2] == 0.5 and dense(down[2])[0, 4] == 0.5  # root's grandchildren: dog, cat
    for m in up + down:
        sums = dense(m).sum(1)
        assert np.allclose(sums[sums > 0], 1.0)  # row-normalised
    gcn = dense(gcn_adjacency(TINY))
    assert np.allclose(gcn, gcn.T) and (np.diag(gcn) > 0).all()


@pytest.mark.parametrize("kind", ["gcn", "dgp"])
def test_networks_give_unit_rows_for_the_rows_asked(kind):
    from models.graph_classifiers import GraphNetwork

    up, down = distance_matrices(TINY, 2)
    batch = {"inputs": torch.randn(6, 4), "gcn": gcn_adjacency(TINY), "ancestors": up, "descendants": down}
    net = GraphNetwork(kind, 4, 8, 5, max_steps=2).eval()
    out = net(batch, torch.tensor([2, 4]))
    assert out.shape == (2, 5) and torch.allclose(out.norm(dim=-1), torch.ones(2))
    assert torch.allclose(net(batch)[[2, 4]], out, atol=1e-6)  # the same rows as from the whole graph


GLOSSES = {"crow": 'black birds having a raucous call; "the crow flew away"', "animal": "a living organism"}


def write_wordnet(folder: Path, classes: list[str]) -> Path:
    """A WordNet whose root has two hypernym levels above some real ImageNet class wnids, and one more
    synset (crow, its real wnid, under the first level) that no class is."""
    folder.mkdir(parents=True)
    parents = {"00000002": "00000001", "00000003": "00000001", "01579028": "00000002"}
    parents |= {wnid[1:]: "00000002" if i % 2 else "00000003" for i, wnid in enumerate(classes)}
    lemmas = {"00000001": "thing", "00000002": "animal", "00000003": "device", "01579028": "crow"}
    lemmas |= {wnid[1:]: load_taxonomy().synsets[wnid].lemmas[0] for wnid in classes}
    lines = []
    for offset, lemma in lemmas.items():
        pointers = [f"@ {parents[offset]} n 0000"] if offset in parents else []
        pointers += [f"~ {child} n 0000" for child, parent in parents.items() if parent == offset]
        gloss = GLOSSES.get(lemma, f"a kind of {lemma}")
        lines.append(f"{offset} 05 n 01 {lemma} 0 {len(pointers):03d} {' '.join(pointers)} | {gloss}  \n")
    (folder / "data.noun").write_text("".join(lines))
    (folder / "index.noun").write_text("thing n 1 0 1 0 00000001\n")
    return folder


def test_training_reduces_the_loss_and_writes_a_readable_artefact(tmp_path):
    import pytorch_lightning as pl

    from models.graph_classifiers import GraphClassifiers
    from models.wordnet_classifiers import read_classifiers

    classes = load_taxonomy().classes[::50]  # 20 classes
    wordnet = write_wordnet(tmp_path / "wordnet", classes)
    data = WordNetGraphDataModule(root="n00000001", max_steps=2, val_fraction=0.2, wordnet=str(wordnet))
    model = GraphClassifiers(hidden_dim=32, lr=0.01, dropout=0.0, baseline_mix=0.5, out=str(tmp_path / "out.npz"))
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Record()], accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert losses[-1] < losses[0] - 0.05
    assert len(data.val_classes) == 4 and len(data.train_classes) == 16
    written = read_classifiers(tmp_path / "out.npz")
    assert written.identity["graph_sha"] == data.graph.sha and written.identity["backbone"] == "efficientnet_lite0"
    assert -1 <= written.identity["metrics"]["cosine"] <= 1 and "baseline_cosine" in written.identity["metrics"]
    assert read_nouns(wordnet)["n01579028"].lemmas == ["crow"]
    assert read_nouns(wordnet)["n01579028"].gloss == "black birds having a raucous call"  # without the example


def test_definitions_join_the_inputs_and_their_estimate_joins_the_mix(tmp_path, monkeypatch):
    """The real sentence encoder reads the tiny graph's definitions once; the cached vectors serve the next run."""
    import pytorch_lightning as pl

    from datamodules import definitions
    from models.graph_classifiers import GraphClassifiers
    from models.wordnet_classifiers import read_classifiers

    wordnet = write_wordnet(tmp_path / "wordnet", load_taxonomy().classes[::50])

    def fit(out: Path) -> WordNetGraphDataModule:
        data = WordNetGraphDataModule(root="n00000001", max_steps=2, val_fraction=0.2, wordnet=str(wordnet),
                                      definitions="all-minilm-l6-v2")  # fmt: skip
        model = GraphClassifiers(hidden_dim=16, baseline_mix=1.0, definition_mix=1.0, out=str(out))
        pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu").fit(model, datamodule=data)  # fmt: skip
        return data

    data = fit(tmp_path / "a.npz")
    crow = data.graph.wnids.index("n01579028")
    assert data.graph.definitions[crow] == "crow: black birds having a raucous call"
    assert data.batch["inputs"].shape[1] == 50 + data.definitions.shape[1]  # GloVe 50d beside the definition
    animal = data.graph.wnids.index("n00000002")
    assert data.definitions[crow] @ data.definitions[animal] > data.definitions[crow] @ data.definitions[0]
    written = read_classifiers(tmp_path / "a.npz")
    assert written.identity["definitions"] == "all-minilm-l6-v2" and written.identity["definition_mix"] == 1.0
    assert written.identity["definitions_sha"] == data.definitions_sha
    assert -1 <= written.identity["metrics"]["definition_cosine"] <= 1

    monkeypatch.setattr(definitions, "_load", lambda encoder: pytest.fail("encoded twice"))
    assert np.array_equal(fit(tmp_path / "b.npz").definitions, data.definitions)


def test_a_definition_mix_without_definitions_says_which_option_to_set(tmp_path):
    import pytorch_lightning as pl

    from foundation.errors import UsageError
    from models.graph_classifiers import GraphClassifiers

    wordnet = write_wordnet(tmp_path / "wordnet", load_taxonomy().classes[::100])
    data = WordNetGraphDataModule(root="n00000001", max_steps=2, wordnet=str(wordnet))
    model = GraphClassifiers(hidden_dim=16, definition_mix=1.0, out=str(tmp_path / "out.npz"))
    with pytest.raises(UsageError, match="--data.init_args.definitions"):
        pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu").fit(model, datamodule=data)
    assert not (tmp_path / "out.npz").exists()


def test_the_nearest_definitions_estimate_follows_the_classes_that_read_alike():
    from models.graph_classifiers import nearest_definitions_estimate

    definitions = np.eye(4, dtype=np.float32)
    definitions[3] = [0.9, 0.1, 0.0, 0.0]  # row 3 reads like row 0
    definitions /= np.linalg.norm(definitions, axis=1, keepdims=True)
    targets = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=np.float32)  # the trained rows 0, 1, 2
    sharp = nearest_definitions_estimate(definitions, np.array([0, 1, 2]), targets, np.array([3]), 2, 0.01)
    assert np.allclose(sharp, [[1.0, 0.0]], atol=1e-3)
    flat = nearest_definitions_estimate(definitions, np.array([0, 1, 2]), targets, np.array([3]), 3, 100.0)
    assert np.allclose(np.linalg.norm(flat, axis=1), 1.0) and 0.3 < flat[0, 1] < flat[0, 0]


def test_a_missing_sentence_encoder_names_the_package_to_install(monkeypatch):
    from datamodules import definitions

    monkeypatch.setitem(definitions.ENCODERS, "absent", "no_such_encoder_package")
    with pytest.raises(definitions.EncoderMissing, match="pip install 'no-such-encoder-package'"):
        definitions.definition_vectors(["crow: black birds"], "absent")
    with pytest.raises(definitions.WordsightError, match="unknown sentence encoder"):
        definitions.definition_vectors(["crow"], "glove")


def test_a_fast_dev_run_trains_one_step(tmp_path):
    import pytorch_lightning as pl

    from models.graph_classifiers import GraphClassifiers

    wordnet = write_wordnet(tmp_path / "wordnet", load_taxonomy().classes[::100])
    data = WordNetGraphDataModule(root="n00000001", max_steps=2, wordnet=str(wordnet))
    model = GraphClassifiers(network="gcn", hidden_dim=16, out=str(tmp_path / "out.npz"))
    pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, accelerator="cpu").fit(model, datamodule=data)
    assert model.net is not None and model.net.kind == "gcn"


def test_the_sense_prior_favours_the_senses_people_use():
    from taxonomy.hierarchy import sense_priors

    taxonomy = load_taxonomy()
    unused = next(w for w in taxonomy.synthesized if not any(taxonomy.synsets[w].counts))  # a rare leaf
    priors = sense_priors(taxonomy, ["n01579028", unused], 1.0)  # crow: used twice in the tagged corpus
    assert priors[0] > priors[1] and (priors <= 1).all()
    assert sense_priors(taxonomy, [unused], 0.0)[0] == 1.0  # strength 0: no prior


def test_the_frequency_prior_favours_words_people_use_and_needs_the_ranks():
    from taxonomy.hierarchy import DEFAULT_OPTIONS, HierarchyTagger, frequency_priors, synset_frequency_ranks

    taxonomy = load_taxonomy()
    rank_of = {"crow": 9_999, "fulmar": 99_999}  # 0-based places in frequency-ordered vectors
    crow = next(s for s in taxonomy.synsets if taxonomy.synsets[s].words[:1] == ["crow"])
    ranks = synset_frequency_ranks(taxonomy, [crow, "n00002684"], rank_of)  # object: none of its words known
    assert ranks.tolist() == [10_000, len(rank_of) + 1]
    priors = frequency_priors(np.array([10_000.0, 100_000.0, 10.0]), 1.0)
    assert priors[0] > priors[1] and priors[2] == 1.0  # a frequent word keeps all its mass
    assert (frequency_priors(np.array([100_000.0]), 0.0) == 1.0).all()
    with pytest.raises(ValueError, match="frequency_prior"):
        HierarchyTagger(["crow"], np.ones((1, 2), np.float32), DEFAULT_OPTIONS.with_(frequency_prior=1.0))


def test_an_option_off_leaves_the_identity_of_earlier_exports():
    from taxonomy.hierarchy import DEFAULT_OPTIONS

    assert DEFAULT_OPTIONS.with_(frequency_prior=0.0).key() == DEFAULT_OPTIONS.key()
    assert DEFAULT_OPTIONS.with_(frequency_prior=1.0).key() != DEFAULT_OPTIONS.key()


@pytest.mark.slow
def test_the_shipped_classifiers_tag_a_sample_photo():
    """The real artefact: a fresh clone's tagger scores it with the 1000 classes and tags a photo."""
    from datamodules.wordnet_graph import imagenet_samples
    from foundation.images import open_image
    from foundation.vectors import load_word_vectors
    from models.embedder import load_embedder
    from models.wordnet_classifiers import shipped_classifiers
    from taxonomy.hierarchy import COLOUR_STATS, HierarchyTagger

    shipped = shipped_classifiers("efficientnet_lite0")
    assert shipped is not None and len(shipped.wnids) == len(load_taxonomy().synthesized)
    samples = imagenet_samples()
    if not samples:
        pytest.skip("foolbox is not installed")
    embedder = load_embedder("conse:efficientnet_lite0").with_class_probabilities()
    assert embedder.combine.synthesized is shipped
    path, label = samples[0]
    row = embedder.embed_images([open_image(path)])[0]
    vector, probs, windows = embedder.combine.parts(row)
    assert vector.shape == (embedder.dim,) and probs.shape == (1000 + len(shipped.wnids),)
    # window tags (on by default): each window's vector, classes and colours
    assert windows.shape == (9, embedder.dim + 1000 + COLOUR_STATS)
    assert np.isclose(probs[:1000].sum(), 1.0) and np.isclose(probs[1000:].sum(), 1.0)
    assert probs[:1000].argmax() == label  # the real classes still decide what ImageNet knows
    wv = load_word_vectors()
    words = ["crow", "dog", "bird", "car", "tree", "fish", "cat", "house"]
    unit = wv.kv[words] / np.linalg.norm(wv.kv[words], axis=1, keepdims=True)
    tags = HierarchyTagger(words, unit.astype(np.float32)).tags(vector, probs, 3, windows)
    assert len(tags) == 3 and tags[0][1] >= tags[-1][1]


def test_a_vocabulary_adds_its_words_classifiers_votes_to_the_shipped_models_tags(tmp_path):
    """tag --vocabulary on a real photo: each word gains --vocabulary-weight x its share of the vote; the
    tag index's open vocabulary has no vote."""
    from PIL import Image
    from skimage import data

    from service.tagger import Tagger
    from taxonomy.hierarchy import DEFAULT_OPTIONS

    path = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    words = ["cat", "dog", "car", "teapot"]
    voted = dict(Tagger(vocabulary=words).tag(path, top_k=4).tags)
    plain = dict(Tagger(vocabulary=words, options=DEFAULT_OPTIONS.with_(vocabulary_weight=0.0)).tag(path, top_k=4).tags)
    gains = {w: voted[w] - plain[w] for w in words}
    assert max(voted, key=voted.get) == "cat" and gains["cat"] > 1.5  # most of the vote, at weight 3
    assert all(g >= -1e-4 for g in gains.values()) and sum(gains.values()) == pytest.approx(3.0, abs=1e-3)
    assert Tagger().embedding_model.combine.vocabulary is None


def test_combine_appends_the_synthesized_synsets_own_softmax():
    from models.onnx_engine import Combine
    from models.wordnet_classifiers import SynthesizedClassifiers, compress

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(6, 8)).astype(np.float32)
    codes, basis, cosine = compress(rows, rank=8)
    assert cosine > 0.99  # full rank: the rows come back (float16 aside)
    synthesized = SynthesizedClassifiers(tuple(f"n{i}" for i in range(6)), codes, basis, 0.5, {})
    combine = Combine("conse", rng.normal(size=(3, 4)).astype(np.float32), np.ones(3, bool), top_t=2,
                      with_probabilities=True, synthesized=synthesized)  # fmt: skip
    features = rng.normal(size=(2, 8)).astype(np.float32)
    out = combine({"logits": rng.normal(size=(2, 3)).astype(np.float32), "features": features})
    assert out.shape == (2, 4 + 3 + 6) and combine.extra_dims == 9
    assert np.allclose(out[:, 4:7].sum(1), 1) and np.allclose(out[:, 7:].sum(1), 1)  # two softmaxes
    expected = np.exp(features @ rows.T + 0.5)
    assert np.allclose(out[:, 7:], expected / expected.sum(1, keepdims=True), atol=1e-2)


def test_the_synsets_check_of_the_shipped_classifiers_is_remembered(tmp_path, monkeypatch):
    """The check parses the taxonomy once per pair of files; a file changed since is checked again, and a
    mismatch is never remembered."""
    import taxonomy as taxonomy_module
    from models.wordnet_classifiers import SynthesizedClassifiers, synsets_match

    synthesized = tuple(load_taxonomy().synthesized)
    artefact = tmp_path / "classifiers.npz"
    artefact.write_bytes(b"one artefact")
    same = SynthesizedClassifiers(synthesized, np.zeros((1, 1)), np.zeros((1, 1)), 0.0, {})
    other = SynthesizedClassifiers(synthesized[:-1], np.zeros((1, 1)), np.zeros((1, 1)), 0.0, {})
    assert not synsets_match(artefact, other)
    assert synsets_match(artefact, same)

    def no_parsing(*args):
        raise AssertionError("the taxonomy was parsed again")

    monkeypatch.setattr(taxonomy_module, "load_taxonomy", no_parsing)
    assert synsets_match(artefact, same)  # remembered
    artefact.write_bytes(b"another artefact")
    with pytest.raises(AssertionError, match="parsed again"):
        synsets_match(artefact, same)


def test_a_backbone_without_synthesized_classifiers_says_how_to_make_them(capsys):
    from models.embedder import _synthesized_classifiers
    from models.weights import shipped_identity
    from taxonomy.hierarchy import DEFAULT_OPTIONS

    assert _synthesized_classifiers("efficientnet_lite1", "weights", "vectors", DEFAULT_OPTIONS) is None
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "none were made for efficientnet_lite1" in note
    assert "wordsight train fit --config wordnet_classifiers.yaml --model.init_args.backbone efficientnet_lite1" in note
    lite0 = shipped_identity("efficientnet_lite0")
    assert _synthesized_classifiers("efficientnet_lite0", lite0, "other", DEFAULT_OPTIONS) is None
    assert "made from other word vectors" in capsys.readouterr().err


def test_the_imagenet_rows_are_written_once_per_backbone_weights(tmp_path, monkeypatch):
    import models.word_classifiers as wc

    monkeypatch.setattr(wc, "ARTEFACT_DIR", tmp_path)
    rows = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
    assert wc.save_imagenet_rows("efficientnet_lite1", "weights-a", rows) == tmp_path / "efficientnet_lite1.imagenet.npz"
    stored, identity = wc._real_rows("efficientnet_lite1")
    assert identity["backbone_identity"] == "weights-a" and np.allclose(stored, rows, atol=1e-2)
    assert wc.save_imagenet_rows("efficientnet_lite1", "weights-a", rows) is None  # already these weights' rows
    assert wc.save_imagenet_rows("efficientnet_lite1", "weights-b", rows) is not None
