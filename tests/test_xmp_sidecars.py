"""XMP sidecars that are not only ours: what other tools wrote survives a rewrite byte for byte, odd files
are skipped with a reason instead of hanging or stopping the run, and big sidecars stay fast.

Sidecars are tiny files written here (or by exiftool, the reader photo managers agree with); reading back
goes through exiftool where the point is that other tools see what wordsight wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import tag
from library.keywords import photo_keywords
from library.xmp import SidecarError, SidecarWriter, Tag, read_sidecar, sidecar_path, write_tags
from tests.fakes import write_colour_images

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="apt-get install libimage-exiftool-perl (make system-deps)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another user, chattr)")

CAT = Tag("cat", 0.9, ("animal", "feline", "cat"))
THEIRS = """<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<!-- written by a photo manager: keep me -->
<?adobe-xap-filters esc="CRLF"?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Other 1.0'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <!-- a note inside the RDF -->
 <rdf:Description rdf:about=''
  xmlns:dc='http://purl.org/dc/elements/1.1/'
  xmlns:acme='http://acme.example/ns/1.0/'
  acme:flag='on'>
  <dc:subject>
   <rdf:Bag>
    <rdf:li>holiday</rdf:li>
    <!-- chosen by grandma -->
    <rdf:li xml:lang='en'>Tom &amp; Jerry</rdf:li>
   </rdf:Bag>
  </dc:subject>
  <acme:album rdf:parseType='Resource'>
   <acme:name>Summer &#x26; sea</acme:name>
   <acme:order>3</acme:order>
  </acme:album>
  <?acme-hint keep="yes"?>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>
"""


def exiftool(*args) -> dict:
    result = subprocess.run([EXIFTOOL, "-j", "-struct", *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)[0]


def in_order(lines: list[str], within: list[str]) -> bool:
    """Whether ``lines`` all appear in ``within``, in the same order (others may come between)."""
    rest = iter(within)
    return all(any(line == other for other in rest) for line in lines)


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() of a FIFO."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@needs_exiftool
def test_a_rewrite_keeps_everything_not_ours_byte_for_byte(tmp_path):
    photo = tmp_path / "p.jpg"
    sidecar_path(photo).write_text(THEIRS)
    result = write_tags(photo, [CAT, Tag("sofa")])
    assert result.changed
    written = sidecar_path(photo).read_text()
    assert in_order(THEIRS.splitlines(), written.splitlines())  # comments, PIs, acme:*, layout, quotes
    read = exiftool("-XMP:all", sidecar_path(photo))
    assert read["Subject"] == ["holiday", "Tom & Jerry", "cat", "sofa"]
    assert read["Album"] == {"Name": "Summer & sea", "Order": 3} and read["Flag"] == "on"
    assert read["HierarchicalSubject"] == ["wordsight|animal|feline|cat", "wordsight|sofa"]

    # the next run replaces wordsight's keywords; what is left is the original plus the bookkeeping
    write_tags(photo, [Tag("dog")])
    again = sidecar_path(photo).read_text()
    assert in_order(THEIRS.splitlines(), again.splitlines()) and "cat" not in again and "sofa" not in again
    assert read_sidecar(sidecar_path(photo)).subject == ["holiday", "Tom & Jerry", "dog"]


@needs_exiftool
def test_digikam_tags_list_holds_the_hierarchy_with_slashes(tmp_path):
    photo = tmp_path / "p.jpg"
    subprocess.run([EXIFTOOL, "-q", "-o", sidecar_path(photo), "-XMP-dc:Subject=grandma",
                    "-XMP-digiKam:TagsList=People/grandma"], check=True)  # fmt: skip
    write_tags(photo, [CAT])
    read = exiftool("-XMP-digiKam:TagsList", "-XMP-dc:Subject", sidecar_path(photo))
    assert read["TagsList"] == ["People/grandma", "wordsight/animal/feline/cat"]
    assert read["Subject"] == ["grandma", "cat"]
    write_tags(photo, [Tag("dog", chain=("animal", "canine", "dog"))])  # only wordsight's own path replaced
    assert exiftool("-XMP-digiKam:TagsList", sidecar_path(photo))["TagsList"] == [
        "People/grandma", "wordsight/animal/canine/dog"]


@needs_exiftool
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])  # with a byte-order mark (LE here), without
def test_a_utf16_sidecar_is_read_and_stays_utf16(tmp_path, encoding):
    photo = tmp_path / "p.jpg"
    sidecar_path(photo).write_bytes(THEIRS.encode(encoding))
    assert read_sidecar(sidecar_path(photo)).subject == ["holiday", "Tom & Jerry"]
    assert photo_keywords(photo).keywords == ["holiday", "Tom & Jerry"]
    write_tags(photo, [CAT])
    data = sidecar_path(photo).read_bytes()
    assert data[:2] == THEIRS.encode(encoding)[:2]  # same byte order, same mark (or none)
    assert in_order(THEIRS.splitlines(), data.decode(encoding).splitlines())
    assert exiftool("-XMP-dc:Subject", sidecar_path(photo))["Subject"] == ["holiday", "Tom & Jerry", "cat"]


@pytest.mark.parametrize("body, why", [
    ('<rdf:Description rdf:about="" dc:subject="holiday"/>', "written as an attribute"),
    (("<rdf:Description><dc:subject><rdf:Bag><rdf:li>a</rdf:li></rdf:Bag></dc:subject></rdf:Description>"
     "<rdf:Description><dc:subject><rdf:Bag><rdf:li>b</rdf:li></rdf:Bag></dc:subject></rdf:Description>"), "twice"),
    ("<rdf:Description><dc:subject><rdf:Alt><rdf:li>a</rdf:li></rdf:Alt></dc:subject></rdf:Description>",
     "unexpected structure"),
])  # fmt: skip
def test_keyword_properties_of_an_odd_shape_are_refused_not_rewritten(tmp_path, body, why):
    photo = tmp_path / "p.jpg"
    packet = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
              f'xmlns:dc="http://purl.org/dc/elements/1.1/">{body}</rdf:RDF></x:xmpmeta>')  # fmt: skip
    sidecar_path(photo).write_text(packet)
    with pytest.raises(SidecarError, match=f"{why}.*cannot rewrite without loss"):
        write_tags(photo, [CAT])
    assert sidecar_path(photo).read_text() == packet


@needs_exiftool
@pytest.mark.parametrize("description, subject", [
    ('<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"/>', []),
    (('<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
     "<dc:subject>holiday &amp; sea</dc:subject></rdf:Description>"), ["holiday & sea"]),
    (('<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag/>'
     "</dc:subject></rdf:Description>"), []),
    (('<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
      '<rdf:li rdf:parseType="Resource"><rdf:value>sea</rdf:value><q:by xmlns:q="urn:q">me</q:by></rdf:li>'
      "</rdf:Bag></dc:subject></rdf:Description>"), ["sea"]),  # a qualified keyword
    ("", []),
])  # fmt: skip
def test_short_forms_are_opened_and_a_single_keyword_becomes_a_bag(tmp_path, description, subject):
    photo = tmp_path / "p.jpg"
    sidecar_path(photo).write_text(f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                                   f'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">{description}'
                                   "</rdf:RDF></x:xmpmeta>")  # fmt: skip
    assert read_sidecar(sidecar_path(photo)).subject == subject
    write_tags(photo, [CAT])
    read = exiftool("-XMP:all", sidecar_path(photo))
    assert read["Subject"] == [*subject, "cat"] and read["TagsList"] == ["wordsight/animal/feline/cat"]


def test_an_empty_sidecar_is_filled_and_added_lines_follow_crlf(tmp_path):
    empty, crlf = tmp_path / "e.jpg", tmp_path / "c.jpg"
    sidecar_path(empty).write_bytes(b"")
    assert read_sidecar(sidecar_path(empty)).subject == []
    write_tags(empty, [CAT])
    assert read_sidecar(sidecar_path(empty)).tags_list == ["wordsight/animal/feline/cat"]
    sidecar_path(crlf).write_bytes(THEIRS.replace("\n", "\r\n").encode())
    write_tags(crlf, [CAT])
    data = sidecar_path(crlf).read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > THEIRS.count("\n")
    assert read_sidecar(sidecar_path(crlf)).subject == ["holiday", "Tom & Jerry", "cat"]


def test_a_dtd_is_refused_so_entities_never_expand(tmp_path):
    photo = tmp_path / "p.jpg"
    sidecar_path(photo).write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                                   '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>')  # fmt: skip
    with pytest.raises(SidecarError, match="DTD"):
        read_sidecar(sidecar_path(photo))


def test_80000_keywords_and_a_40_mb_comment_take_seconds_not_minutes(tmp_path):
    many, big = tmp_path / "many.jpg", tmp_path / "big.jpg"
    items = "".join(f"<rdf:li>k{i}</rdf:li>\n" for i in range(80_000))
    sidecar_path(many).write_text(THEIRS.replace("<rdf:li>holiday</rdf:li>", items))
    huge = THEIRS.replace("a note inside the RDF", "x" * 40_000_000).replace("<!-- chosen", f"<?big {'y' * 70_000}?><!-- chosen")
    sidecar_path(big).write_text(huge)
    start = time.perf_counter()
    write_tags(many, [CAT, *(Tag(f"new{i}") for i in range(1000))])
    write_tags(many, [Tag("dog")])  # replaces 1001 of ours among 80,000 of theirs
    write_tags(big, [CAT])
    took = time.perf_counter() - start
    assert took < 30, f"{took:.1f} s (quadratic merging took minutes)"
    assert len(read_sidecar(sidecar_path(many)).subject) == 80_002
    assert in_order(huge.splitlines(), sidecar_path(big).read_text().splitlines())
    assert read_sidecar(sidecar_path(big)).subject == ["holiday", "Tom & Jerry", "cat"]


def test_a_fifo_sidecar_is_skipped_at_once(tmp_path):
    photo = tmp_path / "p.jpg"
    os.mkfifo(sidecar_path(photo))
    writer = SidecarWriter()
    with deadline(20):
        writer(photo, [("cat", 0.9)])
        assert photo_keywords(photo).keywords == []
        with pytest.raises(SidecarError, match="not a regular file"):
            read_sidecar(sidecar_path(photo))
    assert writer.failed == [(str(sidecar_path(photo)), "sidecar not written: not a regular file: wordsight leaves it alone")]


@needs_root
def test_a_rewrite_keeps_owner_and_mode(tmp_path):
    photo = tmp_path / "p.jpg"
    sidecar_path(photo).write_text(THEIRS)
    os.chown(sidecar_path(photo), 12345, 23456)
    os.chmod(sidecar_path(photo), 0o640)
    assert write_tags(photo, [CAT]).changed
    status = sidecar_path(photo).stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (12345, 23456, 0o640)


@contextlib.contextmanager
def immutable(path: Path):
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not possible here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@needs_root
def test_one_unwritable_and_one_fifo_sidecar_are_skipped_and_the_rest_written(tmp_path, space, fake_embedder, capfd):
    photos = write_colour_images(tmp_path / "photos", names=("red", "green", "blue", "pink"))
    sidecar_path(photos["green"]).write_text(THEIRS)
    os.mkfifo(sidecar_path(photos["blue"]))
    with immutable(sidecar_path(photos["green"])), deadline(120):
        code = tag.main([str(tmp_path / "photos"), "--words-index", str(space.words_index), "--write-xmp",
                         "--top-k", "2"])  # fmt: skip
    err = capfd.readouterr().err
    assert code == 3, err
    assert "2 written" in err and "skipped 2 files" in err and ".tmp-" not in err
    assert f"{sidecar_path(photos['green'])} (sidecar not written: cannot write {sidecar_path(photos['green'])}: operation not permitted" in err
    assert f"{sidecar_path(photos['blue'])} (sidecar not written: not a regular file" in err
    assert sidecar_path(photos["green"]).read_text() == THEIRS
    assert len(read_sidecar(sidecar_path(photos["red"])).ours) == 2
    assert len(read_sidecar(sidecar_path(photos["pink"])).ours) == 2
