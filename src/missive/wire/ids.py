"""Identifiers in the Claude API's shapes (`msg_…`, `req_…`, `toolu_…`)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """`length` characters drawn uniformly from the alphabet, from one draw of the system's randomness (a
    draw per character costs a system call each, several per request)."""
    number = secrets.randbelow(len(_ALPHABET) ** length)
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return prefix + "".join(chars)
