"""The README's screenshot, stamped with the page source it was taken from.

The stamp is a PNG text chunk holding a digest of the templates and the stylesheet, so a test can
tell, without a browser, whether the committed screenshot still shows the page as it is.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

from .processes import PROJECT

SCREENSHOT = PROJECT / "docs" / "screenshot.png"
KEYWORD = b"settings-ui-page-source"
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def page_source_digest() -> str:
    """A digest of everything that decides how the page looks: its templates and its stylesheet."""
    digest = hashlib.sha256()
    for path in sorted([*(PROJECT / "templates").rglob("*.html"), PROJECT / "static" / "style.css"]):
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png.startswith(_SIGNATURE), "not a PNG"
    chunks, offset = [], len(_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        chunks.append((kind, data))
        offset += 12 + length
    return chunks


def stamped(png: bytes, digest: str) -> bytes:
    """``png`` with the page source's digest in a text chunk right after its header."""
    data = KEYWORD + b"\0" + digest.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    header_end = len(_SIGNATURE) + 12 + 13  # the IHDR chunk is always first, 13 bytes of data
    return png[:header_end] + chunk + png[header_end:]


def stamp_of(png: bytes) -> str | None:
    """The digest a screenshot was stamped with, if any."""
    for kind, data in _chunks(png):
        keyword, _, text = data.partition(b"\0")
        if kind == b"tEXt" and keyword == KEYWORD:
            return text.decode()
    return None
