"""Numbers as people read them."""

SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def cells_words(count) -> str:
    """A count of cells in millions, as the lab writes it: 303000000 → "303 × 10⁶"."""
    if count is None:
        return "–"
    millions = count / 1_000_000
    shown = f"{millions:,.0f}" if millions >= 10 else f"{millions:,.1f}".rstrip("0").rstrip(".")
    return f"{shown} × 10{'6'.translate(SUPERSCRIPTS)}"
