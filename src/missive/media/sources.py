"""The request's images and documents made ready for an engine, after the request's own checks and
before the engine renders it (pipeline.py):

    url sources      fetched (fetch.py) and made inline: base64 images, base64 PDFs, or text
    file sources     read from the Files API's store (the request's workspace) and made inline alike;
                     a PDF file is a PDF document, a text/plain file a text document
    images           checked (images.py): the real format, size, edges, count
    PDFs             checked (pdf.py): readable, not encrypted, pages in the limit; with
                     `pdf_pages_as_images`, for a model that takes images, a picture of each page
                     follows the document

This covers the blocks at the top of each message and those inside tool results and content
documents. An engine whose upstream reads the blocks itself (`Engine.fetches_urls`: the Anthropic
upstream) gets only its file sources resolved (the upstream has none of our files) and the rest as
the client sent it, for the upstream to fetch and check. Errors are 400s whose path is the block's,
by the client's indexes, as the API writes them (`messages.0.content.1.image.source.base64: ...`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio.to_thread

from missive.files.service import FileMissing
from missive.media import images, pdf
from missive.media.fetch import Fetcher, FetchError
from missive.settings import MediaSettings
from missive.wire import requests as rq
from missive.wire.errors import invalid
from missive.wire.models import ModelCard

Block = rq.ImageBlock | rq.DocumentBlock
Messages = list[rq.MessageParam]
Params = rq.MessageCreateParams | rq.CountTokensParams
T = TypeVar("T")


class StoredFileLike(Protocol):
    id: str
    mime_type: str
    data: bytes


class FileReader(Protocol):
    """The Files API's store (files/service.py): `FileMissing` for a file the workspace does not have."""

    async def open(self, workspace_id: str, file_id: str) -> StoredFileLike: ...


class EngineLike(Protocol):
    fetches_urls: bool


@dataclass(frozen=True)
class _Target:
    """What a resolution depends on: whether Missive feeds the engine itself, and page pictures."""

    feeds: bool  # False: the engine's upstream fetches urls and checks media itself
    page_images: bool


@dataclass(frozen=True)
class _Loaded:
    data: bytes
    media_type: str | None  # as the URL or the file declared it


class Media:
    """The server's media step: settings, the guarded fetcher, and the Files API's store."""

    def __init__(self, settings: MediaSettings, fetcher: Fetcher, files: FileReader | None) -> None:
        self.settings, self.fetcher, self.files = settings, fetcher, files

    def sources(self, params: Params, workspace_id: str) -> RequestMedia:
        """This request's media, found now (cheap: a walk of the blocks), resolved per target later."""
        return RequestMedia(self, params, workspace_id)


class RequestMedia:
    def __init__(self, media: Media, params: Params, workspace_id: str) -> None:
        self.media, self.params, self.workspace_id = media, params, workspace_id
        self.found = list(_media_blocks(params.messages))
        self._done: dict[_Target, tuple[Params, Messages]] = {}

    async def resolve(self, engine: EngineLike, card: ModelCard, messages: Messages) -> tuple[Params, Messages]:
        """The request's params and normalised `messages`, their media ready for `engine` serving `card`."""
        if not self.found:
            return self.params, messages
        target = _Target(
            feeds=not engine.fetches_urls,
            page_images=self.media.settings.pdf_pages_as_images and card.capabilities.image_input,
        )
        if target not in self._done:
            loaded = await self._load(target)
            replaced = await anyio.to_thread.run_sync(self._replace, target, loaded)
            # Both lists get the same new blocks: engines map one to the other by id.
            memo: dict[int, object] = {}
            params = self.params.model_copy(
                update={"messages": _rebuild(self.params.messages, replaced, memo)}
            )
            self._done[target] = (params, _rebuild(messages, replaced, memo))
        return self._done[target]

    # --- fetching and reading files (on the event loop) ------------------------------------------

    async def _load(self, target: _Target) -> dict[int, _Loaded]:
        loaded: dict[int, _Loaded] = {}
        for path, block in self.found:
            source = block.source
            if isinstance(source, rq.UrlSource) and target.feeds:
                try:
                    fetched = await self.media.fetcher.fetch(source.url)
                except FetchError as error:
                    raise invalid(f"{path}.source.url: {error}") from None
                loaded[id(block)] = _Loaded(fetched.data, fetched.content_type)
            elif isinstance(source, rq.FileSource):
                loaded[id(block)] = await self._open(path, source.file_id)
        return loaded

    async def _open(self, path: str, file_id: str) -> _Loaded:
        if self.media.files is None:
            raise invalid(
                f"{path}.source.file: file sources need the Files API, which this server does not run"
            )
        try:
            stored = await self.media.files.open(self.workspace_id, file_id)
        except FileMissing:
            raise invalid(f"{path}.source.file: file {file_id} does not exist (or it was deleted)") from None
        return _Loaded(stored.data, stored.mime_type)

    # --- checking and replacing (in a worker thread: images decode, PDFs parse) ------------------

    def _replace(self, target: _Target, loaded: dict[int, _Loaded]) -> dict[int, list[object]]:
        """New blocks for the blocks that change, by the id of the block they replace."""
        count = sum(isinstance(block, rq.ImageBlock) for _, block in self.found)
        if target.feeds and count > images.MAX_IMAGES:
            raise invalid(f"messages: too many images in one request: {count} > {images.MAX_IMAGES} maximum")
        many = count > images.MANY_IMAGES
        pages = 0
        replaced: dict[int, list[object]] = {}
        for path, block in self.found:
            new: list[object] | None = None
            if isinstance(block, rq.ImageBlock):
                image = self._image(path, block, loaded.get(id(block)), many, target)
                new = None if image is block else [image]
            else:
                document = self._document(path, block, loaded.get(id(block)))
                if target.feeds and isinstance(document.source, rq.Base64PdfSource):
                    at = f"{path}.source.{block.source.type}"
                    data = _decoded(
                        f"{at}.data", document.source.data, "The PDF specified was not valid: not base64"
                    )
                    texts = _pdf_texts(at, data)
                    pages += len(texts)
                    if pages > (most := self.media.settings.max_pdf_pages):
                        raise invalid(f"{path}.source: A maximum of {most} PDF pages may be provided.")
                    if target.page_images:
                        new = _with_page_images(document, data, len(texts))
                if new is None and document is not block:
                    new = [document]
            if new is not None:
                replaced[id(block)] = new
        return replaced

    def _image(
        self, path: str, block: rq.ImageBlock, loaded: _Loaded | None, many: bool, target: _Target
    ) -> rq.ImageBlock:
        source = block.source
        if loaded is None and not (target.feeds and isinstance(source, rq.Base64ImageSource)):
            return block  # a url left for the upstream to fetch
        if loaded is None:
            assert isinstance(source, rq.Base64ImageSource)
            at = f"{path}.source.base64"
            _checked(at, lambda: images.check_size(len(source.data)))
            data = _decoded(f"{at}.data", source.data, "Could not process image")
            _checked(at, lambda: images.check_image(data, source.media_type, many))
            return block
        at = f"{path}.source.{source.type}"
        if not target.feeds:  # a file for the upstream: made inline, checked there
            media_type = images.sniff(loaded.data) or loaded.media_type or "application/octet-stream"
        else:
            _checked(at, lambda: images.check_size(images.base64_size(len(loaded.data))), inline=False)
            media_type = _checked(at, lambda: images.check_image(loaded.data, None, many), inline=False).media_type
        inline = rq.Base64ImageSource(
            type="base64",
            media_type=media_type,
            data=base64.b64encode(loaded.data).decode(),  # type: ignore[arg-type]
        )
        return block.model_copy(update={"source": inline})

    def _document(self, path: str, block: rq.DocumentBlock, loaded: _Loaded | None) -> rq.DocumentBlock:
        source = block.source
        if loaded is None:  # inline already (a content document's images are images of their own)
            return block
        at = f"{path}.source.{source.type}"
        data, declared = loaded.data, (loaded.media_type or "").split(";")[0].strip().lower()
        if len(data) > pdf.MAX_PDF_BYTES:  # before it is copied into base64
            raise invalid(f"{at}: document exceeds 32 MB maximum: {len(data)} bytes > {pdf.MAX_PDF_BYTES} bytes")
        if data.lstrip()[:5] == b"%PDF-" or declared == "application/pdf":
            inline: object = rq.Base64PdfSource(
                type="base64", media_type="application/pdf", data=base64.b64encode(data).decode()
            )
        elif declared == "text/plain":
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(f"{at}: the text document is not UTF-8") from None
            inline = rq.PlainTextSource(type="text", media_type="text/plain", data=text)
        else:
            what = (
                f"a file of type {declared}"
                if isinstance(source, rq.FileSource)
                else f"content of type {declared}"
            )
            raise invalid(
                f"{at}: documents take PDF (application/pdf) or plain text (text/plain), not {what}"
            )
        return block.model_copy(update={"source": inline})


def _pdf_texts(path: str, data: bytes) -> list[str]:
    try:
        return pdf.page_texts(data)
    except pdf.PdfError as error:
        raise invalid(f"{path}: {error}") from None


def _with_page_images(document: rq.DocumentBlock, data: bytes, pages: int) -> list[object]:
    """The document, then a picture of each page; its breakpoint (if any) moves to the last picture, so
    that the cached prefix still ends after the whole document."""
    pictures = [
        rq.ImageBlock(
            type="image",
            source=rq.Base64ImageSource(
                type="base64",
                media_type="image/png",
                data=base64.b64encode(pdf.page_png(data, index)).decode(),
            ),
        )
        for index in range(pages)
    ]
    if document.cache_control is not None and pictures:
        pictures[-1] = pictures[-1].model_copy(update={"cache_control": document.cache_control})
        document = document.model_copy(update={"cache_control": None})
    return [document, *pictures]


def _decoded(path: str, data: str, message: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{path}: {message}") from None


def _checked(path: str, check: Callable[[], T], inline: bool = True) -> T:
    """`check()`, its `ImageError` a 400 at `path` (at its `data` field, for an inline source's bytes)."""
    try:
        return check()
    except images.ImageError as error:
        raise invalid(f"{path}{'.data' if error.data and inline else ''}: {error}") from None


# --- walking and rebuilding ----------------------------------------------------------------------


def _media_blocks(messages: Messages) -> Iterator[tuple[str, Block]]:
    """Every image and document block with its path, nested ones included, in order."""
    for i, message in enumerate(messages):
        for j, block in enumerate(message.content):
            yield from _inner(f"messages.{i}.content.{j}", block)


def _inner(path: str, block: object) -> Iterator[tuple[str, Block]]:
    if isinstance(block, rq.ImageBlock):
        yield f"{path}.image", block
    elif isinstance(block, rq.DocumentBlock):
        yield f"{path}.document", block
        source = block.source
        if isinstance(source, rq.ContentSource) and not isinstance(source.content, str):
            for k, part in enumerate(source.content):
                yield from _inner(f"{path}.document.source.content.content.{k}", part)
    elif isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list):
        for k, part in enumerate(block.content):
            yield from _inner(f"{path}.tool_result.content.{k}", part)


def _rebuild(messages: Messages, replaced: dict[int, list[object]], memo: dict[int, object]) -> Messages:
    """`messages` with the replaced blocks swapped in, wherever they are; unchanged messages are the same
    objects. A block that holds a replaced one is copied once (`memo`), whichever list it is found in."""
    out: Messages = []
    for message in messages:
        content = _swap(message.content, replaced, memo)
        out.append(message if content is message.content else message.model_copy(update={"content": content}))
    return out


def _swap(blocks: list, replaced: dict[int, list[object]], memo: dict[int, object]) -> list:  # type: ignore[type-arg]
    out: list = []  # type: ignore[type-arg]
    changed = False
    for block in blocks:
        new = replaced.get(id(block))
        if new is None:
            if id(block) not in memo:
                memo[id(block)] = _swap_inside(block, replaced, memo)
            new = [memo[id(block)]]
        changed = changed or len(new) != 1 or new[0] is not block
        out.extend(new)
    return out if changed else blocks


def _swap_inside(block: object, replaced: dict[int, list[object]], memo: dict[int, object]) -> object:
    if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list):
        content = _swap(block.content, replaced, memo)
        return block if content is block.content else block.model_copy(update={"content": content})
    if isinstance(block, rq.DocumentBlock) and isinstance(block.source, rq.ContentSource):
        parts = block.source.content
        if isinstance(parts, list):
            swapped = _swap(parts, replaced, memo)
            if swapped is not parts:
                return block.model_copy(
                    update={"source": block.source.model_copy(update={"content": swapped})}
                )
    return block
