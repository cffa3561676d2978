import itertools

import pytest

from pathway.coi import coi_id_format, coi_id_is_valid, coi_id_normalise, coi_ids_match

ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def sample_ids():
    for code, year, number in itertools.product(
        ("LDN", "OSLO", "SH"), (26, 27), (1, 42, 99999, 123456)
    ):
        yield coi_id_format(site_code=code, year=2000 + year, number=number)


def test_the_id_reads_site_year_number_and_check():
    coi = coi_id_format(site_code="LDN", year=2026, number=42)
    assert coi.startswith("LDN26-000042-") and len(coi) == 14
    assert coi_id_is_valid(coi)
    assert coi_id_is_valid(coi.lower().replace("-", " "))


def test_every_single_substitution_is_caught():
    for coi in sample_ids():
        body = coi_id_normalise(coi)
        for position, original in enumerate(body):
            for replacement in ALPHANUMERIC:
                if replacement != original:
                    typo = body[:position] + replacement + body[position + 1 :]
                    assert not coi_id_is_valid(typo), (coi, typo)


def test_every_adjacent_transposition_is_caught():
    for coi in sample_ids():
        body = coi_id_normalise(coi)
        for position in range(len(body) - 1):
            a, b = body[position], body[position + 1]
            if a != b:
                swapped = body[:position] + b + a + body[position + 2 :]
                assert not coi_id_is_valid(swapped), (coi, swapped)


@pytest.mark.parametrize(
    "entered",
    [
        "LD٣26-000018-H",  # an Arabic-Indic three
        "LDN２６-000018-H",  # fullwidth digits
        "LDN𝟐𝟔-000018-H",  # mathematical digits
        "ＬＤＮ26-000018-H",  # fullwidth letters
        "LDN26-000018-ß",  # upper-cases to "SS"
    ],
)
def test_only_ascii_is_ever_a_chain_of_identity_id(entered):
    assert coi_id_is_valid(entered) is False
    assert coi_ids_match(entered, entered.upper()) is False
