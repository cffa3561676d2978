from decimal import Decimal

import pytest

from patients.clinical import fev1_fvc_ratio, gold_stage, ratio_display


@pytest.mark.parametrize(
    "fev1_pct, stage",
    [
        ("29.9", 4),
        ("30", 3),
        ("49.9", 3),
        ("50", 2),
        ("79.9", 2),
        ("80", 1),
        ("120", 1),
        ("5", 4),
    ],
)
def test_gold_stage_at_its_boundaries(fev1_pct, stage):
    assert gold_stage(fev1_fvc=Decimal("0.55"), fev1_pct_predicted=Decimal(fev1_pct)) == stage


@pytest.mark.parametrize("ratio, obstructed", [("0.699", True), ("0.70", False), ("0.701", False)])
def test_no_gold_stage_without_obstruction(ratio, obstructed):
    stage = gold_stage(fev1_fvc=Decimal(ratio), fev1_pct_predicted=Decimal(45))
    assert (stage is not None) is obstructed


def test_the_ratio_is_computed_from_volumes():
    assert fev1_fvc_ratio(fev1_l=Decimal("1.68"), fvc_l=Decimal("2.40")) == Decimal("0.700")
    assert fev1_fvc_ratio(fev1_l=Decimal("1.20"), fvc_l=Decimal("2.40")) == Decimal("0.500")


def test_a_ratio_just_below_070_is_obstruction_though_it_rounds_to_070():
    ratio = fev1_fvc_ratio(fev1_l=Decimal("1.63"), fvc_l=Decimal("2.33"))  # 0.69957…
    assert gold_stage(fev1_fvc=ratio, fev1_pct_predicted=Decimal(45)) == 3
    assert ratio_display(ratio) == Decimal("0.699")
