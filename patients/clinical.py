"""Clinical classifications computed from measurements, never typed in."""

from decimal import ROUND_DOWN, Decimal

# Post-bronchodilator FEV1/FVC below this confirms airflow obstruction (GOLD).
OBSTRUCTION_RATIO = Decimal("0.70")

# (lowest FEV1 % predicted, GOLD grade), highest first.
_GOLD_GRADES = ((Decimal(80), 1), (Decimal(50), 2), (Decimal(30), 3), (Decimal(0), 4))


def fev1_fvc_ratio(*, fev1_l: Decimal, fvc_l: Decimal) -> Decimal:
    """FEV1/FVC, unrounded: 1.63/2.33 = 0.69957… is obstruction, though it rounds to 0.700."""
    return Decimal(fev1_l) / Decimal(fvc_l)


def ratio_display(ratio: Decimal) -> Decimal:
    """Three decimals, cut rather than rounded, so the shown value stays on its side of 0.70."""
    return Decimal(ratio).quantize(Decimal("0.001"), rounding=ROUND_DOWN)


def gold_stage(*, fev1_fvc: Decimal, fev1_pct_predicted: Decimal) -> int | None:
    """GOLD spirometric grade 1-4, or None when FEV1/FVC does not show obstruction."""
    if Decimal(fev1_fvc) >= OBSTRUCTION_RATIO:
        return None
    for lowest_pct, grade in _GOLD_GRADES:
        if Decimal(fev1_pct_predicted) >= lowest_pct:
            return grade
    return 4
