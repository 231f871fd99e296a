"""media/: the guarded fetcher against real HTTP servers, image and PDF checks on bytes made here, the
resolution step on parsed requests, and the text a text-only model sees for a PDF."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from media_files import encrypted_pdf, http_server, image_bytes, minimal_pdf
from PIL import Image

from missive.engines.anthropic import request
from missive.engines.base import Generation
from missive.engines.prompt import block_text, check_input_support
from missive.files.service import FileService
from missive.files.storage import DiskStorage
from missive.media import images, pdf
from missive.media.fetch import Fetcher, FetchError, Guard
from missive.media.sources import Media
from missive.settings import FileSettings, MediaSettings
from missive.store import db as store_db
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.errors import ApiError
from missive.wire.models import Capabilities, ModelCard

PNG = image_bytes("PNG")


def fetch(settings: MediaSettings, url: str) -> bytes:
    async def run() -> bytes:
        fetcher = Fetcher(settings)
        try:
            return (await fetcher.fetch(url)).data
        finally:
            await fetcher.close()

    return asyncio.run(run())


# --- fetch.py ---------------------------------------------------------------------------------------


def test_loopback_and_private_urls_are_refused_by_default() -> None:
    with http_server("127.0.0.1", {"/a.png": (200, {"content-type": "image/png"}, PNG)}) as base:
        with pytest.raises(
            FetchError, match=r"host 127\.0\.0\.1 resolves to 127\.0\.0\.1, a loopback address"
        ):
            fetch(MediaSettings(), f"{base}/a.png")
        port = base.rsplit(":", 1)[1]
        with pytest.raises(FetchError, match="host localhost resolves to 127.0.0.1, a loopback address"):
            fetch(
                MediaSettings(), f"http://localhost:{port}/a.png"
            )  # the resolved address is what is checked
    guard = Guard(MediaSettings())
    for address, kind in [
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "non-public"),
        ("240.0.0.1", "reserved"),
    ]:
        with pytest.raises(FetchError, match=f"a {kind} address"):
            guard.check("h", ipaddress.ip_address(address))
    guard.check("h", ipaddress.ip_address("93.184.215.14"))  # public: no error


def test_the_allow_list_lets_named_hosts_and_networks_through_and_nothing_else() -> None:
    routes = {"/doc.pdf": (200, {"content-type": "application/pdf"}, b"%PDF-1.4 x")}
    with http_server("127.0.0.2", routes) as base:
        assert fetch(MediaSettings(url_allow=["127.0.0.2"]), f"{base}/doc.pdf") == b"%PDF-1.4 x"
        assert fetch(MediaSettings(url_allow=["127.0.0.0/30"]), f"{base}/doc.pdf") == b"%PDF-1.4 x"
        assert fetch(MediaSettings(allow_private_urls=True), f"{base}/doc.pdf") == b"%PDF-1.4 x"
        with pytest.raises(FetchError, match="loopback"):
            fetch(MediaSettings(url_allow=["127.0.0.3"]), f"{base}/doc.pdf")
    with http_server("127.0.0.1", routes) as base:
        port = base.rsplit(":", 1)[1]
        assert (
            fetch(MediaSettings(url_allow=["localhost"]), f"http://localhost:{port}/doc.pdf") == b"%PDF-1.4 x"
        )


def test_every_redirect_hop_is_checked_again() -> None:
    with http_server("127.0.0.1", {"/secret": (200, {}, b"internal")}) as inside:
        routes = {
            "/go": (302, {"location": f"{inside}/secret"}, b""),
            "/loop": (302, {"location": "/loop"}, b""),
        }
        with http_server("127.0.0.2", routes) as outside:
            allowed = MediaSettings(url_allow=["127.0.0.2"])
            with pytest.raises(FetchError, match=r"127\.0\.0\.1, a loopback address"):
                fetch(allowed, f"{outside}/go")
            with pytest.raises(FetchError, match="redirected more than 5 times"):
                fetch(allowed, f"{outside}/loop")
            routes["/near"] = (301, {"location": "/final"}, b"")
            routes["/final"] = (200, {}, b"arrived")
            assert fetch(allowed, f"{outside}/near") == b"arrived"


def test_schemes_sizes_statuses_and_time_are_bounded() -> None:
    with pytest.raises(FetchError, match="only http and https"):
        fetch(MediaSettings(), "file:///etc/passwd")
    with pytest.raises(FetchError, match="only http and https"):
        fetch(MediaSettings(), "ftp://example.com/x")
    with pytest.raises(FetchError, match="not a valid URL|no host"):
        fetch(MediaSettings(), "http://")
    routes = {"/big": (200, {}, b"x" * 2000), "/gone": (404, {}, b"")}
    with http_server("127.0.0.2", routes) as base:
        settings = MediaSettings(url_allow=["127.0.0.2"], max_url_bytes=1000)
        with pytest.raises(FetchError, match="2000 bytes, more than the 1000 allowed"):
            fetch(settings, f"{base}/big")
        with pytest.raises(FetchError, match="HTTP 404"):
            fetch(settings, f"{base}/gone")
    silent = socket.socket()  # accepts, never answers
    silent.bind(("127.0.0.2", 0))
    silent.listen()
    try:
        port = silent.getsockname()[1]
        with pytest.raises(FetchError, match="longer than 0.5 seconds"):
            fetch(MediaSettings(url_allow=["127.0.0.2"], fetch_timeout=0.5), f"http://127.0.0.2:{port}/")
    finally:
        silent.close()


# --- images.py --------------------------------------------------------------------------------------


def test_images_are_read_from_their_bytes() -> None:
    for fmt, media_type in [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
    ]:
        data = image_bytes(fmt, (30, 20))
        assert images.sniff(data) == media_type
        assert images.check_image(data, media_type) == images.CheckedImage(media_type, 30, 20)
        assert images.check_image(data, None).media_type == media_type
    with pytest.raises(
        images.ImageError,
        match="specified using the image/jpeg media type, but the image appears to be a image/png image",
    ) as caught:
        images.check_image(PNG, "image/jpeg")
    assert not caught.value.data
    for broken in (PNG[:30], b"not an image", image_bytes("BMP")):
        with pytest.raises(images.ImageError, match="^Could not process image$"):
            images.check_image(broken, "image/png")


def test_image_limits_are_the_apis() -> None:
    wide = image_bytes("PNG", (8001, 1))
    with pytest.raises(images.ImageError, match="exceed max allowed size: 8000 pixels"):
        images.check_image(wide, "image/png")
    images.check_image(image_bytes("PNG", (2001, 1)), "image/png")
    with pytest.raises(images.ImageError, match="for many-image requests: 2000 pixels"):
        images.check_image(image_bytes("PNG", (2001, 1)), "image/png", many=True)
    images.check_size(images.MAX_BASE64_BYTES)
    with pytest.raises(images.ImageError, match="image exceeds 5 MB maximum: 5242881 bytes > 5242880 bytes"):
        images.check_size(images.MAX_BASE64_BYTES + 1)
    assert images.base64_size(3) == 4 and images.base64_size(4) == 8


# --- pdf.py -----------------------------------------------------------------------------------------


def test_pdf_pages_are_read_and_pictured() -> None:
    data = minimal_pdf(["The first page.", "The (second) page."])
    assert pdf.page_texts(data) == ["The first page.", "The (second) page."]
    picture = Image.open(io.BytesIO(pdf.page_png(data, 1)))
    assert picture.format == "PNG" and max(picture.size) == pdf.PAGE_IMAGE_EDGE


def test_encrypted_corrupt_and_oversized_pdfs_say_so() -> None:
    with pytest.raises(pdf.PdfError, match="encrypted or password-protected"):
        pdf.page_texts(encrypted_pdf(["hidden"]))
    with pytest.raises(pdf.PdfError, match="not valid: it could not be read"):
        pdf.page_texts(b"%PDF-1.4\nnothing else")
    with pytest.raises(pdf.PdfError, match="does not start with %PDF-"):
        pdf.page_texts(PNG)
    with pytest.raises(pdf.PdfError, match="PDF exceeds 32 MB maximum"):
        pdf.page_texts(b"%PDF-" + b"0" * pdf.MAX_PDF_BYTES)


# --- sources.py -------------------------------------------------------------------------------------


@dataclass
class Target:
    """What the step asks of an engine."""

    fetches_urls: bool = False


CARD = ModelCard("m", "m", 4096, 100, capabilities=Capabilities(pdf_input=True))
VISION = ModelCard("v", "v", 4096, 100, capabilities=Capabilities(pdf_input=True, image_input=True))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def resolve(
    content: list[dict],
    settings: MediaSettings | None = None,
    target: Target | None = None,
    card: ModelCard = CARD,
) -> tuple[rq.CountTokensParams, list[rq.MessageParam]]:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
    params = rq.parse_body(body, rq.CountTokensParams)
    settings = settings or MediaSettings()

    async def run() -> tuple[rq.CountTokensParams, list[rq.MessageParam]]:
        fetcher = Fetcher(settings)
        try:
            media = Media(settings, fetcher, files=None).sources(params, "default")
            return await media.resolve(target or Target(), card, validate.normalize(params))  # type: ignore[return-value]
        finally:
            await fetcher.close()

    return asyncio.run(run())


def refusal(content: list[dict], **kwargs: object) -> str:
    with pytest.raises(ApiError) as caught:
        resolve(content, **kwargs)  # type: ignore[arg-type]
    assert caught.value.status == 400
    return caught.value.message


def test_url_sources_become_inline_wherever_they_are() -> None:
    pdf_bytes = minimal_pdf(["Fetched page."])
    routes = {
        "/a.webp": (200, {"content-type": "image/png"}, image_bytes("WEBP")),  # the bytes decide
        "/d.pdf": (200, {"content-type": "application/octet-stream"}, pdf_bytes),
        "/notes.txt": (200, {"content-type": "text/plain; charset=utf-8"}, "Plain notes.".encode()),
    }
    with http_server("127.0.0.2", routes) as base:
        settings = MediaSettings(url_allow=["127.0.0.2"])
        content = [
            {
                "type": "image",
                "source": {"type": "url", "url": f"{base}/a.webp"},
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "document", "source": {"type": "url", "url": f"{base}/d.pdf"}, "title": "T"},
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "document", "source": {"type": "url", "url": f"{base}/notes.txt"}}],
            },
        ]
        params, messages = resolve(content, settings)
        image, document, result = params.messages[0].content
        assert image.source == rq.Base64ImageSource(
            type="base64", media_type="image/webp", data=b64(routes["/a.webp"][2])
        )
        assert image.cache_control is not None
        assert document.source == rq.Base64PdfSource(
            type="base64", media_type="application/pdf", data=b64(pdf_bytes)
        )
        assert document.title == "T"
        assert result.content[0].source == rq.PlainTextSource(
            type="text", media_type="text/plain", data="Plain notes."
        )
        assert [id(block) for block in messages[0].content] == [
            id(block) for block in params.messages[0].content
        ]
        # an engine whose upstream fetches (the Anthropic one) gets the blocks as sent
        kept, _ = resolve(content, settings, Target(fetches_urls=True))
        assert [block.source.type for block in kept.messages[0].content[:2]] == ["url", "url"]


def test_a_refused_url_names_the_block() -> None:
    with http_server("127.0.0.1", {"/a.png": (200, {}, PNG)}) as base:
        message = refusal(
            [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "url", "url": f"{base}/a.png"}},
            ]
        )
    assert message == (
        "messages.0.content.1.image.source.url: the URL's host 127.0.0.1 resolves to 127.0.0.1, a loopback address, "
        "which is not fetched"
    )
    with http_server("127.0.0.2", {"/page.html": (200, {"content-type": "text/html"}, b"<html>")}) as base:
        message = refusal(
            [{"type": "document", "source": {"type": "url", "url": f"{base}/page.html"}}],
            settings=MediaSettings(url_allow=["127.0.0.2"]),
        )
    assert message == (
        "messages.0.content.0.document.source.url: documents take PDF (application/pdf) or plain "
        "text (text/plain), not content of type text/html"
    )
    with http_server("127.0.0.2", {"/a.png": (200, {"content-type": "image/png"}, PNG[:40])}) as base:
        message = refusal(
            [{"type": "image", "source": {"type": "url", "url": f"{base}/a.png"}}],
            settings=MediaSettings(url_allow=["127.0.0.2"]),
        )
    assert message == "messages.0.content.0.image.source.url: Could not process image"


def test_inline_images_are_checked_with_the_apis_words() -> None:
    def image(data: bytes | str, media_type: str = "image/png") -> dict:
        return {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": media_type,
                "data": data if isinstance(data, str) else b64(data),
            },
        }

    assert refusal([image(PNG, "image/jpeg")]) == (
        "messages.0.content.0.image.source.base64: The image was specified using the image/jpeg media type, but the "
        "image appears to be a image/png image"
    )
    assert (
        refusal([image(PNG[:40])]) == "messages.0.content.0.image.source.base64.data: Could not process image"
    )
    assert (
        refusal([image("@@not base64@@")])
        == "messages.0.content.0.image.source.base64.data: Could not process image"
    )
    assert refusal(
        [{"type": "tool_result", "tool_use_id": "t", "content": [image(image_bytes("PNG", (9000, 10)))]}]
    ) == (
        "messages.0.content.0.tool_result.content.0.image.source.base64.data: At least one of the image dimensions "
        "exceed max allowed size: 8000 pixels"
    )
    assert refusal([image("A" * (images.MAX_BASE64_BYTES + 4))]).startswith(
        "messages.0.content.0.image.source.base64: image exceeds 5 MB maximum: 5242884 bytes > 5242880 bytes"
    )
    small = image(image_bytes("PNG", (2001, 2)))
    assert refusal([small] * 21).endswith("for many-image requests: 2000 pixels")
    assert refusal([image(PNG)] * 101) == "messages: too many images in one request: 101 > 100 maximum"
    params, _ = resolve([image(PNG)] * 3)
    assert len(params.messages[0].content) == 3


def test_pdfs_are_checked_and_pages_counted_across_the_request() -> None:
    def document(data: bytes) -> dict:
        return {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
        }

    assert refusal([document(encrypted_pdf(["x"]))]) == (
        "messages.0.content.0.document.source.base64: The PDF is encrypted or password-protected, which is not supported"
    )
    assert refusal([document(b"%PDF-1.7 broken")]) == (
        "messages.0.content.0.document.source.base64: The PDF specified was not valid: it could not be read"
    )
    sixty = minimal_pdf([f"Page {n}" for n in range(60)])
    assert refusal([document(sixty), document(sixty)]) == (
        "messages.0.content.1.document.source: A maximum of 100 PDF pages may be provided."
    )
    assert refusal([document(sixty)], settings=MediaSettings(max_pdf_pages=10)).endswith(
        "A maximum of 10 PDF pages may be provided."
    )


def test_pages_as_images_for_a_vision_model_follow_the_document() -> None:
    data = minimal_pdf(["One.", "Two."])
    content = [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    settings = MediaSettings(pdf_pages_as_images=True)
    params, messages = resolve(content, settings, card=VISION)
    blocks = messages[0].content
    assert [block.type for block in blocks] == ["document", "image", "image"]
    assert (
        blocks[0].cache_control is None and blocks[2].cache_control is not None
    )  # the breakpoint ends the pictures
    assert Image.open(io.BytesIO(base64.b64decode(blocks[1].source.data))).format == "PNG"
    same, _ = resolve(content, settings, card=CARD)  # a model without vision: the text alone
    assert [block.type for block in same.messages[0].content] == ["document"]


# --- what a text-only model sees --------------------------------------------------------------------


def test_a_pdf_is_shown_as_its_pages_text_with_title_and_context() -> None:
    data = minimal_pdf(["Revenue grew 12%.", "Costs fell."])
    block = rq.DocumentBlock(
        type="document",
        title="Q3 report",
        context="Written by finance",
        source=rq.Base64PdfSource(type="base64", media_type="application/pdf", data=b64(data)),
    )
    assert block_text(block, {}) == (
        "<document>\nTitle: Q3 report\nContext: Written by finance\n"
        '<page number="1">\nRevenue grew 12%.\n</page>\n<page number="2">\nCosts fell.\n</page>\n</document>'
    )


def test_citations_are_refused_by_name() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Cite it."},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        "citations": {"enabled": True},
                    },
                ],
            }
        ],
    }
    params = rq.parse_body(json.dumps(body).encode(), rq.CountTokensParams)
    with pytest.raises(
        ApiError, match=r"^messages\.0\.content\.1\.citations: citations are not supported by model m$"
    ):
        check_input_support(params, CARD)
    body["messages"][0]["content"][1]["citations"] = {"enabled": False}
    check_input_support(rq.parse_body(json.dumps(body).encode(), rq.CountTokensParams), CARD)


# --- file sources, with the real Files API store ----------------------------------------------------


def test_file_sources_are_made_inline_even_for_an_upstream_that_reads_blocks_itself(tmp_path: Path) -> None:
    async def run() -> None:
        service = FileService(
            store_db.connect(f"sqlite:///{tmp_path}/m.db"), FileSettings(), DiskStorage(tmp_path)
        )
        await service.start()
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            + PNG
            + b"\r\n--b--\r\n"
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        stored = await service.upload(
            "default", "key_1", "multipart/form-data; boundary=b", str(len(body)), chunks()
        )
        content = [
            {"type": "image", "source": {"type": "file", "file_id": stored.id}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        ]
        raw = json.dumps({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]})
        params = rq.parse_body(raw.encode(), rq.MessageCreateParams)
        fetcher = Fetcher(MediaSettings())
        media = Media(MediaSettings(), fetcher, service)
        try:
            resolved, messages = await media.sources(params, "default").resolve(
                Target(fetches_urls=True), CARD, validate.normalize(params)
            )
            sent = request.body(Generation(CARD, resolved, messages), "upstream-model", stream=True)
            assert sent["messages"][0]["content"] == [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ]
            with pytest.raises(
                ApiError, match=f"^messages.0.content.0.image.source.file: file {stored.id} does not"
            ):
                await media.sources(params, "another-workspace").resolve(
                    Target(), CARD, validate.normalize(params)
                )
        finally:
            await fetcher.close()

    asyncio.run(run())
