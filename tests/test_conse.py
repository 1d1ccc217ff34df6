import math

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from PIL import Image
from torch import nn

from foundation.vectors import WordVectors, load_word_vectors
from models.backbones import build_backbone, image_transform
from models.conse import ConSE, class_word_vectors, imagenet_label_vectors
from taxonomy.hierarchy import PLAIN

# Five classes with these softmax probabilities (image 0) and the reverse order (image 1).
PROBS = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.15, 0.2, 0.5]])
VECTORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [2.0, 2.0]])
ALL_VALID = torch.ones(5, dtype=torch.bool)


class FixedClassifier(nn.Module):
    """Backbone stand-in: an "image" is the row index of its logits."""

    def classify(self, images):
        return PROBS.log()[images]


def conse(valid=ALL_VALID, top_t=2):
    return ConSE(FixedClassifier(), VECTORS, valid, top_t=top_t)


def test_weighted_mean_of_the_top_t_word_vectors():
    out = conse(top_t=2)(torch.tensor([0, 1]))
    expected_0 = (0.5 * VECTORS[0] + 0.2 * VECTORS[1]) / 0.7
    expected_1 = (0.5 * VECTORS[4] + 0.2 * VECTORS[3]) / 0.7
    torch.testing.assert_close(out, torch.stack([expected_0, expected_1]))


def test_top_t_truncates_and_renormalises():
    top3 = conse(top_t=3)(torch.tensor([0]))[0]
    torch.testing.assert_close(top3, (0.5 * VECTORS[0] + 0.2 * VECTORS[1] + 0.15 * VECTORS[2]) / 0.85)
    everything = conse(top_t=5)(torch.tensor([0]))[0]
    torch.testing.assert_close(everything, PROBS[0] @ VECTORS)
    same_vector = ConSE(FixedClassifier(), torch.ones(5, 2), ALL_VALID, top_t=3)(torch.tensor([0, 1]))
    torch.testing.assert_close(same_vector, torch.ones(2, 2))  # weights sum to 1


def test_invalid_classes_are_skipped():
    valid = torch.tensor([False, True, True, True, False])
    out = conse(valid, top_t=2)(torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], (0.2 * VECTORS[1] + 0.15 * VECTORS[2]) / 0.35)
    torch.testing.assert_close(out[1], (0.2 * VECTORS[3] + 0.15 * VECTORS[2]) / 0.35)


def test_a_dominant_invalid_class_does_not_underflow():
    """Renormalising probabilities of ~1e-40 would give 0/0; ConSE must still return the top-T mean."""

    class Confident(nn.Module):
        def classify(self, images):
            return torch.tensor([[200.0, 2.0, 1.0, 0.0, 0.0]])

    out = ConSE(Confident(), VECTORS, torch.tensor([False, True, True, True, True]), top_t=2)(
        torch.tensor([0])
    )
    weights = torch.tensor([math.e, 1.0]) / (math.e + 1)
    torch.testing.assert_close(out[0], weights @ VECTORS[1:3])


def test_bad_shapes_and_top_t_are_refused():
    with pytest.raises(ValueError, match="top_t=3"):
        conse(torch.tensor([True, True, False, False, False]), top_t=3)
    with pytest.raises(ValueError, match="must be"):
        ConSE(FixedClassifier(), VECTORS, torch.ones(4, dtype=torch.bool))


def fake_vectors(words, dim=3):
    kv = KeyedVectors(dim)
    kv.add_vectors(words, np.random.default_rng(0).normal(size=(len(words), dim)).astype(np.float32))
    return WordVectors(kv=kv, source="fake", sha="fake")


def word_vector(wv, *words):
    return torch.tensor(wv.kv[list(words)].mean(axis=0))


def test_class_vectors_use_the_first_synonym_with_a_known_word():
    wv = fake_vectors(["tabby", "cat", "german", "shepherd", "dog"])
    names = ["tabby, tabby cat", "xyzzy, German shepherd dog", "qwertyuiop", "Cat"]
    vectors, valid = class_word_vectors(names, wv)
    assert valid.tolist() == [True, True, False, True]
    torch.testing.assert_close(vectors[0], word_vector(wv, "tabby"))
    torch.testing.assert_close(vectors[1], word_vector(wv, "german", "shepherd", "dog"))
    assert not vectors[2].any()
    torch.testing.assert_close(vectors[3], word_vector(wv, "cat"))


def test_plain_imagenet_class_vectors_follow_logit_order():
    wv = fake_vectors(["tabby", "cat", "espresso"])
    vectors, valid = imagenet_label_vectors(wv, PLAIN)
    assert vectors.shape == (1000, 3) and valid.shape == (1000,)
    torch.testing.assert_close(vectors[281], word_vector(wv, "tabby"))
    torch.testing.assert_close(vectors[282], word_vector(wv, "cat"))  # "tiger cat": only "cat" known
    torch.testing.assert_close(vectors[967], word_vector(wv, "espresso"))
    assert not valid[0] and not vectors[~valid].any()


@pytest.mark.slow
def test_conse_with_shipped_weights_and_glove_puts_photos_near_their_words():
    skimage_data = pytest.importorskip("skimage.data")
    wv = load_word_vectors()
    vectors, valid = imagenet_label_vectors(wv, PLAIN)
    assert valid.sum() > 950
    model = ConSE(build_backbone("efficientnet_lite0"), vectors, valid)
    transform = image_transform("efficientnet_lite0", 224)
    for picture, word in (("chelsea", "cat"), ("coffee", "espresso")):
        with torch.no_grad():
            out = model(transform(Image.fromarray(getattr(skimage_data, picture)()))[None])[0]
        nearest = wv.kv.similar_by_vector(out.numpy(), topn=3)
        print(picture, nearest)
        assert nearest[0][0] == word
