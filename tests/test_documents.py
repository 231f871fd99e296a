"""Documents and media sources through the official SDK against the shared real server: PDFs read as
page-marked text by a text-only model (and as text plus page pictures by the vision model), url
sources fetched behind the SSRF guard (127.0.0.2 is allowed in the test config, 127.0.0.1 is not),
file sources from the Files API, and the 400s for what cannot be read."""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import pytest
from conftest import Server
from media_files import encrypted_pdf, http_server, image_bytes, minimal_pdf

from missive.media import pdf

MODEL = "smollm2-135m-instruct"
VISION = "smollm2-vision"
PAGES = ["The secret word is tangerine.", "The meeting moved to Thursday."]
PDF = minimal_pdf(PAGES)
FILES_BETA = ["files-api-2025-04-14"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pdf_block(data: bytes = PDF, **extra: Any) -> dict[str, Any]:
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(data)},
        **extra,
    }


def asking(*blocks: dict[str, Any], question: str = "What is the secret word?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": question}]}]


def count(client: anthropic.Anthropic, messages: list[dict[str, Any]], model: str = MODEL) -> int:
    return client.messages.count_tokens(model=model, messages=messages).input_tokens  # type: ignore[arg-type]


def refusal(client: anthropic.Anthropic, messages: list[dict[str, Any]], model: str = MODEL) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model, max_tokens=1, messages=messages)  # type: ignore[arg-type]
    return caught.value.body["error"]["message"]  # type: ignore[index]


def page_marked(pages: list[str]) -> str:
    """The body a text-only model is shown for a PDF (docs/documents.md)."""
    return "\n".join(f'<page number="{n}">\n{text}\n</page>' for n, text in enumerate(pages, 1))


def test_a_pdf_reaches_a_text_model_as_its_page_marked_text(client: anthropic.Anthropic) -> None:
    labels = {"title": "Notes", "context": "From the team wiki"}
    messages = asking(pdf_block(**labels))
    same_text = asking(
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": page_marked(PAGES)},
            **labels,
        }
    )
    counted = count(client, messages)
    assert counted == count(client, same_text)  # the model sees exactly that text
    assert counted > count(client, asking(pdf_block()))  # title and context are part of it
    reply = client.messages.create(model=MODEL, max_tokens=4, messages=messages)  # type: ignore[arg-type]
    assert reply.usage.input_tokens == counted
    assert client.models.retrieve(MODEL).capabilities.pdf_input.supported is True  # type: ignore[union-attr]


def test_pdfs_that_cannot_be_read_are_400s_that_say_why(client: anthropic.Anthropic) -> None:
    assert refusal(client, asking(pdf_block(encrypted_pdf(PAGES)))) == (
        "messages.0.content.0.document.source.base64: The PDF is encrypted or password-protected, which is not supported"
    )
    assert refusal(client, asking(pdf_block(b"%PDF-1.7\nno objects at all"))) == (
        "messages.0.content.0.document.source.base64: The PDF specified was not valid: it could not be read"
    )
    many = minimal_pdf([f"Page {n}." for n in range(101)])
    assert refusal(client, asking(pdf_block(many))) == (
        "messages.0.content.0.document.source: A maximum of 100 PDF pages may be provided."
    )


def test_url_sources_are_fetched_only_where_the_guard_allows(client: anthropic.Anthropic) -> None:
    routes = {"/notes.pdf": (200, {"content-type": "application/pdf"}, PDF)}
    with http_server("127.0.0.1", dict(routes)) as inside, http_server("127.0.0.2", routes) as allowed:
        routes["/away"] = (302, {"location": f"{inside}/notes.pdf"}, b"")
        by_url = asking({"type": "document", "source": {"type": "url", "url": f"{allowed}/notes.pdf"}})
        assert count(client, by_url) == count(client, asking(pdf_block()))
        loopback = "resolves to 127.0.0.1, a loopback address, which is not fetched"
        direct = asking({"type": "document", "source": {"type": "url", "url": f"{inside}/notes.pdf"}})
        assert (
            refusal(client, direct)
            == f"messages.0.content.0.document.source.url: the URL's host 127.0.0.1 {loopback}"
        )
        redirected = asking({"type": "document", "source": {"type": "url", "url": f"{allowed}/away"}})
        assert refusal(client, redirected).endswith(loopback)
        image = {"type": "image", "source": {"type": "url", "url": f"{inside}/a.png"}}
        assert refusal(client, asking(image)).startswith(
            "messages.0.content.0.image.source.url: the URL's host"
        )


def test_images_are_checked_before_the_model_is_asked(client: anthropic.Anthropic) -> None:
    png = b64(image_bytes("PNG"))
    mislabelled = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": png}}
    assert refusal(client, asking(mislabelled)) == (
        "messages.0.content.0.image.source.base64: The image was specified using the image/jpeg media type, but the "
        "image appears to be a image/png image"
    )
    broken = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png[:24]}}
    assert (
        refusal(client, asking(broken))
        == "messages.0.content.0.image.source.base64.data: Could not process image"
    )
    good = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    assert (
        refusal(client, asking(good)) == f"messages.0.content.0: model {MODEL} does not support image input"
    )


def test_citations_are_refused_with_the_field_named(client: anthropic.Anthropic) -> None:
    assert refusal(client, asking(pdf_block(citations={"enabled": True}))) == (
        f"messages.0.content.0.citations: citations are not supported by model {MODEL}"
    )
    assert count(client, asking(pdf_block(citations={"enabled": False}))) == count(
        client, asking(pdf_block())
    )


def test_the_vision_model_also_sees_a_picture_of_each_page(client: anthropic.Anthropic) -> None:
    """The test server sets `pdf_pages_as_images`: for a model that takes images, each page's picture follows
    the document, so the PDF counts as its text plus those pictures."""
    text = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": page_marked(PAGES)},
    }
    pictures = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64(pdf.page_png(PDF, i))},
        }
        for i in range(len(PAGES))
    ]
    assert count(client, asking(pdf_block()), VISION) == count(client, asking(text, *pictures), VISION)
    assert count(client, asking(pdf_block()), VISION) > count(client, asking(text), VISION)


def files_api(server: Server) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60)
    try:
        client.beta.files.list(limit=1)
    except anthropic.NotFoundError:
        pytest.skip("this server has no Files API yet")
    return client


def test_file_sources_read_the_workspaces_files(server: Server, client: anthropic.Anthropic) -> None:
    files = files_api(server)
    stored = files.beta.files.upload(file=("notes.pdf", PDF, "application/pdf"))
    text = files.beta.files.upload(file=("notes.txt", "Plain notes.".encode(), "text/plain"))
    by_file = asking({"type": "document", "source": {"type": "file", "file_id": stored.id}})
    counted = files.beta.messages.count_tokens(model=MODEL, messages=by_file, betas=FILES_BETA).input_tokens  # type: ignore[arg-type]
    assert counted == count(client, asking(pdf_block()))
    reply = files.beta.messages.create(model=MODEL, max_tokens=2, messages=by_file, betas=FILES_BETA)  # type: ignore[arg-type]
    assert reply.usage.input_tokens == counted
    plain = asking({"type": "document", "source": {"type": "file", "file_id": text.id}})
    inline = asking(
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain notes."}}
    )
    assert files.beta.messages.count_tokens(
        model=MODEL, messages=plain, betas=FILES_BETA
    ).input_tokens == count(  # type: ignore[arg-type]
        client, inline
    )
    files.beta.files.delete(stored.id)
    with pytest.raises(anthropic.BadRequestError) as caught:
        files.beta.messages.create(model=MODEL, max_tokens=1, messages=by_file, betas=FILES_BETA)  # type: ignore[arg-type]
    assert caught.value.body["error"]["message"] == (  # type: ignore[index]
        f"messages.0.content.0.document.source.file: file {stored.id} does not exist (or it was deleted)"
    )
    image_file = files.beta.files.upload(file=("a.png", image_bytes("PNG"), "image/png"))
    png = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(image_bytes("PNG"))},
    }
    by_id = asking({"type": "image", "source": {"type": "file", "file_id": image_file.id}})
    counted = files.beta.messages.count_tokens(model=VISION, messages=by_id, betas=FILES_BETA).input_tokens  # type: ignore[arg-type]
    assert counted == count(client, asking(png), VISION)
    as_document = asking({"type": "document", "source": {"type": "file", "file_id": image_file.id}})
    with pytest.raises(anthropic.BadRequestError, match="documents take PDF .* not a file of type image/png"):
        files.beta.messages.create(model=MODEL, max_tokens=1, messages=as_document, betas=FILES_BETA)  # type: ignore[arg-type]
