"""What every number a person types may be, held as data with its source.

Each measure has the range that is physically possible (outside it a value is refused beside
its field, whatever the protocol says), the range a protocol expects by default (outside it,
the value is possible but unusual: it is saved only after a second look), and the resolution
it is measured at (a value finer than that is refused with words, never cut). A protocol may
narrow or widen its expected ranges (`Protocol.expected_ranges`), never the possible ones.

The services check both, so that every entry point (admin forms and inlines, transition
forms, commands, tasks) passes the same rule; forms show the same words beside the field.
"""

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import models

from common.forms import SECOND_LOOK_WORDS


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str  # "%" is written without a space, other units after one; "" for a score
    possible: tuple[str, str]
    expected: tuple[str, str]
    places: int  # the decimals it is measured to
    source: str

    def _amount(self, value) -> str:
        text = f"{value:,}" if isinstance(value, int) and abs(value) >= 100_000 else f"{value}"
        if not self.unit:
            return text
        return f"{text}%" if self.unit == "%" else f"{text} {self.unit}"

    def _range(self, low: str, high: str) -> str:
        low_words, high_words = (self._amount(_number(v)) for v in (low, high))
        return f"between {low_words} and {high_words}"

    def refusal(self, value) -> str:
        """Why `value` cannot be this measure (impossible, or finer than it is measured);
        empty if it can be."""
        number = _decimal(value)
        if number is None:
            return ""
        if not number.is_finite():
            return f"{self.label} must be a number; {value} was entered."
        low, high = (Decimal(v) for v in self.possible)
        if not low <= number <= high:
            return (
                f"{self.label} must be {self._range(*self.possible)}; "
                f"{self._amount(value)} was entered."
            )
        if number != number.quantize(Decimal(1).scaleb(-self.places), rounding="ROUND_DOWN"):
            return (
                f"{self.label} is measured to {self._step()}; {self._amount(value)} was "
                "entered: enter it as it was measured."
            )
        return ""

    def _step(self) -> str:
        if self.unit == "cells":
            return "whole cells"
        step = Decimal(1).scaleb(-self.places)
        return f"the nearest {self._amount(step)}"

    def unusual(self, value, expected: tuple | None = None) -> str:
        """Why a possible `value` needs a second look (outside the expected range); empty if
        it does not."""
        number = _decimal(value)
        if number is None or self.refusal(value):
            return ""
        low, high = (Decimal(str(v)) for v in (expected or self.expected))
        if low <= number <= high:
            return ""
        return (
            f"{self.label} of {self._amount(value)} is unusual (expected "
            f"{self._range(str(low), str(high))})."
        )


def _decimal(value) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal("NaN")


def _number(text: str):
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() and "." not in text else number


_PERCENT = ("0", "100")
_PULMONARY = "ATS/ERS standards for lung function (Stanojevic 2022; Graham 2017)"
_CULTURE = (
    "A culture of 10¹² cells weighs about a kilogram; the trials' products held 10⁷–10⁹ "
    "(Wang 2024, Sci Transl Med)"
)
_VITALS = (
    "NEWS2 (Royal College of Physicians, 2017): outside these a patient scores for review; "
    "beyond the possible range a monitor has been misread"
)

MEASURES = {
    m.key: m
    for m in (
        Measure("percent", "A percentage", "%", _PERCENT, _PERCENT, 1, "A share of a whole"),
        Measure(
            "weight_kg",
            "Weight",
            "kg",
            ("20", "350"),
            ("35", "150"),
            1,
            "Adult weights; below 35 or above 150 kg usually means a typing slip or the wrong unit",
        ),
        Measure(
            "height_cm",
            "Height",
            "cm",
            ("100", "250"),
            ("135", "210"),
            1,
            "Adult heights (NCD-RisC 2016)",
        ),
        Measure("fev1_l", "FEV1", "L", ("0.10", "8.00"), ("0.30", "5.00"), 2, _PULMONARY),
        Measure("fvc_l", "FVC", "L", ("0.10", "10.00"), ("0.50", "7.00"), 2, _PULMONARY),
        *(
            Measure(
                f"{name.lower()}_pct_predicted",
                f"{name} % predicted",
                "%",
                ("1", "200"),
                ("15", "150"),
                1,
                _PULMONARY,
            )
            for name in ("FEV1", "FVC", "DLCO")
        ),
        Measure(
            "tlc_pct_predicted",
            "TLC % predicted",
            "%",
            ("1", "200"),
            ("60", "180"),
            1,
            f"{_PULMONARY}; emphysema hyperinflates, so TLC runs high",
        ),
        Measure("dlco", "DLCO", "mL/min/mmHg", ("0.5", "60"), ("2", "40"), 1, _PULMONARY),
        Measure(
            "walk_m",
            "Six-minute walk distance",
            "m",
            ("0", "1000"),
            ("50", "700"),
            0,
            "ATS/ERS technical standard for field walking tests (Holland 2014): measured to "
            "the metre",
        ),
        Measure("mmrc", "mMRC", "", ("0", "4"), ("0", "4"), 0, "The mMRC scale: grades 0–4"),
        Measure("cat", "CAT", "", ("0", "40"), ("0", "40"), 0, "The CAT: 8 items scored 0–5"),
        Measure(
            "low_attenuation_pct",
            "Low-attenuation area",
            "%",
            _PERCENT,
            _PERCENT,
            1,
            "A share of the lung's volume",
        ),
        Measure(
            "crp_mg_l",
            "C-reactive protein",
            "mg/L",
            ("0", "1000"),
            ("0", "200"),
            1,
            "Laboratory CRP assays report 0–1000 mg/L; above 200 is rare outside sepsis",
        ),
        Measure(
            "identity_p63_pct",
            "Identity (P63+ cells)",
            "%",
            _PERCENT,
            ("20", "100"),
            1,
            "A share of the cells; below 20 % usually means a decimal slip",
        ),
        Measure(
            "purity_pct",
            "Purity",
            "%",
            _PERCENT,
            ("20", "100"),
            1,
            "A share of the cells; below 20 % usually means a decimal slip",
        ),
        Measure(
            "viability_pct",
            "Viability",
            "%",
            _PERCENT,
            ("20", "100"),
            1,
            "A share of the cells; below 20 % usually means a decimal slip",
        ),
        Measure(
            "viable_cells", "Viable cells", "cells", ("1", "1E12"), ("1E6", "2E10"), 0, _CULTURE
        ),
        Measure("total_cells", "Total cells", "cells", ("1", "1E12"), ("1E5", "2E10"), 0, _CULTURE),
        Measure(
            "cells_administered",
            "Cells administered",
            "cells",
            ("1", "1E12"),
            ("1E6", "2E10"),
            0,
            _CULTURE,
        ),
        Measure(
            "temperature_c",
            "Temperature",
            "°C",
            ("-200", "60"),
            ("-25", "40"),
            1,
            "Liquid nitrogen is −196 °C; above 60 °C no cell survives. Outside −25–40 °C a "
            "shipping logger has usually been misread",
        ),
        Measure(
            "storage_temperature_c",
            "Storage temperature",
            "°C",
            ("-200", "60"),
            ("-196", "-135"),
            1,
            "Vapour-phase liquid nitrogen holds −196 to −150 °C (ISCT; FACT-JACIE standards)",
        ),
        Measure(
            "dose_million_per_kg",
            "A dose",
            "× 10⁶ cells/kg",
            ("0.01", "50"),
            ("0.1", "10"),
            2,
            "The trials gave 0.7–5.2 × 10⁶/kg (P63+) and 0.5–2 × 10⁶/kg (MSC); 50 is beyond any "
            "published cell dose",
        ),
        Measure(
            "fev1_change_ml",
            "An FEV1 change",
            "mL",
            ("0", "5000"),
            ("50", "1000"),
            0,
            "No adult's FEV1 exceeds 8 L; a change of 100–200 mL is clinically meaningful",
        ),
        Measure(
            "notice_hours",
            "A notice",
            "h",
            ("0", "720"),
            ("0", "168"),
            0,
            "Up to 30 days; bronchoscopy needs 6 h of fasting and an escort arranged",
        ),
        Measure(
            "units_in_lot",
            "Units received",
            "units",
            ("1", "1000"),
            ("1", "200"),
            0,
            "A bank's lot is one donor's expansion, issued in tens of vials, rarely hundreds "
            "(ISCT MSC banking surveys)",
        ),
        Measure(
            "cells_per_unit",
            "Cells per unit",
            "cells",
            ("1E5", "1E10"),
            ("1E7", "5E8"),
            0,
            "MSC doses are 0.5–2 × 10⁶/kg, banked as 10⁷–10⁸ cells a vial; 10¹⁰ would not fit "
            "one bag",
        ),
        Measure(
            "passage",
            "Passage",
            "",
            ("0", "50"),
            ("1", "10"),
            0,
            "MSC lose their properties with passage; banks release at passage 2–6, senescence "
            "comes by 10–15 (ISCT 2006; Wagner 2008)",
        ),
        Measure(
            "endotoxin_eu_ml",
            "Endotoxin",
            "EU/mL",
            ("0", "1000"),
            ("0", "5"),
            2,
            "Parenteral products are held under 5 EU/kg/h (Ph. Eur. 2.6.14, USP <85>)",
        ),
        Measure(
            "positive_marker_pct",
            "A positive marker (CD73, CD90, CD105)",
            "%",
            ("0", "100"),
            ("95", "100"),
            1,
            "ISCT minimal criteria (Dominici 2006): each on at least 95 % of the cells",
        ),
        Measure(
            "negative_marker_pct",
            "A negative marker (CD45, CD34, CD14/CD11b, CD79a/CD19, HLA-DR)",
            "%",
            ("0", "100"),
            ("0", "2"),
            1,
            "ISCT minimal criteria (Dominici 2006): each on at most 2 % of the cells",
        ),
        Measure("heart_rate_bpm", "Heart rate", "/min", ("20", "250"), ("51", "90"), 0, _VITALS),
        Measure(
            "systolic_mmhg", "Systolic pressure", "mmHg", ("40", "300"), ("101", "219"), 0, _VITALS
        ),
        Measure(
            "diastolic_mmhg", "Diastolic pressure", "mmHg", ("20", "200"), ("40", "110"), 0, _VITALS
        ),
        Measure("spo2_pct", "SpO2", "%", ("30", "100"), ("88", "100"), 0, _VITALS),
        Measure(
            "body_temperature_c", "Temperature", "°C", ("25", "45"), ("35.1", "38.0"), 1, _VITALS
        ),
        Measure(
            "respiratory_rate", "Respiratory rate", "/min", ("4", "70"), ("12", "20"), 0, _VITALS
        ),
        Measure(
            "transit_hours",
            "Hours in transit",
            "h",
            ("0", "1000"),
            ("0", "72"),
            1,
            "A courier's longest international leg is under three days",
        ),
    )
}


def measure(key: str) -> Measure:
    return MEASURES[key]


class MeasuredModel(models.Model):
    """A model whose numbers are measures: `measured_fields` names each field's measure.
    Validating it refuses an impossible value, or one finer than it is measured, beside its
    field, in the measure's words, before Django's own field checks (an integer field would
    otherwise cut 478.75 to 478)."""

    measured_fields: dict[str, str] = {}
    # A value judged with others (a ratio): asked about again when any of them changes.
    looked_at_together: dict[str, tuple[str, ...]] = {}

    class Meta:
        abstract = True

    def clean_fields(self, exclude=None):
        exclude = set(exclude or ())
        errors = {}
        for name, key in self.measured_fields.items():
            words = "" if name in exclude else MEASURES[key].refusal(getattr(self, name))
            if words:
                errors[name] = [words]
        try:
            super().clean_fields(exclude=exclude | set(errors))
        except ValidationError as invalid:
            errors = invalid.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def unusual_values(self, expected: dict | None = None) -> dict[str, str]:
        """The values that need a second look, by field, with why."""
        values = {name: getattr(self, name) for name in self.measured_fields}
        return unusual_values(values, keys=self.measured_fields, expected=expected)


def expected_range_errors(ranges) -> list[str]:
    """What is wrong with a protocol's expected ranges ({key: [low, high]}); empty if right."""
    if not isinstance(ranges, dict):
        return ['Give the expected ranges as {"measure": [low, high]}.']
    errors = []
    for key, bounds in ranges.items():
        found = MEASURES.get(key)
        if found is None:
            errors.append(f"There is no measure named {key!r}: one of {', '.join(MEASURES)}.")
            continue
        try:
            low, high = (Decimal(str(v)) for v in bounds)
        except (TypeError, ValueError, InvalidOperation):
            errors.append(f"{found.label}: give the range as [low, high].")
            continue
        if not (low.is_finite() and high.is_finite()):
            errors.append(f"{found.label}: give the range as two numbers, [low, high].")
        elif not low < high:
            errors.append(f"{found.label}: the low end must be below the high end.")
        elif found.refusal(low) or found.refusal(high):
            errors.append(
                f"{found.label}: an expected range must lie within what is possible, "
                f"{found._range(*found.possible)}."
            )
    return errors


def unusual_values(values: dict, *, keys: dict, expected: dict | None = None) -> dict[str, str]:
    """The values of `values` (field name: value) that need a second look, by field, with
    why; `keys` names each field's measure, `expected` a protocol's own ranges."""
    expected = expected or {}
    found = {}
    for field, key in keys.items():
        words = MEASURES[key].unusual(values.get(field), expected.get(key))
        if words:
            found[field] = words
    return found


def unusual_values_refused(unusual: dict[str, str]) -> ValidationError:
    """The error a service raises for unusual values nobody has looked at twice."""
    return ValidationError(
        {field: f"{words} {SECOND_LOOK_WORDS}" for field, words in unusual.items()},
        code="unusual",
    )
