"""Signatures of thinking blocks (spec §3.3, §4.1).

A client must pass thinking blocks back unmodified. Missive signs each one it issues with an HMAC
under the installation's key (`store.secrets.thinking_key`), so a block that was edited, or made up,
is refused with a 400, as the Claude API does. A signature is `<version>.<base64 HMAC-SHA256>`; the
version names the format, so that it can change without old signatures being misread.
`redacted_thinking` blocks carry no signature: their `data` is opaque and passed back intact.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

VERSION = "m1"
_DOMAIN = b"missive thinking block signature m1\x00"  # what is signed, distinct from any other use of the key


def sign_thinking(secret: bytes, text: str) -> str:
    """The signature of a thinking block with this text (empty for `display: "omitted"`)."""
    digest = hmac.new(secret, _DOMAIN + text.encode("utf-8"), hashlib.sha256).digest()
    return f"{VERSION}.{base64.b64encode(digest).decode('ascii')}"


def verify_thinking(secret: bytes, text: str, signature: str) -> bool:
    """Whether `signature` is the one `sign_thinking` gives this text, compared in constant time."""
    expected = sign_thinking(secret, text).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8"))
