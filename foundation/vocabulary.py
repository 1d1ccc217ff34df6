"""The default tag vocabulary's rules: which GloVe entries count as words worth tagging with, and which are
one noun's singular and plural.

Plain stdlib, so word queries (which never load gensim) and the metrics share one definition.
"""

from __future__ import annotations

import re

DEFAULT_VOCAB_SIZE = 50_000

_ALPHABETIC = re.compile(r"[a-z]+")
# Function words carry no visual meaning but sit near everything in GloVe space, so they would crowd
# out real tags. A short list on purpose: gensim's longer one also drops "computer", "fire", "bill".
_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves also may might must shall us
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


def frequent_words(index_to_key: list[str], size: int) -> list[str]:
    """The ``size`` most frequent purely alphabetic, non-stop-word entries (GloVe is frequency-ordered)."""
    words = []
    for word in index_to_key:
        if _ALPHABETIC.fullmatch(word) and word not in STOP_WORDS:
            words.append(word)
            if len(words) == size:
                break
    return words


# Everyday irregular plurals of concrete nouns, from WordNet 3.0's exception list (noun.exc): a query for
# `men`, `people` or `leaves` finds the classifier of `man`, `person` or `leaf`, and a tag says `leaf` once,
# not `leaves` after it
IRREGULAR_PLURALS = {
    "people": "person",
    "men": "man", "women": "woman", "gentlemen": "gentleman", "fishermen": "fisherman", "policemen": "policeman",
    "firemen": "fireman", "horsemen": "horseman", "children": "child", "feet": "foot", "teeth": "tooth",
    "geese": "goose", "mice": "mouse", "lice": "louse", "oxen": "ox", "leaves": "leaf", "knives": "knife",
    "wolves": "wolf", "shelves": "shelf", "bookshelves": "bookshelf", "calves": "calf", "halves": "half",
    "loaves": "loaf", "hooves": "hoof", "scarves": "scarf", "thieves": "thief", "wives": "wife", "elves": "elf",
    "dwarves": "dwarf", "wharves": "wharf", "sheaves": "sheaf", "cacti": "cactus", "fungi": "fungus",
    "larvae": "larva", "antennae": "antenna", "vertebrae": "vertebra", "octopi": "octopus",
    "hippopotami": "hippopotamus", "radii": "radius", "nuclei": "nucleus",
}  # fmt: skip
_IRREGULAR_PLURAL_OF = {singular: plural for plural, singular in IRREGULAR_PLURALS.items()}


def noun_bases(word: str) -> set[str]:
    """The word and the singulars it may be the plural of: cats -> cat; berries -> berry; boxes -> box;
    IRREGULAR_PLURALS (men -> man). Over-generated ones (``glas`` from ``glass``) name no synset, so they do
    no harm."""
    bases = {word, *([IRREGULAR_PLURALS[word]] if word in IRREGULAR_PLURALS else [])}
    if word.endswith("s") and len(word) > 3:
        bases.add(word[:-1])
        if word.endswith("es"):
            bases.add(word[:-2])
        if word.endswith("ies"):
            bases.add(word[:-3] + "y")
    return bases


def noun_plurals(lemma: str) -> tuple[str, ...]:
    """The lemma and every word ``noun_bases`` reads as its plural: cat -> cats; box -> boxes; berry -> berries;
    man -> men. The inverse of ``noun_bases``, so a vocabulary needs no table of all its words' bases."""
    forms = [lemma, lemma + "s", lemma + "es"]
    if lemma.endswith("y"):
        forms.append(lemma[:-1] + "ies")
    irregular = (_IRREGULAR_PLURAL_OF[lemma],) if lemma in _IRREGULAR_PLURAL_OF else ()
    return (lemma, *(f for f in forms[1:] if len(f) > 3), *irregular)
