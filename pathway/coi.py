"""Chain-of-identity (COI) ids: `LDN26-000042-K`.

Site code, two-digit year of the first harvest, the course number, and an ISO 7064
MOD 37-2 check character (the scheme ISBT 128 uses), which catches every single
mistyped character and every swap of two adjacent characters.
"""

import re

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
# ASCII only: `\d` would take Arabic-Indic or fullwidth digits, which have no check value.
_SHAPE = re.compile(r"^([A-Z]{2,5}[0-9]{2})([0-9]{6,})([0-9A-Z*])$")


def coi_check_character(body: str) -> str:
    """The MOD 37-2 check character for an alphanumeric body."""
    remainder = 0
    for character in body:
        remainder = ((remainder + _ALPHABET.index(character)) * 2) % 37
    return _ALPHABET[(38 - remainder) % 37]


def coi_id_format(*, site_code: str, year: int, number: int) -> str:
    body = f"{site_code}{year % 100:02d}{number:06d}"
    return f"{site_code}{year % 100:02d}-{number:06d}-{coi_check_character(body)}"


def coi_id_normalise(value: str) -> str:
    """Upper case, no spaces or hyphens: what a scanner or a hurried hand may give."""
    return re.sub(r"[\s-]", "", value or "").upper()


def coi_id_is_valid(value: str) -> bool:
    """Well formed and its check character right. Only ASCII is ever valid: upper-casing
    "ß" gives "SS", and other scripts' digits look like ours, so either could pass for
    another id."""
    if not (value or "").isascii():
        return False
    match = _SHAPE.match(coi_id_normalise(value))
    if not match:
        return False
    body = match.group(1) + match.group(2)
    return coi_check_character(body) == match.group(3)


def coi_id_canonical(value: str) -> str | None:
    """The id as it is stored ("LDN26-000042-K") from however it was typed or scanned
    ("ldn26 000042k"); None if it is not a valid id."""
    if not coi_id_is_valid(value):
        return None
    match = _SHAPE.match(coi_id_normalise(value))
    return f"{match.group(1)}-{match.group(2)}-{match.group(3)}"


def coi_ids_match(entered: str, expected: str) -> bool:
    if not ((entered or "").isascii() and (expected or "").isascii()):
        return False
    return coi_id_normalise(entered) == coi_id_normalise(expected)


def unit_id_normalise(value: str) -> str:
    """A cell-bank unit's id (the bank's, e.g. an ISBT 128 donation id) however it was typed
    or scanned: upper case, no spaces or hyphens."""
    return re.sub(r"[\s-]", "", value or "").upper()


def unit_ids_of(text: str) -> list[str]:
    """The unit ids in what was scanned or typed: one per line, or separated by commas."""
    return [unit_id_normalise(part) for part in re.split(r"[\n,;]+", text or "") if part.strip()]
