"""Visual output for tag and search results: a self-contained HTML gallery and a PNG contact sheet.

Both take the same rows: one per tagged image or per query, each with its hits (words, or images with
scores). The HTML embeds its thumbnails as base64 JPEG so the single file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field

from foundation.atomic import atomic_file, write_atomic

THUMB = 160  # px, longest side of a thumbnail
_CAPTION = 34  # px under each thumbnail in the contact sheet
_PAD = 8
_PLACEHOLDER = (200, 200, 200)


@dataclass
class Hit:
    label: str  # a word, or an image's file name
    score: float
    image: str | None = None  # set for image hits


@dataclass
class Row:
    title: str  # the tagged image or the query
    image: str | None = None  # the tagged image or the query image, shown first
    hits: list[Hit] = field(default_factory=list)


def thumbnail(path: str | os.PathLike):
    """The image scaled to fit THUMB x THUMB (tiny images grow too), or a grey placeholder if unreadable.

    Decoded like the web app's thumbnails: the shared loader's draft decoding (``open_image(min_side=)``),
    so a 4000x3000 JPEG decodes at 500x375, never in full."""
    from PIL import Image, ImageOps

    from foundation.images import BadImage, open_image

    try:
        image = open_image(path, min_side=THUMB)
    except BadImage:
        return Image.new("RGB", (THUMB, THUMB), _PLACEHOLDER)
    return ImageOps.contain(image, (THUMB, THUMB))


def _data_uri(path: str) -> str:
    buffer = io.BytesIO()
    thumbnail(path).save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body { font-family: sans-serif; margin: 16px; background: #fff; color: #222; }
section { margin-bottom: 24px; }
h2 { font-size: 15px; font-weight: normal; margin: 4px 0; }
.hits { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; width: 160px; font-size: 12px; overflow-wrap: anywhere; }
figure.query { border-right: 2px solid #888; padding-right: 10px; }
img { display: block; max-width: 160px; max-height: 160px; }
ol { margin: 0; font-size: 14px; }
.score { color: #777; }
"""


def write_html(path: str | os.PathLike, rows: list[Row], heading: str) -> None:
    """Write the gallery to ``path`` (one file, no external references)."""
    from foundation.images import printable

    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'>{_HTML_MARK}<title>{html.escape(heading)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(heading)}</h1>",
    ]
    for row in rows:
        parts.append(f"<section><h2>{html.escape(printable(row.title))}</h2><div class='hits'>")
        if row.image is not None:
            parts.append(f"<figure class='query'><img src='{_data_uri(row.image)}' alt=''></figure>")
        words = [hit for hit in row.hits if hit.image is None]
        if words:
            items = "".join(
                f"<li>{html.escape(hit.label)} <span class='score'>{hit.score:.3f}</span></li>"
                for hit in words
            )
            parts.append(f"<ol>{items}</ol>")
        for hit in row.hits:
            if hit.image is not None:
                caption = f"{html.escape(printable(hit.label))}<br><span class='score'>{hit.score:.3f}</span>"
                parts.append(
                    f"<figure><img src='{_data_uri(hit.image)}' alt=''><figcaption>{caption}</figcaption></figure>"
                )
        parts.append("</div></section>")
    parts.append("</body></html>\n")
    write_atomic(path, "".join(parts))


def write_grid(path: str | os.PathLike, rows: list[Row]) -> None:
    """Write a contact sheet to ``path``: one line per row, the tagged or query image first, then its hits."""
    from PIL import Image, ImageDraw, ImageFont

    from foundation.images import printable

    font = ImageFont.load_default(size=13)
    cell_w, cell_h = THUMB + _PAD, THUMB + _CAPTION + _PAD
    columns = max(_cells(row) for row in rows) if rows else 1
    sheet = Image.new("RGB", (columns * cell_w + _PAD, len(rows) * (cell_h + 20) + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    y = _PAD
    for row in rows:
        draw.text((_PAD, y), _fit(printable(row.title), font, columns * cell_w), fill="black", font=font)
        y += 20
        x = _PAD
        if row.image is not None:
            sheet.paste(thumbnail(row.image), (x, y))
            x += cell_w
        words = [hit for hit in row.hits if hit.image is None]
        if words:
            lines = [f"{hit.label} {hit.score:.3f}" for hit in words]
            draw.multiline_text((x, y), "\n".join(lines), fill="black", font=font, spacing=2)
            x += cell_w
        for hit in row.hits:
            if hit.image is not None:
                sheet.paste(thumbnail(hit.image), (x, y))
                caption = f"{_fit(printable(hit.label), font, THUMB)}\n{hit.score:.3f}"
                draw.multiline_text((x, y + THUMB + 2), caption, fill="black", font=font, spacing=2)
                x += cell_w
        y += cell_h
    kind = Image.registered_extensions().get(os.path.splitext(os.fspath(path))[1].lower(), "PNG")
    mark = {"comment": GENERATOR} if kind == "JPEG" else {"pnginfo": _png_mark()} if kind == "PNG" else {}
    with atomic_file(path) as handle:
        sheet.save(handle, format=kind, **mark)


GENERATOR = "wordsight"
_HTML_MARK = f"<meta name='generator' content='{GENERATOR}'>"


def _png_mark():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", GENERATOR)
    return info


def written_by_us(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` is a gallery or contact sheet this module wrote (so it may be replaced)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return (
        _HTML_MARK.encode() in head
        or b"tEXtSoftware\x00" + GENERATOR.encode() in head  # PNG text chunk, right after the header
        or (head.startswith(b"\xff\xd8") and b"\xff\xfe" in head and GENERATOR.encode() in head)  # JPEG comment
    )


def _cells(row: Row) -> int:
    images = sum(1 for hit in row.hits if hit.image is not None)
    return (row.image is not None) + (len(row.hits) > images) + images


def _fit(text: str, font, width: int) -> str:
    """``text`` shortened from the left (file names matter more than folders) to fit ``width`` pixels."""
    while len(text) > 1 and font.getlength(text) > width:
        text = "…" + text[2:]
    return text
