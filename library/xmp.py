"""XMP sidecars: read a photo's keywords, and merge wordsight's tags into its sidecar without losing anyone's.

A sidecar is ``IMG_1234.JPG.xmp`` beside the photo (darktable, digiKam, immich) or ``IMG_1234.xmp``
(Lightroom). A RAW+JPEG pair (``library.pairs``) is tagged once and both files' sidecars get the tags:
``IMG_1234.CR2.xmp`` and ``IMG_1234.JPG.xmp``, or for Lightroom ``IMG_1234.xmp`` (the RAW) and
``IMG_1234.JPG.xmp`` (the JPEG), never one file for both. Keywords live in ``dc:subject`` (a bag of strings), hierarchical keywords in
``lr:hierarchicalSubject`` (``wordsight|animal|feline|cat``) and, for digiKam, ``digiKam:TagsList``
(``wordsight/animal/feline/cat``).

Merging rules, so a sidecar can be re-tagged any number of times:
- keywords the user or another tool wrote are never removed or reordered;
- wordsight records the keywords it added itself (``wordsight:keywords``, ``wordsight:hierarchical``);
  only those are replaced on the next run, and new ones go after everything else;
- a keyword wordsight once added that is gone from ``dc:subject`` was removed by the user: it is
  remembered (``wordsight:rejected``) and never written again;
- when nothing would change the file is not touched (a second run is byte-identical);
- writes are atomic (temp file + rename) and keep the sidecar's owner and permissions; the photo itself is
  never opened for writing.

A rewrite edits the packet's text in place: only the keyword properties change, byte for byte everything
else stays (comments, processing instructions, other namespaces, layout, the file's UTF-8 or UTF-16
encoding). A sidecar whose keyword properties have a shape that cannot be edited that way (two copies, an
attribute, a structure) is refused, not rewritten. Files that are not regular (a FIFO) are never opened
for reading in a way that could block.

Standard library only (``pyexpat``); linear in the size of the file. libexiv2 (``pip install exiv2``) was
measured as the alternative: it drops comments and processing instructions and cannot read UTF-16
sidecars, so this module stays hand-written.
"""

from __future__ import annotations

import bisect
import codecs
import html
import os
import pyexpat
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foundation.atomic import WriteError, write_atomic
from foundation.errors import WordsightError

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"
WORDSIGHT = "https://wordsight.invalid/xmp/1.0/"  # a private namespace: readers show it, none interpret it
PREFIXES = {DC: "dc", LR: "lr", DIGIKAM: "digiKam", WORDSIGHT: "wordsight"}
ROOT_KEYWORD = "wordsight"  # the top of wordsight's keyword hierarchy
# The keyword properties: (namespace, name) -> the SidecarKeywords field holding their values.
PROPERTIES = {
    (DC, "subject"): "subject",
    (LR, "hierarchicalSubject"): "hierarchical",
    (DIGIKAM, "TagsList"): "tags_list",
    (WORDSIGHT, "keywords"): "ours",
    (WORDSIGHT, "hierarchical"): "ours_hierarchical",
    (WORDSIGHT, "rejected"): "rejected",
}
_EMPTY_PACKET = (  # what a new sidecar starts from; the keyword properties are added like to any other
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="wordsight">\n'
    f' <rdf:RDF xmlns:rdf="{RDF}">\n'
    '  <rdf:Description rdf:about=""'
    + "".join(f'\n    xmlns:{prefix}="{uri}"' for uri, prefix in PREFIXES.items())
    + '>\n  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end="w"?>\n'
).encode()
_PADDING = b"\x00 \r\n\t"  # around an embedded packet; kept as it is
_WHITESPACE = b" \r\n\t"
_OPENER = re.compile(rb"<(?:!--|\?|!\[CDATA\[)")  # tokens that may be long: comments, instructions, CDATA
_CLOSERS = {b"<!--": b"-->", b"<?": b"?>", b"<![CDATA[": b"]]>"}
_PI_TARGET = re.compile(rb"<\?[^\s?]*")
_BULK = 1 << 16
_START_TAG = re.compile(rb"""<([^\s/>]+)(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>""")
# Element names as expat gives them ("namespace name"):
_RDF, _DESCRIPTION, _LI, _VALUE = f"{RDF} RDF", f"{RDF} Description", f"{RDF} li", f"{RDF} value"
_CONTAINERS = {f"{RDF} Bag", f"{RDF} Seq"}
_PROPERTY_NAMES = {f"{namespace} {name}": (namespace, name) for namespace, name in PROPERTIES}


class SidecarError(WordsightError):
    """A sidecar that exists but cannot be read or rewritten: it is left alone and the user is told which
    and why (``where``: the file, ``reason``: a few words)."""

    def __init__(self, where: str | os.PathLike, reason: str):
        super().__init__(f"{os.fsdecode(where)}: {reason}")
        self.where, self.reason = os.fsdecode(where), reason


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


def digikam_path(hierarchical: str) -> str:
    """digiKam's ``TagsList`` form of a Lightroom hierarchical keyword: ``/`` instead of ``|``."""
    return hierarchical.replace("|", "/")


@dataclass
class SidecarKeywords:
    """What a sidecar holds: all keywords, and which of them wordsight wrote (or the user rejected)."""

    subject: list[str] = field(default_factory=list)
    hierarchical: list[str] = field(default_factory=list)
    ours: list[str] = field(default_factory=list)
    ours_hierarchical: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    tags_list: list[str] = field(default_factory=list)

    @property
    def theirs(self) -> list[str]:
        """The keywords someone other than wordsight wrote."""
        ours = set(self.ours)
        return [k for k in self.subject if k not in ours]


def sidecar_path(photo: str | os.PathLike, lightroom: bool = False) -> Path:
    """``IMG_1234.JPG.xmp`` (default) or Lightroom's ``IMG_1234.xmp``."""
    photo = Path(photo)
    return photo.with_suffix(".xmp") if lightroom else photo.with_name(photo.name + ".xmp")


def pair_sidecars(photo: str | os.PathLike, companions: Sequence[str | os.PathLike] = (), lightroom: bool = False) -> list[Path]:
    """Where a photo's tags go when its RAW ``companions`` (``library.pairs``) share them: each file's own
    ``X.EXT.xmp``; with ``lightroom``, Lightroom's ``X.xmp`` holds the RAW's and the JPEG's go to
    ``X.JPG.xmp``, so the two never write one file (a photo without companions: ``X.xmp``)."""
    if not lightroom:
        found = [sidecar_path(path) for path in (photo, *companions)]
    elif companions:
        found = [sidecar_path(photo), *(sidecar_path(path, lightroom=True) for path in companions)]
    else:
        found = [sidecar_path(photo, lightroom=True)]
    return list(dict.fromkeys(found))  # two RAWs of one shot (X.CR2, X.DNG) share Lightroom's X.xmp


def existing_sidecars(photo: str | os.PathLike) -> list[Path]:
    """The photo's sidecars under either naming, the appended one first."""
    return [p for p in dict.fromkeys((sidecar_path(photo), sidecar_path(photo, lightroom=True))) if p.is_file()]


# ---- parsing: where each keyword property sits in the packet's bytes


@dataclass(slots=True)
class _Element:
    qname: str  # as written, e.g. "rdf:Bag"
    start: int  # offset of its "<"
    body: int  # just after its start tag
    close: int = -1  # offset of its end tag (== body when self-closing)
    end: int = -1  # just after its end tag
    empty: bool = False  # written as <x/>

    @property
    def prefix(self) -> str:
        return self.qname.rpartition(":")[0]


@dataclass(slots=True)
class _Item:
    element: _Element
    text: str


@dataclass
class _Description:
    element: _Element
    prefixes: dict[str, str]  # namespace -> the prefix bound to it here


@dataclass
class _Property:
    description: _Description  # the rdf:Description holding it
    element: _Element | None  # None: written as an attribute of its rdf:Description
    items: list[_Item] = field(default_factory=list)
    container: _Element | None = None  # its rdf:Bag / rdf:Seq
    text: list[str] = field(default_factory=list)  # character data of a simple (single-string) value
    odd: str = ""  # a shape wordsight does not rewrite: why

    def values(self) -> list[str]:
        if self.container is None:
            text = "".join(self.text).strip()
            return [text] if text else []
        return [item.text for item in self.items if item.text]


class Packet:
    """One parsed XMP packet: its UTF-8 text and the position of every keyword property in it."""

    def __init__(self, data: bytes, where: str):
        self.where = where
        text, self.encoding, self.bom = _decode(data if data.strip(_PADDING) else _EMPTY_PACKET, where)
        raw = text.encode("utf-8")
        lead = len(raw) - len(raw.lstrip(_PADDING))
        fed, self._shifted_from, self._shifts = _without_bulk(raw.strip(_PADDING), lead)
        self.data = raw
        self.newline = "\r\n" if b"\r\n" in raw[:4096] else "\n"  # what added lines end with
        self.rdf: _Element | None = None
        self.descriptions: list[_Description] = []
        self.properties: dict[tuple[str, str], list[_Property]] = {}
        self._stack: list[tuple[str, _Element | None]] = []
        self._scope: list[tuple[str, str]] = []  # (prefix, namespace) declarations in force, innermost last
        self._scope_marks: list[int] = []
        self._pending_ns = 0
        self._property: _Property | None = None
        self._property_depth = 0  # its place in _stack
        self._item: _Item | None = None
        self._text_of: _Element | None = None  # the item, or its rdf:value
        self._text: list[str] = []
        parser = pyexpat.ParserCreate(encoding="utf-8", namespace_separator=" ")
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = self._doctype
        parser.StartNamespaceDeclHandler = self._namespace
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._characters
        self._parser = parser
        try:
            parser.Parse(fed, True)
        except pyexpat.ExpatError as err:
            raise SidecarError(where, f"not valid XMP ({err}): fix or move it, wordsight leaves it alone") from None
        finally:
            del self._parser  # the handlers refer back to this object

    def _doctype(self, *_):
        raise SidecarError(self.where, "not valid XMP (it declares a DTD): wordsight leaves it alone")

    def _namespace(self, prefix, uri):
        self._scope.append((prefix or "", uri))
        self._pending_ns += 1

    def _offset(self) -> int:
        """Where in ``self.data`` the parser is (it was fed the packet without padding and bulk)."""
        index = self._parser.CurrentByteIndex
        return index + self._shifts[bisect.bisect_right(self._shifted_from, index) - 1]

    def _element(self) -> _Element:
        start = self._offset()
        tag = _START_TAG.match(self.data, start)
        if tag is None:  # expat accepted what the pattern does not: leave this packet alone
            raise SidecarError(self.where, "a start tag wordsight cannot locate: left alone")
        return _Element(tag.group(1).decode(), start, tag.end(), empty=bool(tag.group(2)))

    def _start(self, name: str, attributes: dict[str, str]):
        self._scope_marks.append(len(self._scope) - self._pending_ns)
        self._pending_ns = 0
        element, found = None, self._property
        if found is not None:  # inside a keyword property: its array, the array's items
            depth = len(self._stack) - self._property_depth
            if depth == 1:
                element = self._element()
                if name in _CONTAINERS and found.container is None and not "".join(found.text).strip():
                    found.container = element
                else:
                    found.odd = "an unexpected structure"
            elif depth == 2 and name == _LI and found.container is not None and self._stack[-1][1] is found.container:
                element = self._text_of = self._element()
                self._item = _Item(element, "")
                found.items.append(self._item)
                self._text = []
            elif depth == 3 and name == _VALUE and self._item is not None:  # a qualified item: its value
                element = self._text_of = self._element()
                self._text = []
        elif name in _PROPERTY_NAMES and self.descriptions and self._stack[-1][1] is self.descriptions[-1].element:
            element = self._element()
            self._property, self._property_depth = _Property(self.descriptions[-1], element), len(self._stack)
            if attributes:
                self._property.odd = f"{_PROPERTY_NAMES[name][1]} with attributes"
            self.properties.setdefault(_PROPERTY_NAMES[name], []).append(self._property)
        elif name == _DESCRIPTION and self.rdf is not None and self._stack[-1][1] is self.rdf:
            element = self._element()
            bound = dict(self._scope)  # prefix -> namespace, innermost binding wins
            self.descriptions.append(_Description(element, {uri: prefix for prefix, uri in bound.items()}))
            for attribute, value in attributes.items():
                if attribute in _PROPERTY_NAMES:
                    key = _PROPERTY_NAMES[attribute]
                    self.properties.setdefault(key, []).append(
                        _Property(self.descriptions[-1], None, text=[value], odd=f"{key[1]} written as an attribute"))
        elif name == _RDF and self.rdf is None:
            element = self.rdf = self._element()
        self._stack.append((name, element))

    def _end(self, name: str):
        _, element = self._stack.pop()
        del self._scope[self._scope_marks.pop() :]
        if element is None:
            return
        if element.empty:
            element.close = element.end = element.body
        else:
            element.close = self._offset()
            element.end = self.data.index(b">", element.close) + 1
        if self._item is not None and element is self._item.element:
            self._item.text = "".join(self._text).strip()
            self._item = None
        elif self._property is not None and element is self._property.element:
            self._property = None

    def _characters(self, text: str):
        if self._item is not None:
            if self._stack[-1][1] is self._text_of:  # not a qualifier's or a structure's text
                self._text.append(text)
        elif self._property is not None and len(self._stack) == self._property_depth + 1:
            self._property.text.append(text)
            if text.strip() and self._property.container is not None:
                self._property.odd = "text beside its array"

    # ---- reading

    def keywords(self) -> SidecarKeywords:
        found = SidecarKeywords()
        for key, attribute in PROPERTIES.items():
            for occurrence in self.properties.get(key, ()):
                getattr(found, attribute).extend(occurrence.values())
        return found

    # ---- rewriting

    def rewritten(self, current: SidecarKeywords, merged: SidecarKeywords) -> bytes:
        """The packet's bytes with its keyword properties holding ``merged``; the rest is unchanged."""
        edits: list[tuple[int, int, str]] = []
        additions: list[tuple[tuple[str, str], list[str]]] = []
        drops = {
            "subject": set(current.ours),
            "hierarchical": set(current.ours_hierarchical),
            "tags_list": {digikam_path(h) for h in current.ours_hierarchical},
        }
        for key, attribute in PROPERTIES.items():
            values, found = getattr(merged, attribute), self.properties.get(key, [])
            if values == getattr(current, attribute):
                continue
            if len(found) > 1:
                raise self._refusal(f"{key[1]} twice")
            if not found:
                additions.append((key, values))
            elif found[0].odd:
                raise self._refusal(found[0].odd)
            elif key[0] == WORDSIGHT:  # wordsight's own bookkeeping: replaced whole, removed when empty
                edits.append(self._replace_ours(found[0], values))
            else:
                edits += self._edit_theirs(found[0], values, drops[attribute])
        if additions:
            edits.append(self._add(additions))
        edits.sort(key=lambda edit: (edit[0], edit[1]))
        out, at = [], 0
        for start, end, text in edits:
            out += [self.data[at:start], text.replace("\n", self.newline).encode()]
            at = end
        out.append(self.data[at:])
        return (self.bom + b"".join(out).decode("utf-8")).encode(self.encoding)

    def _refusal(self, why: str) -> SidecarError:
        return SidecarError(self.where, f"holds {why}, which wordsight cannot rewrite without loss: left alone")

    def _line_start(self, at: int) -> int:
        """``at`` moved back over the whitespace before it (so a removal takes its line with it)."""
        while at > 0 and self.data[at - 1] in _WHITESPACE:
            at -= 1
        return at

    def _indent(self, at: int) -> str:
        """The indentation of the line ``at`` is on (its leading whitespace after the newline)."""
        return self.data[self._line_start(at) : at].decode().rpartition("\n")[2]

    def _append(self, element: _Element, inner: str) -> tuple[int, int, str]:
        """Add ``inner`` (lines, each starting with a newline) as the last children of ``element``, whose
        start tag stays as written (a self-closing one is opened)."""
        if element.empty:
            return element.body - 2, element.body, f">{inner}\n{self._indent(element.start)}</{element.qname}>"
        at = self._line_start(element.close)
        return at, at, inner

    @staticmethod
    def _content(element: _Element, inner: str) -> tuple[int, int, str]:
        """Make ``inner`` all that is between the tags of ``element`` (a self-closing one is opened)."""
        if element.empty:
            return element.body - 2, element.body, f">{inner}</{element.qname}>"
        return element.body, element.close, inner

    def _replace_ours(self, found: _Property, values: list[str]) -> tuple[int, int, str]:
        element = found.element
        if not values:
            return self._line_start(element.start), element.end, ""
        indent = self._indent(element.start)
        return self._content(element, _bag(found.description.prefixes.get(RDF, "rdf"), values, indent) + "\n" + indent)

    def _edit_theirs(self, found: _Property, values: list[str], drop: set[str]) -> list[tuple[int, int, str]]:
        """Remove the items in ``drop`` and append the values not yet there; every other byte stays."""
        element, container, rdf = found.element, found.container, found.description.prefixes.get(RDF, "rdf")
        present = set(found.values())
        staying = present - drop
        fresh = [v for v in dict.fromkeys(values) if v not in staying]
        if container is None:  # a single string (or nothing) becomes a bag holding it first, as written
            old = "" if present & drop else self.data[element.body : element.close].strip(_WHITESPACE).decode()
            indent = self._indent(element.start)
            items = [*([old] if old else []), *map(_escape, fresh)]
            return [self._content(element, _bag(rdf, items, indent, escaped=True) + "\n" + indent)]
        edits = [(self._line_start(item.element.start), item.element.end, "") for item in found.items
                 if item.text in drop]  # fmt: skip
        if fresh:
            li = _qname(container.prefix, "li")
            first = found.items[0].element.start if found.items else None
            indent = self._indent(first) if first is not None else self._indent(container.start) + " "
            edits.append(self._append(container, "".join(f"\n{indent}<{li}>{_escape(v)}</{li}>" for v in fresh)))
        return edits

    def _add(self, additions: list[tuple[tuple[str, str], list[str]]]) -> tuple[int, int, str]:
        """Insert missing keyword properties into the rdf:Description holding dc:subject (else the first)."""
        holding = [o.description for o in self.properties.get((DC, "subject"), [])]
        target = (holding or self.descriptions or [None])[0]
        if target is None:
            if self.rdf is None:
                raise self._refusal("no rdf:RDF to add keywords to")
            rdf = self.rdf.prefix
            indent = self._indent(self.rdf.start) + " "
            inner = "".join(self._new_property(key, values, {RDF: rdf}, indent + " ") for key, values in additions)
            description = _qname(rdf, "Description")
            return self._append(self.rdf, f'\n{indent}<{description} {_qname(rdf, "about")}="">{inner}'
                                          f"\n{indent}</{description}>")
        indent = self._indent(target.element.start) + " "
        return self._append(target.element, "".join(self._new_property(key, values, target.prefixes, indent)
                                                    for key, values in additions))

    @staticmethod
    def _new_property(key: tuple[str, str], values: list[str], prefixes: dict[str, str], indent: str) -> str:
        namespace, name = key
        prefix, declare = prefixes.get(namespace), ""
        if prefix is None:
            prefix = PREFIXES[namespace]
            declare = f' xmlns:{prefix}="{namespace}"'
        qname = _qname(prefix, name)
        return f"\n{indent}<{qname}{declare}>{_bag(prefixes.get(RDF, 'rdf'), values, indent)}\n{indent}</{qname}>"


def _qname(prefix: str, name: str) -> str:
    return f"{prefix}:{name}" if prefix else name


def _escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as XML text needs them (xml.sax's escape, without its import of urllib)."""
    return html.escape(text, quote=False)


def _bag(rdf: str, values: list[str], indent: str, escaped: bool = False) -> str:
    """The lines of an ``rdf:Bag`` of ``values`` inside a property indented by ``indent``, as exiftool lays
    them out; each line starts with a newline."""
    bag, li = _qname(rdf, "Bag"), _qname(rdf, "li")
    items = "".join(f"\n{indent}  <{li}>{v if escaped else _escape(v)}</{li}>" for v in values)
    return f"\n{indent} <{bag}>{items}\n{indent} </{bag}>"


def _without_bulk(body: bytes, lead: int) -> tuple[bytes, list[int], list[int]]:
    """``body`` with its comments and processing instructions over 64 KB emptied, and the map back: from
    each position ``_shifted_from[i]`` of the result on, add ``_shifts[i]`` to get a position in the packet.

    pyexpat feeds expat 1 MB at a time, and expat rescans a token that spans pieces from its start, so a
    40 MB comment would cost seconds to minutes; nothing in comments or instructions is ever read.
    """
    pieces, shifted_from, shifts = [], [0], [lead]
    at = searched = size = 0
    while found := _OPENER.search(body, searched):
        end = body.find(_CLOSERS[found.group()], found.end())
        if end < 0:
            break  # unterminated: expat reports it
        searched = end = end + len(_CLOSERS[found.group()])
        if found.group() == b"<![CDATA[" or end - found.start() < _BULK:
            continue  # character data is read; small tokens cost nothing
        short = b"<!---->" if found.group() == b"<!--" else _PI_TARGET.match(body, found.start()).group() + b"?>"
        pieces += [body[at : found.start()], short]
        size += found.start() - at + len(short)
        shifted_from.append(size)
        shifts.append(shifts[-1] + end - found.start() - len(short))
        at = end
    pieces.append(body[at:])
    return b"".join(pieces), shifted_from, shifts


def _decode(data: bytes, where: str) -> tuple[str, str, str]:
    """(text, encoding, byte-order mark) of a packet in UTF-8 or UTF-16, as exiftool reads them."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, bom = "utf-8", "\ufeff"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, bom = ("utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"), "\ufeff"
    elif data[:2] in (b"<\x00", b"\x00<"):  # UTF-16 without a byte-order mark
        encoding, bom = ("utf-16-le" if data[:1] == b"<" else "utf-16-be"), ""
    else:
        encoding, bom = "utf-8", ""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise SidecarError(where, f"not valid XMP (not {encoding.upper()}: {err.reason} at byte {err.start}): "
                                  "fix or move it, wordsight leaves it alone") from None
    return text.removeprefix(bom), encoding, bom


# ---- files


def _read_regular(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes and status of a regular file (None if there is none); a FIFO, device or folder is refused
    without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SidecarError(path, f"cannot read ({err.strerror})") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise SidecarError(path, "not a regular file: wordsight leaves it alone")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(), status
    except OSError as err:
        raise SidecarError(path, f"cannot read ({err.strerror})") from None
    finally:
        os.close(fd)


def read_packet(data: bytes, where: str) -> SidecarKeywords:
    """The keyword properties of an XMP packet (a sidecar's bytes or an image's embedded segment)."""
    return Packet(data, where).keywords()


def read_sidecar(path: str | os.PathLike) -> SidecarKeywords:
    """The keywords of one sidecar file (empty if there is none)."""
    found = _read_regular(Path(path))
    return read_packet(found[0], os.fsdecode(path)) if found else SidecarKeywords()


def merge(current: SidecarKeywords, tags: Sequence[Tag]) -> SidecarKeywords:
    """The sidecar's keywords after wordsight's previous tags are replaced by ``tags`` (rules: module doc)."""
    previous, subject = set(current.ours), set(current.subject)
    removed_by_user = [k for k in current.ours if k not in subject]
    rejected = list(dict.fromkeys([*current.rejected, *removed_by_user]))
    kept = [k for k in current.subject if k not in previous]
    kept_set, refused = set(kept), set(rejected)
    added: dict[str, Tag] = {}  # one entry per word: the first one
    for tag in tags:
        if tag.word not in kept_set and tag.word not in refused:
            added.setdefault(tag.word, tag)
    ours = list(added)
    previous_h = set(current.ours_hierarchical)
    kept_h = [k for k in current.hierarchical if k not in previous_h]
    kept_h_set = set(kept_h)
    ours_h = [h for h in dict.fromkeys(t.hierarchical for t in added.values()) if h not in kept_h_set]
    previous_t = {digikam_path(h) for h in current.ours_hierarchical}
    kept_t = [k for k in current.tags_list if k not in previous_t]
    kept_t_set = set(kept_t)
    ours_t = [t for t in map(digikam_path, ours_h) if t not in kept_t_set]
    return SidecarKeywords(kept + ours, kept_h + ours_h, ours, ours_h, rejected, kept_t + ours_t)


@dataclass
class WriteResult:
    sidecar: Path
    changed: bool
    keywords: SidecarKeywords


def write_tags(photo: str | os.PathLike, tags: Sequence[Tag], lightroom: bool = False) -> WriteResult:
    """Merge ``tags`` into the photo's sidecar (created if missing); untouched if nothing changes."""
    return write_sidecar(sidecar_path(photo, lightroom), tags)


def write_sidecar(sidecar: Path, tags: Sequence[Tag]) -> WriteResult:
    """Merge ``tags`` into the sidecar file ``sidecar`` (created if missing); untouched if nothing changes."""
    found = _read_regular(sidecar)
    packet = Packet(found[0] if found else _EMPTY_PACKET, str(sidecar))
    current = packet.keywords()
    merged = merge(current, tags)
    if found is not None and merged == current:
        return WriteResult(sidecar, False, current)
    try:
        write_atomic(sidecar, packet.rewritten(current, merged), like=found[1] if found else None)
    except WriteError as err:
        raise SidecarError(sidecar, str(err)) from None
    return WriteResult(sidecar, True, merged)


class SidecarWriter:
    """What ``tag.py --write-xmp`` calls per photo: counts written / unchanged sidecars, and collects the
    ones that could not be written as (sidecar, reason) skips, so one bad sidecar never stops the run.

    ``chain_of(word)`` may give a word's hierarchy (e.g. its WordNet chain) for lr:hierarchicalSubject.
    """

    def __init__(self, lightroom: bool = False, chain_of=None):
        self.lightroom, self.chain_of = lightroom, chain_of
        self.written = self.unchanged = 0
        self.failed: list[tuple[str, str]] = []

    def __call__(self, photo: str | os.PathLike, tags: Sequence[tuple[str, float]],
                 companions: Sequence[str | os.PathLike] = ()) -> None:  # fmt: skip
        """Tags of ``photo`` into its sidecar, and into those of its RAW ``companions`` (``pair_sidecars``)."""
        chain = self.chain_of or (lambda word: None)
        keywords = [Tag(word, score, chain(word)) for word, score in tags]
        for sidecar in pair_sidecars(photo, companions, self.lightroom):
            try:
                result = write_sidecar(sidecar, keywords)
            except SidecarError as err:
                self.failed.append((err.where, f"sidecar not written: {err.reason}"))
                continue
            if result.changed:
                self.written += 1
            else:
                self.unchanged += 1

    def summary(self) -> str:
        naming = "IMG.xmp; a RAW+JPEG pair's JPEG: IMG.JPG.xmp" if self.lightroom else "IMG.JPG.xmp"
        return f"XMP sidecars ({naming}): {self.written} written, {self.unchanged} already up to date"
