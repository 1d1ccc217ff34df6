"""XMP sidecars: read a photo's keywords, and merge wordsight's tags into its sidecar without losing anyone's.

A sidecar is ``IMG_1234.JPG.xmp`` beside the photo (darktable, digiKam, immich) or ``IMG_1234.xmp``
(Lightroom). Keywords live in ``dc:subject`` (a bag of strings), hierarchical keywords in
``lr:hierarchicalSubject`` (``wordsight|animal|feline|cat``).

Merging rules, so a sidecar can be re-tagged any number of times:
- keywords the user or another tool wrote are never removed or reordered;
- wordsight records the keywords it added itself (``wordsight:keywords``, ``wordsight:hierarchical``);
  only those are replaced on the next run, and new ones go after everything else;
- a keyword wordsight once added that is gone from ``dc:subject`` was removed by the user: it is
  remembered (``wordsight:rejected``) and never written again;
- when nothing would change the file is not touched (a second run is byte-identical);
- writes are atomic (temp file + rename); the photo itself is never opened for writing.

Standard library only (``xml.etree``): importing it costs nothing.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foundation.atomic import write_atomic
from foundation.errors import WordsightError

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
WORDSIGHT = "https://wordsight.invalid/xmp/1.0/"  # a private namespace: readers show it, none interpret it
PREFIXES = {"x": X, "rdf": RDF, "dc": DC, "lr": LR, "wordsight": WORDSIGHT}
ROOT_KEYWORD = "wordsight"  # the top of wordsight's keyword hierarchy
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>\n'


class SidecarError(WordsightError):
    """A sidecar that exists but cannot be parsed: it is left alone and the user is told which."""


@dataclass(frozen=True)
class Tag:
    """A keyword to write; ``chain`` is its hierarchy without the root, ending in the word
    (``("animal", "feline", "cat")``); None means just ``wordsight|<word>``."""

    word: str
    score: float = 1.0
    chain: tuple[str, ...] | None = None

    @property
    def hierarchical(self) -> str:
        chain = tuple(self.chain or ())
        if not chain or chain[-1] != self.word:
            chain = (*chain, self.word)
        return "|".join((ROOT_KEYWORD, *chain))


@dataclass
class SidecarKeywords:
    """What a sidecar holds: all keywords, and which of them wordsight wrote (or the user rejected)."""

    subject: list[str] = field(default_factory=list)
    hierarchical: list[str] = field(default_factory=list)
    ours: list[str] = field(default_factory=list)
    ours_hierarchical: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def theirs(self) -> list[str]:
        """The keywords someone other than wordsight wrote."""
        ours = set(self.ours)
        return [k for k in self.subject if k not in ours]


def sidecar_path(photo: str | os.PathLike, lightroom: bool = False) -> Path:
    """``IMG_1234.JPG.xmp`` (default) or Lightroom's ``IMG_1234.xmp``."""
    photo = Path(photo)
    return photo.with_suffix(".xmp") if lightroom else photo.with_name(photo.name + ".xmp")


def existing_sidecars(photo: str | os.PathLike) -> list[Path]:
    """The photo's sidecars under either naming, the appended one first."""
    return [p for p in dict.fromkeys((sidecar_path(photo), sidecar_path(photo, lightroom=True))) if p.is_file()]


def _bag(element: ET.Element | None) -> list[str]:
    """The strings of an rdf:Bag / rdf:Seq / rdf:Alt property (or a single simple value)."""
    if element is None:
        return []
    items = [li.text or "" for li in element.iter(f"{{{RDF}}}li")]
    if not items and (element.text or "").strip():
        items = [element.text.strip()]
    return [item.strip() for item in items if item.strip()]


def _descriptions(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(f"{{{RDF}}}Description"))


def _property(root: ET.Element, namespace: str, name: str) -> ET.Element | None:
    for description in _descriptions(root):
        found = description.find(f"{{{namespace}}}{name}")
        if found is not None:
            return found
    return None


def keywords_from_xml(root: ET.Element) -> SidecarKeywords:
    """The keyword properties of a parsed XMP packet."""
    return SidecarKeywords(
        subject=_bag(_property(root, DC, "subject")),
        hierarchical=_bag(_property(root, LR, "hierarchicalSubject")),
        ours=_bag(_property(root, WORDSIGHT, "keywords")),
        ours_hierarchical=_bag(_property(root, WORDSIGHT, "hierarchical")),
        rejected=_bag(_property(root, WORDSIGHT, "rejected")),
    )


def parse_packet(data: bytes, where: str) -> tuple[ET.Element, list[tuple[str, str]]]:
    """An XMP packet (sidecar file or embedded segment) -> its root element and namespace prefixes."""
    namespaces: list[tuple[str, str]] = []
    try:
        events = ET.iterparse(io.BytesIO(data.strip(b"\x00 \r\n\t")), events=("start-ns", "end"))
        root = None
        for event, item in events:
            if event == "start-ns":
                namespaces.append(item)
            else:
                root = item
    except ET.ParseError as err:
        raise SidecarError(f"{where} is not valid XMP ({err}): fix or move it, wordsight leaves it alone") from None
    return root, namespaces


def read_sidecar(path: str | os.PathLike) -> SidecarKeywords:
    """The keywords of one sidecar file (empty if there is none)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SidecarKeywords()
    except OSError as err:
        raise SidecarError(f"cannot read {path}: {err.strerror}") from None
    return keywords_from_xml(parse_packet(data, str(path))[0])


def merge(current: SidecarKeywords, tags: Sequence[Tag]) -> SidecarKeywords:
    """The sidecar's keywords after wordsight's previous tags are replaced by ``tags`` (rules: module doc)."""
    previous = set(current.ours)
    removed_by_user = [k for k in current.ours if k not in current.subject]
    rejected = list(dict.fromkeys([*current.rejected, *removed_by_user]))
    kept = [k for k in current.subject if k not in previous]
    kept_set, refused = set(kept), set(rejected)
    fresh = [t for t in tags if t.word not in kept_set and t.word not in refused]
    added = list({t.word: t for t in fresh[::-1]}.values())  # one entry per word: the first one
    added.sort(key=fresh.index)
    ours = [t.word for t in added]
    previous_h = set(current.ours_hierarchical)
    kept_h = [k for k in current.hierarchical if k not in previous_h]
    ours_h = [h for h in dict.fromkeys(t.hierarchical for t in added) if h not in set(kept_h)]
    return SidecarKeywords(kept + ours, kept_h + ours_h, ours, ours_h, rejected)


def _empty_packet() -> ET.Element:
    root = ET.Element(f"{{{X}}}xmpmeta", {f"{{{X}}}xmptk": "wordsight"})
    rdf = ET.SubElement(root, f"{{{RDF}}}RDF")
    ET.SubElement(rdf, f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""})
    return root


def _target_description(root: ET.Element) -> ET.Element:
    """Where keyword properties go: the description already holding dc:subject, else the first one."""
    descriptions = _descriptions(root)
    for description in descriptions:
        if description.find(f"{{{DC}}}subject") is not None:
            return description
    if descriptions:
        return descriptions[0]
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f"{{{RDF}}}RDF")
    if rdf is None:
        rdf = ET.SubElement(root, f"{{{RDF}}}RDF")
    return ET.SubElement(rdf, f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""})


def _set_bag(root: ET.Element, namespace: str, name: str, values: list[str], drop: Iterable[str] = ()) -> None:
    """Make the bag property hold ``values``: items in ``drop`` are removed, the others stay as they are
    (attributes included) and missing values are appended. An empty wordsight property is removed."""
    element = _property(root, namespace, name)
    if element is None:
        if not values:
            return
        element = ET.SubElement(_target_description(root), f"{{{namespace}}}{name}")
    if not values and namespace == WORDSIGHT:
        for description in _descriptions(root):
            if element in list(description):
                description.remove(element)
        return
    bag = next((child for child in element if child.tag in {f"{{{RDF}}}Bag", f"{{{RDF}}}Seq"}), None)
    if bag is None:
        element.text = None
        bag = ET.SubElement(element, f"{{{RDF}}}Bag")
    drop = set(drop)
    present = []
    for li in list(bag):
        text = (li.text or "").strip()
        if li.tag == f"{{{RDF}}}li" and (text in drop or text not in values):
            bag.remove(li)
        else:
            present.append(text)
    for value in values:
        if value not in present:
            ET.SubElement(bag, f"{{{RDF}}}li").text = value
            present.append(value)


def _serialise(root: ET.Element, namespaces: list[tuple[str, str]]) -> bytes:
    for prefix, uri in [*namespaces, *PREFIXES.items()]:
        try:
            ET.register_namespace(prefix, uri)
        except ValueError:  # reserved ns0-style prefixes: ElementTree names those itself
            pass
    ET.indent(root, space=" ")
    return (_XPACKET_BEGIN + ET.tostring(root, encoding="unicode") + _XPACKET_END).encode("utf-8")


@dataclass
class WriteResult:
    sidecar: Path
    changed: bool
    keywords: SidecarKeywords


def write_tags(photo: str | os.PathLike, tags: Sequence[Tag], lightroom: bool = False) -> WriteResult:
    """Merge ``tags`` into the photo's sidecar (created if missing); untouched if nothing changes."""
    sidecar = sidecar_path(photo, lightroom)
    try:
        data = sidecar.read_bytes()
    except FileNotFoundError:
        data = None
    except OSError as err:
        raise SidecarError(f"cannot read {sidecar}: {err.strerror}") from None
    root, namespaces = parse_packet(data, str(sidecar)) if data else (_empty_packet(), [])
    current = keywords_from_xml(root)
    merged = merge(current, tags)
    if data is not None and merged == current:
        return WriteResult(sidecar, False, current)
    _set_bag(root, DC, "subject", merged.subject, drop=current.ours)
    _set_bag(root, LR, "hierarchicalSubject", merged.hierarchical, drop=current.ours_hierarchical)
    _set_bag(root, WORDSIGHT, "keywords", merged.ours)
    _set_bag(root, WORDSIGHT, "hierarchical", merged.ours_hierarchical)
    _set_bag(root, WORDSIGHT, "rejected", merged.rejected)
    write_atomic(sidecar, _serialise(root, namespaces), keep_mode=True)
    return WriteResult(sidecar, True, merged)


class SidecarWriter:
    """What ``tag.py --write-xmp`` calls per photo: counts written / unchanged sidecars, collects failures.

    ``chain_of(word)`` may give a word's hierarchy (e.g. its WordNet chain) for lr:hierarchicalSubject.
    """

    def __init__(self, lightroom: bool = False, chain_of=None):
        self.lightroom, self.chain_of = lightroom, chain_of
        self.written = self.unchanged = 0
        self.failed: list[tuple[str, str]] = []

    def __call__(self, photo: str | os.PathLike, tags: Sequence[tuple[str, float]]) -> None:
        chain = self.chain_of or (lambda word: None)
        try:
            result = write_tags(photo, [Tag(word, score, chain(word)) for word, score in tags], self.lightroom)
        except (SidecarError, OSError) as err:
            self.failed.append((os.fsdecode(photo), f"sidecar not written: {getattr(err, 'strerror', None) or err}"))
            return
        if result.changed:
            self.written += 1
        else:
            self.unchanged += 1

    def summary(self) -> str:
        naming = "IMG.xmp" if self.lightroom else "IMG.JPG.xmp"
        return f"XMP sidecars ({naming}): {self.written} written, {self.unchanged} already up to date"
