"""Image bytes checked as the Claude API checks them (spec §10): the real format, read from the bytes,
must be the declared one; the data must decode; no edge over 8000 px (2000 px when a request has more
than 20 images); at most 100 images and 5 MB of base64 each."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
MAX_BASE64_BYTES = 5 * 1024 * 1024  # measured on the base64 text, as the API does
MAX_EDGE = 8000
MANY_IMAGES = 20  # more than this many images in a request: each is held to MAX_EDGE_MANY
MAX_EDGE_MANY = 2000
MAX_IMAGES = 100


class ImageError(Exception):
    """What is wrong with an image, in the API's words; `data` says whether it is about the bytes
    (the error names `...source.base64.data`) rather than the source as a whole."""

    def __init__(self, message: str, data: bool = True) -> None:
        super().__init__(message)
        self.data = data


@dataclass(frozen=True)
class CheckedImage:
    media_type: str
    width: int
    height: int


def base64_size(raw_bytes: int) -> int:
    """The length of `raw_bytes` bytes written as base64."""
    return 4 * ((raw_bytes + 2) // 3)


def check_size(base64_bytes: int) -> None:
    if base64_bytes > MAX_BASE64_BYTES:
        raise ImageError(
            f"image exceeds 5 MB maximum: {base64_bytes} bytes > {MAX_BASE64_BYTES} bytes", data=False
        )


def sniff(data: bytes) -> str | None:
    """The media type that the bytes' signature says, among the four formats; None for any other."""
    signatures = (
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
    )
    for magic, media_type in signatures:
        if data.startswith(magic):
            return media_type
    return "image/webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None


def check_image(data: bytes, declared: str | None, many: bool = False) -> CheckedImage:
    """The image's real media type and size; raises `ImageError`. `declared` None: any of the four
    formats is taken (a URL or a file, whose media type comes from the bytes); `many`: the request has
    more than `MANY_IMAGES` images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(MEDIA_TYPES)) as image:  # no other decoder runs
                media_type = MEDIA_TYPES[image.format or ""]
                if declared is not None and media_type != declared:
                    raise ImageError(
                        f"The image was specified using the {declared} media type, but the image appears to be a "
                        f"{media_type} image",
                        data=False,
                    )
                width, height = image.size
                edge = MAX_EDGE_MANY if many else MAX_EDGE
                if max(width, height) > edge:
                    suffix = " for many-image requests" if many else ""
                    raise ImageError(
                        f"At least one of the image dimensions exceed max allowed size{suffix}: {edge} pixels"
                    )
                image.load()  # the first frame decodes: truncated or corrupt data fails here
    except ImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        raise ImageError("Could not process image") from None
    return CheckedImage(media_type, width, height)
