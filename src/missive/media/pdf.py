"""PDFs read with PDFium (pypdfium2): their pages' text, and pictures of their pages.

PDFium is not thread-safe, and requests are prepared in worker threads: every call into it holds
`_PDFIUM`. A PDF is read once per request step and again when its prompt is rendered, so the text
of the last few PDFs read is kept, by digest.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

MAX_PDF_BYTES = 32 * 1024 * 1024  # the API's request limit, which is what bounds a PDF there
PAGE_IMAGE_EDGE = 1568  # a page picture's long edge in pixels: the largest the Claude API keeps unresized

_PDFIUM = threading.Lock()
_TEXTS: OrderedDict[bytes, list[str]] = OrderedDict()
_TEXTS_KEPT = 16


class PdfError(Exception):
    """What is wrong with a PDF, for the client."""


def page_texts(data: bytes) -> list[str]:
    """The text of each page, in order; `PdfError` for a PDF that is too large, encrypted or corrupt."""
    if len(data) > MAX_PDF_BYTES:
        raise PdfError(f"PDF exceeds 32 MB maximum: {len(data)} bytes > {MAX_PDF_BYTES} bytes")
    key = hashlib.sha256(data).digest()
    with _PDFIUM:
        if key in _TEXTS:
            _TEXTS.move_to_end(key)
            return _TEXTS[key]
        document = _open(data)
        try:
            texts = [_page_text(document, index) for index in range(len(document))]
        finally:
            document.close()
        _TEXTS[key] = texts
        while len(_TEXTS) > _TEXTS_KEPT:
            _TEXTS.popitem(last=False)
    return texts


def page_png(data: bytes, index: int) -> bytes:
    """Page `index` (from 0) as a PNG, its long edge `PAGE_IMAGE_EDGE` pixels."""
    out = io.BytesIO()
    with _PDFIUM:
        document = _open(data)
        try:
            page = document[index]
            width, height = page.get_size()  # points
            bitmap = page.render(scale=PAGE_IMAGE_EDGE / max(width, height, 1.0))
            bitmap.to_pil().save(
                out, format="PNG"
            )  # the picture shares the bitmap's memory: saved before it goes
            bitmap.close()
            page.close()
        finally:
            document.close()
    return out.getvalue()


def _open(data: bytes) -> pdfium.PdfDocument:
    if not data.lstrip()[:5] == b"%PDF-":
        raise PdfError("The PDF specified was not valid: it does not start with %PDF-")
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        code = getattr(error, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise PdfError("The PDF is encrypted or password-protected, which is not supported") from None
        raise PdfError("The PDF specified was not valid: it could not be read") from None


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            return textpage.get_text_bounded().replace("\r\n", "\n").strip()
        finally:
            textpage.close()
    finally:
        page.close()
