import datetime as dt
import hashlib
import json
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django_fsm import RETURN_VALUE, ConcurrentTransitionMixin, FSMField, transition
from simple_history.models import HistoricalRecords

from common.zones import date_words, local_words
from pathway.states import (
    FINAL_STATES,
    HOLDABLE_STATES,
    WITHDRAWABLE_STATES,
    CourseState,
    Therapy,
)
from pathway.therapies import ELIGIBILITY_RULES, FollowsTherapy, TherapyPathway, pathway_of
from patients.measures import MeasuredModel, expected_range_errors, measure


def expansion_day(*, received_at: dt.datetime, at: dt.datetime, zone) -> int:
    """The day of expansion at `at`: whole days since the lab received the sample, counted in
    the site's calendar (the day of receipt is day 0). The release window's days are these."""
    return (timezone.localdate(at, zone) - timezone.localdate(received_at, zone)).days


def expansion_day_cutoff(day: int, *, now: dt.datetime, zone) -> dt.datetime:
    """A sample received before this instant is on expansion `day` or later at `now`: the
    site's midnight `day - 1` days before `now`'s date there. `expansion_day`'s count, in a
    form a query can filter on."""
    first_day_short = timezone.localdate(now, zone) - dt.timedelta(days=day - 1)
    return dt.datetime.combine(first_day_short, dt.time(0), tzinfo=zone)


SEDATION_PREPARATION = (
    "Do not eat or drink for 6 hours before. You will be sedated: bring someone to take you "
    "home, and do not drive for 24 hours."
)


INFUSION_PREPARATION = (
    "Eat and drink as usual and take your usual medicines. Allow about three hours; you can "
    "go home afterwards."
)


def _default_reminder_lead_days() -> list[int]:
    return [7, 1]


def _no_eligibility_rules() -> list[str]:
    return []


class FollowUpAnchor(models.TextChoices):
    FIRST = "first", "The first infusion"
    LAST = "last", "The last infusion"


class Protocol(MeasuredModel):
    """Every number the pathway runs on, as data a site can amend without a deploy."""

    # Its limits are measures too: a purity limit of 950 % is refused like a purity of 950 %.
    measured_fields = {
        "fev1_pct_min": "fev1_pct_predicted",
        "fev1_pct_max": "fev1_pct_predicted",
        "cold_chain_min_c": "temperature_c",
        "cold_chain_max_c": "temperature_c",
        "cold_chain_max_transit_hours": "transit_hours",
        "min_viability_pct": "percent",
        "min_identity_p63_pct": "percent",
        "min_purity_pct": "percent",
        "dlco_decline_alert_pct": "percent",
        "dose_min_million_per_kg": "dose_million_per_kg",
        "dose_max_million_per_kg": "dose_million_per_kg",
        "dose_target_million_per_kg": "dose_million_per_kg",
        "fev1_decline_alert_ml": "fev1_change_ml",
        "harvest_notice_hours": "notice_hours",
        "transplant_notice_hours": "notice_hours",
        "consultation_notice_hours": "notice_hours",
        "infusion_notice_hours": "notice_hours",
        "min_positive_marker_pct": "percent",
        "max_negative_marker_pct": "percent",
        "max_endotoxin_eu_ml": "endotoxin_eu_ml",
        "max_storage_temperature_c": "storage_temperature_c",
    }

    name = models.CharField(max_length=200, unique=True)
    is_default = models.BooleanField(
        default=False, help_text="New courses use the default protocol unless told otherwise."
    )
    therapy = models.CharField(
        max_length=10,
        choices=Therapy.choices,
        default=Therapy.P63,
        help_text="What the protocol gives: its courses take this therapy's steps.",
    )
    default_at = models.ManyToManyField(
        "patients.Site",
        blank=True,
        related_name="default_protocols",
        help_text="Sites whose new courses follow this protocol unless told otherwise (a site "
        "giving only MSC infusions, say); elsewhere the default protocol.",
    )
    eligibility_rules = models.JSONField(
        "eligibility rules that apply",
        default=_no_eligibility_rules,
        blank=True,
        help_text='The keys of the rules approval checks, e.g. ["copd_confirmed", '
        '"gold_2_4"]; empty for the therapy\'s own set. Known rules: '
        + ", ".join(ELIGIBILITY_RULES)
        + ".",
    )

    # Step 1: eligibility
    fev1_pct_min = models.DecimalField(
        "lowest FEV1 % predicted",
        max_digits=4,
        decimal_places=1,
        default=Decimal(30),
        help_text="Below this (GOLD 4) approval needs a specialist's written justification.",
    )
    fev1_pct_max = models.DecimalField(
        "highest FEV1 % predicted", max_digits=4, decimal_places=1, default=Decimal(70)
    )
    smoking_quit_min_months = models.PositiveSmallIntegerField(
        "months since quitting smoking", default=6
    )

    # Step 3: cold chain, expansion and release
    cold_chain_min_c = models.DecimalField(
        "lowest transit temperature (°C)", max_digits=4, decimal_places=1, default=Decimal(2)
    )
    cold_chain_max_c = models.DecimalField(
        "highest transit temperature (°C)", max_digits=4, decimal_places=1, default=Decimal(8)
    )
    cold_chain_max_transit_hours = models.DecimalField(
        "longest transit (hours)", max_digits=5, decimal_places=1, default=Decimal(48)
    )
    expansion_min_days = models.PositiveSmallIntegerField(default=21)
    expansion_max_days = models.PositiveSmallIntegerField(default=35)
    min_viability_pct = models.DecimalField(
        "lowest viability %", max_digits=4, decimal_places=1, default=Decimal(70)
    )
    # No published release specification gives these numbers; the defaults are conservative
    # placeholders (a product of which fewer than 4 cells in 5 are basal progenitors, or more
    # than 1 in 10 is another cell type, is not the product the trials gave). Each site's
    # qualified person sets its validated specification here.
    min_identity_p63_pct = models.DecimalField(
        "lowest P63+ fraction %",
        max_digits=4,
        decimal_places=1,
        default=Decimal(80),
        help_text="Identity: the share of P63+ basal progenitor cells a batch must reach.",
    )
    min_purity_pct = models.DecimalField(
        "lowest purity %",
        max_digits=4,
        decimal_places=1,
        default=Decimal(90),
        help_text="Purity: the share of epithelial cells (no fibroblasts or other types).",
    )

    # Step 4: dose
    dose_min_million_per_kg = models.DecimalField(
        "lowest dose (10⁶ cells/kg)", max_digits=5, decimal_places=2, default=Decimal("0.70")
    )
    dose_max_million_per_kg = models.DecimalField(
        "highest dose (10⁶ cells/kg)", max_digits=5, decimal_places=2, default=Decimal("5.20")
    )
    dose_target_million_per_kg = models.DecimalField(
        "target dose (10⁶ cells/kg)",
        max_digits=5,
        decimal_places=2,
        default=Decimal("2.00"),
        help_text="What the lab grows towards and the growth forecast aims at; release needs "
        "only the lowest dose.",
    )

    # Reminders and alerts
    reminder_lead_days = models.JSONField(
        default=_default_reminder_lead_days,
        help_text="Days before an appointment that patients are reminded, e.g. [7, 1].",
    )
    quiet_hours_start = models.TimeField(
        "SMS quiet hours start", default=dt.time(21, 0), help_text="In the patient's own time."
    )
    quiet_hours_end = models.TimeField("SMS quiet hours end", default=dt.time(8, 0))
    whatsapp_quiet_hours_start = models.TimeField(
        "WhatsApp quiet hours start",
        default=dt.time(21, 0),
        help_text="In the patient's own time: WhatsApp's own, set apart from SMS's.",
    )
    whatsapp_quiet_hours_end = models.TimeField("WhatsApp quiet hours end", default=dt.time(8, 0))
    harvest_notice_hours = models.PositiveSmallIntegerField(
        "notice a harvest needs (hours)",
        default=24,
        help_text="Booked no sooner than this: the patient fasts and arranges to be taken home.",
    )
    transplant_notice_hours = models.PositiveSmallIntegerField(
        "notice a transplant needs (hours)",
        default=24,
        help_text="Booked no sooner than this: the patient fasts and arranges to be taken home.",
    )
    transplant_booking_max_days = models.PositiveSmallIntegerField(
        "days to book a transplant after release", default=14
    )
    adverse_event_alert_grade = models.PositiveSmallIntegerField(
        "alert at CTCAE grade",
        default=3,
        help_text="An adverse event of this grade or worse, or any serious one, alerts at once.",
    )
    fev1_decline_alert_ml = models.PositiveSmallIntegerField(
        "alert when FEV1 falls by more than (mL)",
        default=200,
        help_text="A follow-up FEV1 this far below baseline alerts the clinicians.",
    )
    dlco_decline_alert_pct = models.DecimalField(
        "alert when DLCO falls by more than (%)",
        max_digits=4,
        decimal_places=1,
        default=Decimal(15),
        help_text="A follow-up DLCO this much below baseline, relative, alerts the clinicians.",
    )
    dosing_weight_max_age_days = models.PositiveSmallIntegerField(
        "days a dosing weight stays valid",
        default=30,
        help_text="The dosing weight must be this recent, and taken since evaluation began.",
    )
    delivery_max_attempts = models.PositiveSmallIntegerField(
        "tries to deliver a reminder",
        default=5,
        help_text="After this many failed tries the coordinator is alerted.",
    )

    # MSC infusions: the doses, their spacing and the bedside limits.
    dose_count = models.PositiveSmallIntegerField(
        "infusions in a course", default=1, help_text="E.g. 4 for four doses."
    )
    dose_interval_days = models.PositiveSmallIntegerField(
        "days between infusions",
        default=28,
        help_text="The doses' spacing, held as one chain of infusion-chair slots.",
    )
    follow_up_anchor = models.CharField(
        "follow-ups count from",
        max_length=10,
        choices=FollowUpAnchor.choices,
        default=FollowUpAnchor.FIRST,
        help_text="For an infusion protocol: which infusion the follow-up weeks count from.",
    )
    thaw_to_infusion_max_minutes = models.PositiveSmallIntegerField(
        "minutes from thaw to infusion",
        default=120,
        help_text="Longer only with a reason, logged as a protocol deviation.",
    )
    vitals_after_minutes = models.PositiveSmallIntegerField(
        "minutes from the start to the vital signs after",
        default=60,
        help_text="An infusion is recorded, with its vital signs after, no sooner than this "
        "after it started.",
    )
    consultation_notice_hours = models.PositiveSmallIntegerField(
        "notice a consultation needs (hours)",
        default=24,
        help_text="A first consultation with someone who enquired is booked no sooner than "
        "this: they arrange the time off, or the video call.",
    )
    infusion_notice_hours = models.PositiveSmallIntegerField(
        "notice an infusion needs (hours)",
        default=24,
        help_text="Booked no sooner than this: the patient arranges half a day at the unit.",
    )
    # The lot release specification: the ISCT minimal criteria (Dominici 2006) by default.
    min_positive_marker_pct = models.DecimalField(
        "lowest CD73, CD90, CD105 %",
        max_digits=4,
        decimal_places=1,
        default=Decimal(95),
        help_text="Identity: each of CD73, CD90 and CD105 on at least this share of the cells.",
    )
    max_negative_marker_pct = models.DecimalField(
        "highest CD45, CD34, CD14/CD11b, CD79a/CD19, HLA-DR %",
        max_digits=4,
        decimal_places=1,
        default=Decimal(2),
        help_text="Purity: each of these on at most this share of the cells.",
    )
    # No published figure gives an MSC lot's endotoxin limit per mL; 0.5 EU/mL is the limit
    # the P63+ protocols' extra tests use, a conservative placeholder the site's qualified
    # person replaces with its validated specification.
    max_endotoxin_eu_ml = models.DecimalField(
        "highest endotoxin (EU/mL)", max_digits=6, decimal_places=2, default=Decimal("0.50")
    )
    max_storage_temperature_c = models.DecimalField(
        "warmest storage (°C)",
        max_digits=4,
        decimal_places=1,
        default=Decimal(-150),
        help_text="Vapour-phase liquid nitrogen holds −150 °C or colder.",
    )
    lot_expiry_warning_days = models.PositiveSmallIntegerField(
        "days ahead the stock shows a lot expiring", default=30
    )
    stock_lookahead_days = models.PositiveSmallIntegerField(
        "days of bookings the free stock must cover",
        default=28,
        help_text="The lab is told when the free units cannot cover the doses held this far ahead.",
    )

    expected_ranges = models.JSONField(
        "expected ranges",
        default=dict,
        blank=True,
        help_text='Where this protocol expects other values than the defaults, e.g. {"weight_kg": '
        "[40, 160]}: a value outside is saved only after a second look. What is possible is "
        "fixed (patients/measures.py).",
    )

    # What reminders tell patients: plain words that name no diagnosis and no treatment.
    harvest_description = models.CharField(
        "the harvest, in patients' words",
        max_length=120,
        default="a short procedure under sedation to take a sample",
    )
    harvest_preparation = models.TextField(
        "preparation for the harvest", blank=True, default=SEDATION_PREPARATION
    )
    transplant_description = models.CharField(
        "the transplant, in patients' words",
        max_length=120,
        default="your second short procedure under sedation",
    )
    transplant_preparation = models.TextField(
        "preparation for the transplant", blank=True, default=SEDATION_PREPARATION
    )
    infusion_description = models.CharField(
        "an infusion, in patients' words",
        max_length=120,
        default="a visit of about three hours at the day unit",
    )
    infusion_preparation = models.TextField(
        "preparation for an infusion", blank=True, default=INFUSION_PREPARATION
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="protocol_single_default",
                violation_error_message="Another protocol is already the default.",
            ),
            models.CheckConstraint(
                condition=models.Q(fev1_pct_min__lt=models.F("fev1_pct_max")),
                name="protocol_fev1_range_ordered",
                violation_error_message="The lowest FEV1 %% must be below the highest.",
            ),
            models.CheckConstraint(
                condition=models.Q(expansion_min_days__lte=models.F("expansion_max_days")),
                name="protocol_expansion_range_ordered",
                violation_error_message="The shortest expansion must not exceed the longest.",
            ),
            models.CheckConstraint(
                condition=models.Q(cold_chain_min_c__lt=models.F("cold_chain_max_c")),
                name="protocol_cold_chain_range_ordered",
                violation_error_message="The lowest transit temperature must be below the highest.",
            ),
            models.CheckConstraint(
                condition=models.Q(dose_min_million_per_kg__lt=models.F("dose_max_million_per_kg")),
                name="protocol_dose_range_ordered",
                violation_error_message="The lowest dose must be below the highest.",
            ),
            models.CheckConstraint(
                condition=models.Q(dose_count__gte=1),
                name="protocol_at_least_one_dose",
                violation_error_message="A course gives at least one dose.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        ranges = expected_range_errors(self.expected_ranges)
        if ranges:
            errors["expected_ranges"] = ranges
        rules = self.eligibility_rules
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            errors["eligibility_rules"] = ['Give the rules as a list, e.g. ["gold_2_4"].']
        elif unknown := [r for r in rules if r not in ELIGIBILITY_RULES]:
            errors["eligibility_rules"] = [
                f"No eligibility rule is called {', '.join(unknown)}: one of "
                f"{', '.join(ELIGIBILITY_RULES)}."
            ]
        if self.therapy_is_fixed():
            stored = Protocol.objects.filter(pk=self.pk).values_list("therapy", flat=True).get()
            if stored != self.therapy:
                errors["therapy"] = [
                    f"Courses follow this protocol's {pathway_of(stored).short_name} steps: "
                    "its therapy cannot change. Add a protocol for the other therapy."
                ]
        if errors:
            raise ValidationError(errors)

    def therapy_is_fixed(self) -> bool:
        """Whether the therapy can no longer change: courses follow it (a course in a state
        of one therapy cannot take the other's steps)."""
        return self.pk is not None and self.courses.exists()

    @property
    def pathway(self) -> TherapyPathway:
        """The therapy's pathway: its steps, states and default eligibility rules."""
        return pathway_of(self.therapy)

    @property
    def applied_eligibility_rules(self) -> tuple[str, ...]:
        """The eligibility rules approval checks: the protocol's own, else its therapy's."""
        return tuple(self.eligibility_rules or self.pathway.eligibility_rules)

    def release_window(self, received_on: dt.date) -> tuple[dt.date, dt.date]:
        """The first and last day a batch received on `received_on` may be released."""
        return (
            received_on + dt.timedelta(days=self.expansion_min_days),
            received_on + dt.timedelta(days=self.expansion_max_days),
        )


class ProtocolInstrument(models.Model):
    """A questionnaire the protocol asks patients between visits: every so many days from the
    transplant until a week, or once around each follow-up; open for some days, reminded
    once."""

    protocol = models.ForeignKey(Protocol, on_delete=models.CASCADE, related_name="instruments")
    instrument = models.ForeignKey(
        "patients.Instrument", on_delete=models.PROTECT, related_name="+"
    )
    every_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="E.g. 7 for a weekly diary; empty to ask it at each follow-up instead.",
    )
    until_weeks = models.PositiveSmallIntegerField(
        default=24, help_text="Weeks after the transplant it is asked until."
    )
    open_days = models.PositiveSmallIntegerField(
        default=3, help_text="Days it stays open before it closes as missed."
    )
    remind_after_days = models.PositiveSmallIntegerField(
        default=2, help_text="Days unanswered before the one reminder."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(remind_after_days__lt=models.F("open_days")),
                name="protocol_instrument_reminds_while_open",
                violation_error_message="The reminder must come while it is still open.",
            )
        ]

    def __str__(self) -> str:
        when = f"every {self.every_days} days" if self.every_days else "at each follow-up"
        return f"{self.instrument}, {when}"


class QcTestKind(models.TextChoices):
    PASS_FAIL = "pass_fail", "Passed or failed"
    AT_LEAST = "at_least", "A number, at least the limit"
    AT_MOST = "at_most", "A number, at most the limit"


class ProtocolQcTest(models.Model):
    """A release test of the protocol beyond identity, purity, sterility and viability (e.g.
    Mycoplasma, endotoxin): the lab records its result on the batch, and release needs it to
    pass."""

    protocol = models.ForeignKey(Protocol, on_delete=models.CASCADE, related_name="qc_tests")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=QcTestKind.choices, default=QcTestKind.PASS_FAIL)
    limit = models.DecimalField(
        max_digits=12,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="For a number: the lowest or highest result that passes.",
    )
    unit = models.CharField(max_length=20, blank=True, help_text="For a number, e.g. EU/mL.")

    class Meta:
        ordering = ["id"]
        verbose_name = "extra QC test"
        constraints = [
            models.UniqueConstraint(
                fields=["protocol", "name"],
                name="protocol_qc_test_unique_name",
                violation_error_message="The protocol already has a test of this name.",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="pass_fail", limit__isnull=True)
                | (~models.Q(kind="pass_fail") & models.Q(limit__isnull=False)),
                name="protocol_qc_test_limit_for_numbers",
                violation_error_message="A numeric test needs a limit; a pass/fail test has none.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.specification})"

    def clean(self) -> None:
        impossible = self.unit.strip() == "%" and measure("percent").refusal(self.limit)
        if impossible:
            raise ValidationError({"limit": impossible})

    @property
    def specification(self) -> str:
        """What passes, in words: "passed", "≥ 95 %", "≤ 0.5 EU/mL"."""
        if self.kind == QcTestKind.PASS_FAIL:
            return "passed"
        sign = "≥" if self.kind == QcTestKind.AT_LEAST else "≤"
        return f"{sign} {self.limit.normalize():f} {self.unit}".strip()

    def passes(self, result) -> bool:
        """Whether a recorded result (True/False, or a number as text) meets the test."""
        if self.kind == QcTestKind.PASS_FAIL:
            return result is True
        try:
            value = Decimal(str(result))
        except (ArithmeticError, ValueError):
            return False
        if not value.is_finite():
            return False
        return value >= self.limit if self.kind == QcTestKind.AT_LEAST else value <= self.limit


class ProtocolVisit(MeasuredModel):
    """One follow-up visit of a protocol, anchored to the transplant date."""

    measured_fields = {"notice_hours": "notice_hours"}

    protocol = models.ForeignKey(Protocol, on_delete=models.CASCADE, related_name="visits")
    name = models.CharField(max_length=100, help_text="e.g. 4-week lung function")
    weeks_after_transplant = models.PositiveSmallIntegerField()
    window_days = models.PositiveSmallIntegerField(
        help_text="The visit may happen this many days either side of its due date."
    )
    includes_ct = models.BooleanField("includes chest CT", default=False)
    completes_course = models.BooleanField(
        default=False, help_text="The course completes when this visit is done."
    )
    patient_description = models.CharField(
        "in patients' words",
        max_length=120,
        default="breathing tests",
        help_text='What reminders call this visit, e.g. "breathing tests", "a CT scan".',
    )
    preparation = models.TextField(
        blank=True, help_text="What the patient should do before the visit, if anything."
    )
    notice_hours = models.PositiveSmallIntegerField(
        "notice it needs (hours)",
        default=24,
        help_text="Booked no sooner than this, so that the patient can prepare (e.g. stop an "
        "inhaler the day before breathing tests).",
    )

    class Meta:
        ordering = ["protocol", "weeks_after_transplant"]
        constraints = [
            models.UniqueConstraint(
                fields=["protocol", "weeks_after_transplant", "includes_ct"],
                name="protocol_visit_unique_week",
            ),
        ]

    def __str__(self) -> str:
        return self.name


def _transition_permission(name: str) -> str:
    return f"pathway.{name}_course"


# (transition name, label) in pathway order; each has a permission of the same name.
TRANSITIONS = (
    ("start_evaluation", "Start evaluation"),
    ("approve", "Approve"),
    ("decline", "Decline"),
    ("schedule_harvest", "Schedule harvest"),
    ("record_harvest", "Record harvest"),
    ("receive_at_lab", "Receive at lab"),
    ("reject_sample", "Reject sample"),
    ("fail_qc", "Fail QC"),
    ("release", "Release"),
    ("schedule_transplant", "Schedule transplant"),
    ("record_transplant", "Record transplant"),
    ("allocate_product", "Allocate product"),
    ("schedule_infusion", "Schedule infusion"),
    ("record_infusion", "Record infusion"),
    ("complete", "Complete"),
    ("hold", "Put on hold"),
    ("resume", "Resume"),
    ("withdraw", "Withdraw"),
)
TRANSITION_LABELS = dict(TRANSITIONS)

# The conditions of the steps one therapy has and another has not.
_P63 = [FollowsTherapy(Therapy.P63)]
_MSC = [FollowsTherapy(Therapy.MSC)]


def _custom(name: str, *, form: bool = True) -> dict:
    custom = {"label": TRANSITION_LABELS[name]}
    if form:
        custom["form"] = f"pathway.forms.{name.title().replace('_', '')}Form"
    return custom


class TreatmentCourse(ConcurrentTransitionMixin, models.Model):
    """One patient's path from referral to the last follow-up.

    Transitions only set fields. They are fired through `pathway.services`, which checks
    permission and guards, saves, logs and schedules what follows, all in one transaction.
    """

    patient = models.ForeignKey(
        "patients.Patient", on_delete=models.PROTECT, related_name="courses"
    )
    site = models.ForeignKey("patients.Site", on_delete=models.PROTECT, related_name="courses")
    protocol = models.ForeignKey(Protocol, on_delete=models.PROTECT, related_name="courses")
    state = FSMField(
        default=CourseState.REFERRED, choices=CourseState.choices, protected=True, db_index=True
    )
    state_changed_at = models.DateTimeField(default=timezone.now)
    state_before_hold = models.CharField(
        max_length=30, choices=CourseState.choices, blank=True, editable=False
    )
    referred_at = models.DateTimeField(default=timezone.now)
    referred_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    coi_id = models.CharField(
        "chain-of-identity id", max_length=30, unique=True, null=True, blank=True, editable=False
    )
    evaluation_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    low_fev1_justification = models.TextField(
        blank=True,
        editable=False,
        help_text="Specialist's justification that enough basal cells remain (FEV1 below range).",
    )
    harvested_at = models.DateTimeField(null=True, blank=True, editable=False)
    harvest_operator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    lab_received_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    viable_cells_released = models.BigIntegerField(null=True, blank=True, editable=False)
    transplanted_at = models.DateTimeField(null=True, blank=True, editable=False)
    transplanted_on = models.DateField(
        null=True,
        blank=True,
        editable=False,
        help_text="The transplant's date in the site's calendar: follow-ups count from it.",
    )
    cells_administered = models.BigIntegerField(null=True, blank=True, editable=False)
    discharged_at = models.DateTimeField(null=True, blank=True, editable=False)
    product_allocated_at = models.DateTimeField(null=True, blank=True, editable=False)
    first_infused_at = models.DateTimeField(null=True, blank=True, editable=False)
    first_infused_on = models.DateField(
        null=True,
        blank=True,
        editable=False,
        help_text="The first infusion's date in the site's calendar: the baseline is before it.",
    )
    last_infused_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set in the database too: bulk loads (the bench's) insert courses in SQL.
    doses_given = models.PositiveSmallIntegerField(default=0, db_default=0, editable=False)
    follow_up_anchor_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="The infusion the follow-ups count from (the first or the last: the protocol).",
    )
    follow_up_anchor_on = models.DateField(null=True, blank=True, editable=False)
    notes = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-referred_at"]
        permissions = [
            *(
                (f"{name}_course", f"Can {label.lower()} a treatment course")
                for name, label in TRANSITIONS
            ),
            ("confirm_administration", "Can confirm a product's administration at the bedside"),
        ]
        indexes = [
            models.Index(fields=["site", "state"]),
            # The admin lists courses newest first, ten thousand or a million of them.
            models.Index(fields=["-referred_at", "-id"], name="course_referred_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["patient"],
                condition=~models.Q(state__in=[state.value for state in FINAL_STATES]),
                name="one_open_course_per_patient",
                violation_error_message="This patient already has an open treatment course.",
            ),
        ]

    def __str__(self) -> str:
        return f"Course #{self.pk} of {self.patient}"

    @property
    def takes_appointments(self) -> bool:
        """Whether visits may be booked and patients reminded: not on hold, not closed."""
        return self.state in HOLDABLE_STATES

    @property
    def days_in_state(self) -> int:
        return (timezone.now() - self.state_changed_at).days

    @property
    def pathway(self) -> TherapyPathway:
        """The pathway of the therapy the course's protocol gives."""
        return self.protocol.pathway

    @property
    def follow_ups_from(self) -> dt.datetime | None:
        """The moment the follow-up weeks count from: the transplant, or the infusion the
        protocol names."""
        return self.transplanted_at or self.follow_up_anchor_at

    @property
    def follow_ups_from_on(self) -> dt.date | None:
        return self.transplanted_on or self.follow_up_anchor_on

    @property
    def treated_on(self) -> dt.date | None:
        """The day the patient was first given the product: baselines are taken before it,
        follow-up measurements after."""
        return self.transplanted_on or self.first_infused_on

    @property
    def expansion_day(self) -> int | None:
        """The day of expansion of the latest sample, today or on the day it was released."""
        if not self.lab_received_at:
            return None
        return expansion_day(
            received_at=self.lab_received_at,
            at=self.released_at or timezone.now(),
            zone=self.site.time_zone,
        )

    # Transitions: they set fields and nothing else.

    @transition(
        field=state,
        source=CourseState.REFERRED,
        target=CourseState.EVALUATION,
        permission=_transition_permission("start_evaluation"),
        custom=_custom("start_evaluation", form=False),
    )
    def start_evaluation(self, *, at):
        self.evaluation_started_at = at

    @transition(
        field=state,
        source=CourseState.EVALUATION,
        target=CourseState.ELIGIBLE,
        permission=_transition_permission("approve"),
        custom=_custom("approve"),
    )
    def approve(self, *, low_fev1_justification=""):
        self.low_fev1_justification = low_fev1_justification

    @transition(
        field=state,
        source=CourseState.EVALUATION,
        target=CourseState.INELIGIBLE,
        permission=_transition_permission("decline"),
        custom=_custom("decline"),
    )
    def decline(self):
        pass

    @transition(
        field=state,
        source=CourseState.ELIGIBLE,
        target=CourseState.HARVEST_SCHEDULED,
        permission=_transition_permission("schedule_harvest"),
        conditions=_P63,
        custom=_custom("schedule_harvest"),
    )
    def schedule_harvest(self):
        pass

    @transition(
        field=state,
        source=CourseState.HARVEST_SCHEDULED,
        target=CourseState.HARVESTED,
        permission=_transition_permission("record_harvest"),
        conditions=_P63,
        custom=_custom("record_harvest"),
    )
    def record_harvest(self, *, performed_at, operator, coi_id):
        self.harvested_at = performed_at
        self.harvest_operator = operator
        self.coi_id = self.coi_id or coi_id

    @transition(
        field=state,
        source=CourseState.HARVESTED,
        target=CourseState.EXPANDING,
        permission=_transition_permission("receive_at_lab"),
        conditions=_P63,
        custom=_custom("receive_at_lab"),
    )
    def receive_at_lab(self, *, received_at):
        self.lab_received_at = received_at

    @transition(
        field=state,
        source=CourseState.EXPANDING,
        target=CourseState.ELIGIBLE,
        permission=_transition_permission("reject_sample"),
        conditions=_P63,
        custom=_custom("reject_sample"),
    )
    def reject_sample(self):
        self.lab_received_at = None

    @transition(
        field=state,
        source=CourseState.EXPANDING,
        target=CourseState.ELIGIBLE,
        permission=_transition_permission("fail_qc"),
        conditions=_P63,
        custom=_custom("fail_qc"),
    )
    def fail_qc(self):
        self.lab_received_at = None

    @transition(
        field=state,
        source=CourseState.EXPANDING,
        target=CourseState.RELEASED,
        permission=_transition_permission("release"),
        conditions=_P63,
        custom=_custom("release"),
    )
    def release(self, *, released_at, viable_cells):
        self.released_at = released_at
        self.viable_cells_released = viable_cells

    @transition(
        field=state,
        source=CourseState.RELEASED,
        target=CourseState.TRANSPLANT_SCHEDULED,
        permission=_transition_permission("schedule_transplant"),
        conditions=_P63,
        custom=_custom("schedule_transplant"),
    )
    def schedule_transplant(self):
        pass

    @transition(
        field=state,
        source=CourseState.TRANSPLANT_SCHEDULED,
        target=CourseState.FOLLOW_UP,
        permission=_transition_permission("record_transplant"),
        conditions=_P63,
        custom=_custom("record_transplant"),
    )
    def record_transplant(self, *, performed_at, performed_on, cells_administered, discharged_at):
        self.transplanted_at, self.transplanted_on = performed_at, performed_on
        self.cells_administered = cells_administered
        self.discharged_at = discharged_at

    @transition(
        field=state,
        source=CourseState.ELIGIBLE,
        target=CourseState.PRODUCT_ALLOCATED,
        permission=_transition_permission("allocate_product"),
        conditions=_MSC,
        custom=_custom("allocate_product"),
    )
    def allocate_product(self, *, at, coi_id):
        self.product_allocated_at = self.product_allocated_at or at
        self.coi_id = self.coi_id or coi_id

    @transition(
        field=state,
        source=[CourseState.PRODUCT_ALLOCATED, CourseState.INFUSED],
        target=CourseState.INFUSION_SCHEDULED,
        permission=_transition_permission("schedule_infusion"),
        conditions=_MSC,
        custom=_custom("schedule_infusion"),
    )
    def schedule_infusion(self):
        pass

    @transition(
        field=state,
        source=CourseState.INFUSION_SCHEDULED,
        target=RETURN_VALUE(CourseState.INFUSED, CourseState.FOLLOW_UP),
        permission=_transition_permission("record_infusion"),
        conditions=_MSC,
        custom=_custom("record_infusion"),
    )
    def record_infusion(self, *, infused_at, infused_on, last_dose, anchor):
        """A dose given: with doses left the course waits for the next; the last opens the
        follow-up, counted from the infusion `anchor` names ("first" or "last")."""
        if self.first_infused_at is None:
            self.first_infused_at, self.first_infused_on = infused_at, infused_on
        self.last_infused_at = infused_at
        self.doses_given += 1
        if not last_dose:
            return CourseState.INFUSED
        if anchor == FollowUpAnchor.LAST:
            self.follow_up_anchor_at, self.follow_up_anchor_on = infused_at, infused_on
        else:
            self.follow_up_anchor_at = self.first_infused_at
            self.follow_up_anchor_on = self.first_infused_on
        return CourseState.FOLLOW_UP

    @transition(
        field=state,
        source=CourseState.FOLLOW_UP,
        target=CourseState.COMPLETED,
        permission=_transition_permission("complete"),
        custom=_custom("complete", form=False),
    )
    def complete(self):
        pass

    @transition(
        field=state,
        source=HOLDABLE_STATES,
        target=CourseState.ON_HOLD,
        permission=_transition_permission("hold"),
        custom=_custom("hold"),
    )
    def hold(self):
        self.state_before_hold = self.state

    @transition(
        field=state,
        source=CourseState.ON_HOLD,
        target=RETURN_VALUE(*HOLDABLE_STATES),
        permission=_transition_permission("resume"),
        custom=_custom("resume", form=False),
    )
    def resume(self):
        state_left, self.state_before_hold = self.state_before_hold, ""
        return state_left

    @transition(
        field=state,
        source=WITHDRAWABLE_STATES,
        target=CourseState.WITHDRAWN,
        permission=_transition_permission("withdraw"),
        custom=_custom("withdraw"),
    )
    def withdraw(self):
        self.state_before_hold = ""


class OutcomeMeasure(models.TextChoices):
    DLCO_RELATIVE = "dlco_relative_pct", "DLCO, relative change (%)"
    DLCO_POINTS = "dlco_pct_points", "DLCO % predicted, change (points)"
    FEV1_ML = "fev1_ml", "FEV1, change (mL)"
    WALK_M = "walk_m", "Six-minute walk, change (m)"
    CAT = "cat", "CAT score, change"
    MMRC = "mmrc", "mMRC grade, change"
    CRP = "crp_mg_l", "C-reactive protein, change (mg/L)"


class ReferenceFigure(models.Model):
    """A published result to show beside the programme's own outcomes."""

    measure = models.CharField(max_length=30, choices=OutcomeMeasure.choices)
    weeks_after_transplant = models.PositiveSmallIntegerField(null=True, blank=True)
    value = models.DecimalField(max_digits=7, decimal_places=1)
    kind = models.CharField(
        max_length=20,
        choices=[
            ("reported", "Reported change"),
            ("mcid", "Minimal clinically important difference"),
        ],
        default="reported",
    )
    source = models.CharField(max_length=300)
    therapy = models.CharField(
        max_length=10,
        choices=Therapy.choices,
        blank=True,
        help_text="The therapy it is a result of; empty for one that stands beside every "
        "therapy's outcomes (a minimal clinically important difference).",
    )

    class Meta:
        ordering = ["measure", "weeks_after_transplant"]

    def __str__(self) -> str:
        return f"{self.get_measure_display()}: {self.value} ({self.source})"

    @property
    def description(self) -> str:
        """Its kind and its source, once each: the MCID's source is its kind's own name."""
        kind = self.get_kind_display()
        return kind if self.source.strip() in ("", kind) else f"{kind}; {self.source}"


class BatchStatus(models.TextChoices):
    EXPANDING = "expanding", "Expanding"
    REJECTED = "rejected", "Sample rejected"
    FAILED_QC = "failed_qc", "Failed QC"
    RELEASED = "released", "Released"
    DISCARDED = "discarded", "Discarded (course withdrawn)"


class Batch(MeasuredModel):
    """One harvested sample's manufacturing run, from lab receipt to release or rejection."""

    measured_fields = {
        "temperature_c": "temperature_c",
        "transit_hours": "transit_hours",
        "identity_p63_pct": "identity_p63_pct",
        "purity_pct": "purity_pct",
        "viability_pct": "viability_pct",
        "viable_cells": "viable_cells",
    }

    course = models.ForeignKey(TreatmentCourse, on_delete=models.PROTECT, related_name="batches")
    coi_id = models.CharField("chain-of-identity id", max_length=30, editable=False)
    collected_at = models.DateTimeField(editable=False)
    received_at = models.DateTimeField(editable=False)
    temperature_c = models.DecimalField(
        "temperature on arrival (°C)", max_digits=4, decimal_places=1, editable=False
    )
    transit_hours = models.DecimalField(max_digits=5, decimal_places=1, editable=False)
    status = models.CharField(
        max_length=20, choices=BatchStatus.choices, default=BatchStatus.EXPANDING
    )
    identity_p63_pct = models.DecimalField(
        "identity: P63+ cells (%)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    purity_pct = models.DecimalField(
        "purity (%)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    sterility_negative = models.BooleanField("sterility negative", null=True, blank=True)
    viability_pct = models.DecimalField(
        "viability (%)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    viable_cells = models.BigIntegerField("total viable cells", null=True, blank=True)
    extra_qc_results = models.JSONField(
        "extra QC results",
        default=dict,
        blank=True,
        editable=False,
        help_text="Each extra test of the protocol by name: true or false, or a number as text.",
    )
    qc_recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    qc_recorded_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    release_meaning = models.CharField(max_length=200, blank=True, editable=False)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "batches"
        indexes = [
            models.Index(fields=["status", "received_at"]),
            models.Index(fields=["-received_at", "-id"], name="batch_received_idx"),
            models.Index(fields=["coi_id"], name="batch_coi_idx"),
        ]

    def __str__(self) -> str:
        received_on = timezone.localdate(self.received_at, self.course.site.time_zone)
        return f"Batch {self.coi_id} received {date_words(received_on)}"

    @property
    def expansion_day(self) -> int:
        """The day of expansion, today or on the day the batch was released."""
        return expansion_day(
            received_at=self.received_at,
            at=self.released_at or timezone.now(),
            zone=self.course.site.time_zone,
        )

    @property
    def qc_recorded(self) -> bool:
        return self.qc_recorded_at is not None


class CellCount(MeasuredModel):
    """An in-process count of a batch in culture: the growth forecast fits these."""

    measured_fields = {"total_cells": "total_cells", "viability_pct": "viability_pct"}

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="cell_counts")
    counted_at = models.DateTimeField()
    total_cells = models.BigIntegerField()
    viability_pct = models.DecimalField("viability (%)", max_digits=4, decimal_places=1)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["counted_at", "id"]

    def __str__(self) -> str:
        when = local_words(self.counted_at, self.batch.course.site.time_zone)
        return f"{self.total_cells / 1e6:.1f} × 10⁶ cells on {when}"

    @property
    def viable_cells(self) -> float:
        return self.total_cells * float(self.viability_pct) / 100


class CustodyKind(models.TextChoices):
    COLLECTED = "collected", "Collected (harvest)"
    SHIPPED = "shipped", "Shipped to the lab"
    RECEIVED_AT_LAB = "received_at_lab", "Received at the lab"
    REJECTED = "rejected", "Rejected (cold chain)"
    EXPANSION_STARTED = "expansion_started", "Expansion started"
    QC_RECORDED = "qc_recorded", "QC recorded"
    RELEASED = "released", "Released"
    SHIPPED_TO_SITE = "shipped_to_site", "Shipped to the site"
    RECEIVED_AT_SITE = "received_at_site", "Received at the site"
    ADMINISTERED = "administered", "Administered"
    CORRECTION = "correction", "Correction"
    DISCARDED = "discarded", "Discarded"
    ALLOCATED = "allocated", "Allocated to the patient"
    THAWED = "thawed", "Thawed"
    RETURNED_TO_STOCK = "returned_to_stock", "Returned to stock"


class AppendOnlyError(Exception):
    """Custody events and the transition log are never changed or deleted."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model._meta.verbose_name_plural} cannot be changed.")

    def delete(self):
        raise AppendOnlyError(f"{self.model._meta.verbose_name_plural} cannot be deleted.")


# The fields a row's hash does not cover: its id (the chain's order) and the hashes.
UNHASHED_FIELDS = ("id", "entry_hash", "previous_hash")
# Fields added after rows were first chained: a row covers them only when it has a value, so
# that every row written before they existed reads, and verifies, as it was written.
HASHED_WHEN_SET = ("unit_id",)


def entry_content(row) -> bytes:
    """A row's content as the hash chain reads it: every field but its id and hashes, in a
    canonical form that reads the same from memory and from the database (UTC times,
    decimals to their places, JSON with sorted keys). Works on historical models too."""
    content = {}
    for field in row._meta.concrete_fields:
        if field.name in UNHASHED_FIELDS:
            continue
        value = getattr(row, field.attname)
        if value is None and field.attname in HASHED_WHEN_SET:
            continue
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(field, models.DecimalField) and value is not None:
            value = str(Decimal(str(value)).quantize(Decimal(10) ** -field.decimal_places))
        content[field.attname] = value
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(*, previous_hash: str, content: bytes) -> str:
    """SHA-256 of the previous row's hash and this row's content: change any row, or drop
    one, and every hash after it no longer follows."""
    return hashlib.sha256(previous_hash.encode() + b"\n" + content).hexdigest()


class AppendOnly(models.Model):
    """A model whose rows are written once: changing or deleting one raises AppendOnlyError.

    Each row carries the SHA-256 of its content and of the previous row's hash, a chain that
    `manage.py audit_verify` walks: a change made behind the application's back (by the
    database's owner with the triggers off, say) breaks it at that row.
    """

    entry_hash = models.CharField(max_length=64, editable=False, default="")
    previous_hash = models.CharField(max_length=64, editable=False, default="")

    objects = AppendOnlyQuerySet.as_manager()
    # Read by common/db_roles.py: the application's database role may not change these rows.
    append_only = True

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"A {self._meta.verbose_name} cannot be changed; add a new one.")
        with transaction.atomic(using=kwargs.get("using")):
            # One writer at a time, until commit, so that no chain forks. One lock for every
            # chained table: a step that writes to both the log and the custody chain, in
            # either order, cannot deadlock with another.
            connection = transaction.get_connection(kwargs.get("using"))
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('tracker.audit_chain'))")
            last = type(self).objects.order_by("-id").values_list("entry_hash", flat=True)
            self.previous_hash = last.first() or ""
            self.entry_hash = entry_hash(
                previous_hash=self.previous_hash, content=entry_content(self)
            )
            super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"A {self._meta.verbose_name} cannot be deleted.")


class CustodyEvent(AppendOnly):
    """One step in the chain of custody of a course's sample and product. Append-only."""

    course = models.ForeignKey(
        TreatmentCourse, on_delete=models.PROTECT, related_name="custody_events"
    )
    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, null=True, blank=True, related_name="custody_events"
    )
    unit = models.ForeignKey(
        "ProductUnit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="custody_events",
        help_text="The cell-bank unit this step is of (an infusion's product).",
    )
    coi_id = models.CharField("chain-of-identity id", max_length=30)
    kind = models.CharField(max_length=30, choices=CustodyKind.choices)
    at = models.DateTimeField(default=timezone.now)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    location = models.CharField(max_length=200)
    temperature_c = models.DecimalField(max_digits=4, decimal_places=1, null=True, blank=True)
    note = models.TextField(blank=True)
    corrects = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="corrections",
        help_text="The event this one corrects.",
    )
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["course", "at", "id"]
        indexes = [models.Index(fields=["coi_id"], name="custody_coi_idx")]

    def __str__(self) -> str:
        when = local_words(self.at, self.course.site.time_zone)
        return f"{self.get_kind_display()} {self.coi_id} at {when}"


class TransitionLog(AppendOnly):
    """What happened to a course: who, when, from, to, why. Written once, never edited."""

    course = models.ForeignKey(
        TreatmentCourse, on_delete=models.CASCADE, related_name="transition_logs"
    )
    transition = models.CharField(max_length=40, choices=TRANSITIONS)
    source_state = models.CharField(max_length=30, choices=CourseState.choices)
    target_state = models.CharField(max_length=30, choices=CourseState.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(default=timezone.now)
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="What the transition recorded.")

    class Meta:
        ordering = ["course", "at", "id"]
        indexes = [
            models.Index(fields=["at"]),
            models.Index(fields=["course", "at", "id"], name="transition_log_course_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_transition_display()}: {self.source_state} → {self.target_state}"


class TissueSource(models.TextChoices):
    UMBILICAL_CORD = "umbilical_cord", "Umbilical cord"
    BONE_MARROW = "bone_marrow", "Bone marrow"
    ADIPOSE = "adipose", "Adipose tissue"


class LotStatus(models.TextChoices):
    QUARANTINE = "quarantine", "In quarantine (awaiting QC and release)"
    RELEASED = "released", "Released"
    REJECTED = "rejected", "Rejected"


# Each marker of the ISCT minimal identity, its field and whether it must be present.
POSITIVE_MARKERS = (("cd73_pct", "CD73"), ("cd90_pct", "CD90"), ("cd105_pct", "CD105"))
NEGATIVE_MARKERS = (
    ("cd45_pct", "CD45"),
    ("cd34_pct", "CD34"),
    ("cd14_cd11b_pct", "CD14 or CD11b"),
    ("cd79a_cd19_pct", "CD79a or CD19"),
    ("hla_dr_pct", "HLA-DR"),
)


def _marker(label: str) -> models.DecimalField:
    return models.DecimalField(
        f"{label} (% of cells)", max_digits=4, decimal_places=1, null=True, blank=True
    )


class CellBankLot(MeasuredModel):
    """A lot of frozen MSC units from a cell bank, received into a site's stock with its
    certificate of analysis, and released for use by a second lab person's signature once its
    QC meets the protocol's specification (`pathway/lots.py`)."""

    measured_fields = {
        "units_received": "units_in_lot",
        "cells_per_unit": "cells_per_unit",
        "passage": "passage",
        "storage_temperature_c": "storage_temperature_c",
        "viability_pct": "viability_pct",
        "endotoxin_eu_ml": "endotoxin_eu_ml",
        **{name: "positive_marker_pct" for name, _ in POSITIVE_MARKERS},
        **{name: "negative_marker_pct" for name, _ in NEGATIVE_MARKERS},
    }

    lot_number = models.CharField(max_length=40, unique=True)
    protocol = models.ForeignKey(
        Protocol,
        on_delete=models.PROTECT,
        related_name="lots",
        help_text="Released against this protocol's specification, and given on it.",
    )
    site = models.ForeignKey(
        "patients.Site",
        on_delete=models.PROTECT,
        related_name="cell_bank_lots",
        help_text="Whose stock it is: its units are allocated to this site's courses.",
    )
    bank = models.CharField("cell bank", max_length=200)
    tissue_source = models.CharField(max_length=20, choices=TissueSource.choices)
    donor_code = models.CharField(max_length=60, help_text="The bank's code for the donor.")
    donor_eligibility_accepted_by = models.CharField(
        max_length=200,
        help_text="Who accepted the donor as eligible (screened and tested), by name.",
    )
    donor_eligibility_accepted_on = models.DateField()
    passage = models.PositiveSmallIntegerField()
    units_received = models.PositiveIntegerField()
    cells_per_unit = models.BigIntegerField()
    expires_on = models.DateField()
    storage_temperature_c = models.DecimalField(
        "storage temperature (°C)", max_digits=4, decimal_places=1
    )
    received_at = models.DateTimeField()
    received_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=20, choices=LotStatus.choices, default=LotStatus.QUARANTINE
    )
    viability_pct = models.DecimalField(
        "viability after thaw (%)", max_digits=4, decimal_places=1, null=True, blank=True
    )
    sterility_negative = models.BooleanField("sterility negative", null=True, blank=True)
    mycoplasma_negative = models.BooleanField("mycoplasma negative", null=True, blank=True)
    endotoxin_eu_ml = models.DecimalField(
        "endotoxin (EU/mL)", max_digits=6, decimal_places=2, null=True, blank=True
    )
    cd73_pct = _marker("CD73")
    cd90_pct = _marker("CD90")
    cd105_pct = _marker("CD105")
    cd45_pct = _marker("CD45")
    cd34_pct = _marker("CD34")
    cd14_cd11b_pct = _marker("CD14 or CD11b")
    cd79a_cd19_pct = _marker("CD79a or CD19")
    hla_dr_pct = _marker("HLA-DR")
    qc_recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    qc_recorded_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    release_meaning = models.CharField(max_length=200, blank=True, editable=False)
    history = HistoricalRecords()

    class Meta:
        ordering = ["expires_on", "lot_number"]
        verbose_name = "cell-bank lot"
        permissions = [("release_lot", "Can release a cell-bank lot (the second signature)")]
        indexes = [models.Index(fields=["site", "status", "expires_on"], name="lot_stock_idx")]

    def __str__(self) -> str:
        return f"Lot {self.lot_number} (expires {date_words(self.expires_on)})"

    @property
    def qc_recorded(self) -> bool:
        return self.qc_recorded_at is not None


class UnitStatus(models.TextChoices):
    FREE = "free", "Free"
    ALLOCATED = "allocated", "Allocated"
    SHIPPED = "shipped", "Shipped to the site"
    RECEIVED = "received", "Received at the site"
    THAWED = "thawed", "Thawed at the site"
    INFUSED = "infused", "Infused"
    DISCARDED = "discarded", "Discarded"


# A unit in one of these is tied to a patient and not yet given.
UNIT_HELD = (UnitStatus.ALLOCATED, UnitStatus.SHIPPED, UnitStatus.RECEIVED, UnitStatus.THAWED)


class ProductUnit(models.Model):
    """One frozen unit of a lot (a bag or vial), with the bank's id on its label (an ISBT 128
    donation id where the bank issues one). Allocated to a course's dose, it follows that
    course's chain of custody until it is infused or discarded."""

    lot = models.ForeignKey(CellBankLot, on_delete=models.PROTECT, related_name="units")
    unit_id = models.CharField(
        "unit id", max_length=40, unique=True, help_text="As on its label, e.g. an ISBT 128 id."
    )
    status = models.CharField(max_length=20, choices=UnitStatus.choices, default=UnitStatus.FREE)
    course = models.ForeignKey(
        TreatmentCourse, on_delete=models.PROTECT, null=True, blank=True, related_name="units"
    )
    infusion = models.ForeignKey(
        "Infusion", on_delete=models.PROTECT, null=True, blank=True, related_name="units"
    )
    allocated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["lot", "unit_id"]
        indexes = [models.Index(fields=["lot", "status"], name="unit_lot_status_idx")]

    def __str__(self) -> str:
        return f"Unit {self.unit_id}"


class Infusion(MeasuredModel):
    """One dose of an MSC course: its units (allocated together, from one lot), its booking,
    and, once given, the bedside record: thaw and start, the cells given, the second person
    and the vital signs."""

    measured_fields = {"cells_given": "cells_administered", "weight_kg": "weight_kg"}

    course = models.ForeignKey(TreatmentCourse, on_delete=models.PROTECT, related_name="infusions")
    dose_number = models.PositiveSmallIntegerField()
    visit = models.ForeignKey(
        "scheduling.Visit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="infusions",
        help_text="Its booking in the infusion chair.",
    )
    allocated_at = models.DateTimeField()
    allocated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    thawed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    cells_given = models.BigIntegerField(null=True, blank=True)
    weight_kg = models.DecimalField(
        "weight used for the dose (kg)", max_digits=5, decimal_places=1, null=True, blank=True
    )
    weighed_on = models.DateField(null=True, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    second_person = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["course", "dose_number"]
        constraints = [
            models.UniqueConstraint(fields=["course", "dose_number"], name="infusion_one_per_dose")
        ]

    def __str__(self) -> str:
        return f"Infusion {self.dose_number} of {self.course}"

    @property
    def given(self) -> bool:
        return self.started_at is not None


class VitalsTimepoint(models.TextChoices):
    BEFORE = "before", "Before the infusion"
    DURING = "during", "During the infusion"
    AFTER = "after", "An hour after"


class VitalSigns(MeasuredModel):
    """The patient's vital signs at one moment of an infusion."""

    measured_fields = {
        "heart_rate_bpm": "heart_rate_bpm",
        "systolic_mmhg": "systolic_mmhg",
        "diastolic_mmhg": "diastolic_mmhg",
        "spo2_pct": "spo2_pct",
        "temperature_c": "body_temperature_c",
        "respiratory_rate": "respiratory_rate",
    }

    infusion = models.ForeignKey(Infusion, on_delete=models.CASCADE, related_name="vital_signs")
    timepoint = models.CharField(max_length=10, choices=VitalsTimepoint.choices)
    heart_rate_bpm = models.PositiveSmallIntegerField("heart rate (/min)")
    systolic_mmhg = models.PositiveSmallIntegerField("systolic (mmHg)")
    diastolic_mmhg = models.PositiveSmallIntegerField("diastolic (mmHg)")
    spo2_pct = models.PositiveSmallIntegerField("SpO2 (%)")
    temperature_c = models.DecimalField("temperature (°C)", max_digits=3, decimal_places=1)
    respiratory_rate = models.PositiveSmallIntegerField("respiratory rate (/min)")

    class Meta:
        ordering = ["infusion", "id"]
        verbose_name_plural = "vital signs"
        constraints = [
            models.UniqueConstraint(
                fields=["infusion", "timepoint"], name="vital_signs_one_per_timepoint"
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_timepoint_display()}: HR {self.heart_rate_bpm}, BP "
            f"{self.systolic_mmhg}/{self.diastolic_mmhg}, SpO2 {self.spo2_pct} %"
        )
