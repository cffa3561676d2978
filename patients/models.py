from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from phonenumber_field.modelfields import PhoneNumberField
from phonenumber_field.phonenumber import PhoneNumber
from simple_history.models import HistoricalRecords
from timezone_field import TimeZoneField

from common.zones import date_words
from patients.clinical import fev1_fvc_ratio, gold_stage
from patients.measures import MeasuredModel


class Site(models.Model):
    """A clinic that runs the pathway. Its zone decides local dates and visit windows."""

    name = models.CharField(max_length=200, unique=True)
    code = models.CharField(
        max_length=5,
        unique=True,
        validators=[RegexValidator(r"^[A-Z]{2,5}$", "Use 2 to 5 capital letters, e.g. LDN.")],
        help_text="Short code printed in chain-of-identity ids, e.g. LDN.",
    )
    time_zone = TimeZoneField(default="Europe/London")
    coordinators = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="coordinated_sites",
        help_text="They receive the site's alerts and weekly report, and work on its patients.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="member_sites",
        help_text="Clinicians and lab staff who work on this site's patients.",
    )

    patient_facing_name = models.CharField(
        max_length=100,
        blank=True,
        help_text=(
            'How messages to patients name the clinic, e.g. "Harbour Clinic": nothing that '
            'discloses a diagnosis on a shared phone. Empty: "your clinic".'
        ),
    )
    patient_phone = PhoneNumberField(
        blank=True, help_text="The number patients call about an appointment."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


class ClinicHours(models.Model):
    """When a site sees patients on one weekday, in the site's time zone. A site with no
    hours at all is not restricted."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="clinic_hours")
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens_at = models.TimeField()
    closes_at = models.TimeField()

    class Meta:
        ordering = ["site", "weekday", "opens_at"]
        verbose_name_plural = "clinic hours"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(opens_at__lt=models.F("closes_at")),
                name="clinic_hours_open_before_close",
                violation_error_message="The clinic must open before it closes.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens_at:%H:%M}–{self.closes_at:%H:%M}"


class SmokingStatus(models.TextChoices):
    NEVER = "never", "Never smoked"
    FORMER = "former", "Former smoker"
    CURRENT = "current", "Current smoker"


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Not recorded"


class Patient(models.Model):
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="patients")
    mrn = models.CharField("MRN", max_length=40, help_text="Medical record number at this site.")
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True, help_text="Stored as E.164, e.g. +447911123456.")
    consent_email = models.BooleanField("consents to email reminders", default=False)
    consent_sms = models.BooleanField("consents to SMS reminders", default=False)
    whatsapp = PhoneNumberField(
        "WhatsApp number",
        blank=True,
        help_text="The number the patient uses WhatsApp on, as E.164; often their phone's.",
    )
    consent_whatsapp = models.BooleanField(
        "consents to WhatsApp reminders",
        default=False,
        help_text="Apart from SMS: a STOP on one channel leaves the other as it is.",
    )
    # WhatsApp lets the clinic write freely only within 24 hours of the patient's own last
    # message; after that, only an approved template (delivery/whatsapp.py).
    whatsapp_last_inbound_at = models.DateTimeField(
        "last wrote on WhatsApp",
        null=True,
        blank=True,
        editable=False,
        help_text="When the patient last wrote to the clinic on WhatsApp.",
    )
    preferred_language = models.CharField(max_length=10, choices=settings.LANGUAGES, default="en")
    time_zone = TimeZoneField(
        null=True, blank=True, help_text="Leave empty to use the site's time zone."
    )
    smoking_status = models.CharField(
        max_length=10, choices=SmokingStatus.choices, default=SmokingStatus.NEVER
    )
    smoking_quit_date = models.DateField(null=True, blank=True)
    coordinator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_patients",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # When they last wrote on WhatsApp is the provider's news, not a change to their record.
    history = HistoricalRecords(excluded_fields=["whatsapp_last_inbound_at"])

    class Meta:
        ordering = ["last_name", "first_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "mrn"],
                name="patient_mrn_unique_per_site",
                violation_error_message="A patient with this MRN already exists at this site.",
            ),
        ]
        indexes = [
            models.Index(fields=["last_name", "first_name"]),
            models.Index(fields=["mrn"], name="patient_mrn_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.last_name}, {self.first_name} ({self.mrn})"

    def consents_to(self, channel: str) -> bool:
        """Consents to be written to on this channel ("email", "sms" or "whatsapp"), and has
        an address for it: the one rule every message to a patient passes, when written and
        when sent."""
        if channel == "email":
            return self.consent_email and bool(self.email)
        if channel == "whatsapp":
            return self.consent_whatsapp and _number_on_file(self.whatsapp)
        return channel == "sms" and self.consent_sms and self.has_phone

    @property
    def has_phone(self) -> bool:
        """Whether a number is on file, without validating it again: `bool()` of a number
        formats it, which validates it (the largest cost of a text's consent check)."""
        return _number_on_file(self.phone)

    @property
    def zone(self):
        """The patient's own time zone: theirs if set, else their site's."""
        return self.time_zone or self.site.time_zone

    def clean(self) -> None:
        errors = {}
        today = (
            timezone.localdate(timezone=self.site.time_zone)
            if self.site_id
            else timezone.localdate()
        )
        if self.date_of_birth and self.date_of_birth > today:
            errors["date_of_birth"] = "Date of birth cannot be in the future."
        if self.smoking_status == SmokingStatus.FORMER and not self.smoking_quit_date:
            errors["smoking_quit_date"] = "Enter the date a former smoker quit."
        if self.smoking_status != SmokingStatus.FORMER and self.smoking_quit_date:
            errors["smoking_quit_date"] = "A quit date only applies to former smokers."
        if self.smoking_quit_date and self.smoking_quit_date > today:
            errors["smoking_quit_date"] = "The quit date cannot be in the future."
        if self.consent_email and not self.email:
            errors["email"] = "Consent to email reminders needs an email address."
        if self.consent_sms and not self.phone:
            errors["phone"] = "Consent to SMS reminders needs a phone number."
        if self.consent_whatsapp and not self.whatsapp:
            errors["whatsapp"] = "Consent to WhatsApp reminders needs a WhatsApp number."
        if errors:
            raise ValidationError(errors)


def _number_on_file(number) -> bool:
    """Whether a number is on file, without validating it again (see `has_phone`)."""
    if isinstance(number, PhoneNumber):
        return number.national_number is not None or bool(number.raw_input)
    return bool(number)


@deconstructible
class ConsentChange(models.Model):
    """A patient's consent to a channel given or withdrawn: when, and how we learnt of it."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consent_changes")
    channel = models.CharField(max_length=10)  # "email", "sms" or "whatsapp"
    consents = models.BooleanField()
    at = models.DateTimeField(default=timezone.now)
    source = models.CharField(
        max_length=100, help_text='Where it came from, e.g. "SMS reply STOP".'
    )

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        verb = "gave" if self.consents else "withdrew"
        return f"{self.patient} {verb} {self.channel} consent ({self.source})"


class Range:
    """An allowed range for a measurement, as migration 0002 wrote it on the fields. The
    ranges now live in `patients.measures`, which every record's validation reads."""

    def __init__(self, label: str, low: str, high: str, unit: str = ""):
        self.label, self.low, self.high, self.unit = label, str(low), str(high), unit

    def __call__(self, value) -> None:
        if value is not None and not Decimal(self.low) <= Decimal(str(value)) <= Decimal(self.high):
            unit = f" {self.unit}" if self.unit and self.unit != "%" else self.unit
            raise ValidationError(
                f"{self.label} must be between {self.low}{unit} and {self.high}{unit}; "
                f"{value}{unit} was entered.",
                code="out_of_range",
            )

    def __eq__(self, other) -> bool:
        return isinstance(other, Range) and vars(self) == vars(other)

    def validators(self) -> list:
        return [self]


class ClinicalRecord(MeasuredModel):
    """A dated fact about a patient, with who entered it.

    Records without a visit are the evaluation's (the course's baseline); records entered
    against a follow-up visit are that visit's measurements.
    """

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="%(class)ss")
    visit = models.ForeignKey(
        "scheduling.Visit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="%(class)ss",
        help_text="The follow-up visit this was measured at; empty for evaluation records.",
    )
    taken_on = models.DateField("date taken")
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    entered_at = models.DateTimeField(default=timezone.now, editable=False)
    history = HistoricalRecords(inherit=True)

    class Meta(MeasuredModel.Meta):
        abstract = True
        ordering = ["-taken_on", "-id"]

    def clean(self) -> None:
        errors = {}
        # "Today" is the site's today: a record taken this morning in Shanghai is not "future".
        zone = self.patient.site.time_zone if self.patient_id else None
        if self.taken_on and self.taken_on > timezone.localdate(timezone=zone):
            errors["taken_on"] = (
                f"The date taken ({date_words(self.taken_on)}) cannot be in the future."
            )
        if self.visit_id and self.taken_on:
            course = self.visit.course
            if self.patient_id and course.patient_id != self.patient_id:
                errors["visit"] = "This visit belongs to another patient."
            elif course.treated_on and self.taken_on < course.treated_on:
                errors["taken_on"] = (
                    f"A follow-up measurement cannot be dated {date_words(self.taken_on)}, "
                    f"before {course.pathway.treatment_words} on "
                    f"{date_words(course.treated_on)}."
                )
        errors |= self.clean_values()
        if errors:
            raise ValidationError(errors)

    def clean_values(self) -> dict:
        """Errors between fields of this record; each names the field and what is allowed."""
        return {}


class BodyMeasurement(ClinicalRecord):
    measured_fields = {"weight_kg": "weight_kg", "height_cm": "height_cm"}

    weight_kg = models.DecimalField(max_digits=5, decimal_places=1)
    height_cm = models.DecimalField(max_digits=4, decimal_places=1, null=True, blank=True)

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"{self.weight_kg} kg on {date_words(self.taken_on)}"


class LungFunctionTest(ClinicalRecord):
    """Post-bronchodilator spirometry, with diffusion and volumes where measured."""

    measured_fields = {
        "fev1_l": "fev1_l",
        "fev1_pct_predicted": "fev1_pct_predicted",
        "fvc_l": "fvc_l",
        "fvc_pct_predicted": "fvc_pct_predicted",
        "dlco": "dlco",
        "dlco_pct_predicted": "dlco_pct_predicted",
        "tlc_pct_predicted": "tlc_pct_predicted",
    }
    # FEV1/FVC's word of caution is filed under FVC, and follows either volume.
    looked_at_together = {"fvc_l": ("fev1_l",)}

    fev1_l = models.DecimalField("FEV1 (L)", max_digits=4, decimal_places=2)
    fev1_pct_predicted = models.DecimalField(
        "FEV1 % predicted",
        max_digits=4,
        decimal_places=1,
    )
    fvc_l = models.DecimalField("FVC (L)", max_digits=4, decimal_places=2)
    fvc_pct_predicted = models.DecimalField(
        "FVC % predicted",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
    )
    dlco = models.DecimalField(
        "DLCO (mL/min/mmHg)",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
    )
    dlco_pct_predicted = models.DecimalField(
        "DLCO % predicted",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
    )
    tlc_pct_predicted = models.DecimalField(
        "TLC % predicted",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
    )

    class Meta(ClinicalRecord.Meta):
        verbose_name = "lung function test"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"FEV1 {self.fev1_l} L ({self.fev1_pct_predicted} %) on {date_words(self.taken_on)}"

    @property
    def fev1_fvc(self):
        return fev1_fvc_ratio(fev1_l=self.fev1_l, fvc_l=self.fvc_l)

    @property
    def gold_stage(self) -> int | None:
        return gold_stage(fev1_fvc=self.fev1_fvc, fev1_pct_predicted=self.fev1_pct_predicted)

    def clean_values(self) -> dict:
        # Only compare values that passed their own checks (and so are Decimals).
        volumes = (self.fev1_l, self.fvc_l)
        if all(isinstance(v, Decimal) for v in volumes) and self.fev1_l > self.fvc_l:
            return {"fev1_l": f"FEV1 ({self.fev1_l} L) cannot exceed FVC ({self.fvc_l} L)."}
        return {}

    def unusual_values(self, expected: dict | None = None) -> dict[str, str]:
        found = super().unusual_values(expected)
        volumes = (self.fev1_l, self.fvc_l)
        if all(isinstance(v, Decimal) and v > 0 for v in volumes) and self.fev1_fvc < Decimal(
            "0.25"
        ):
            found.setdefault(
                "fvc_l", f"FEV1/FVC of {self.fev1_fvc:.2f} is unusually low; check both volumes."
            )
        return found


class SixMinuteWalkTest(ClinicalRecord):
    measured_fields = {"distance_m": "walk_m"}

    distance_m = models.PositiveIntegerField("distance (m)")

    class Meta(ClinicalRecord.Meta):
        verbose_name = "six-minute walk test"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"{self.distance_m} m on {date_words(self.taken_on)}"


class SymptomScore(ClinicalRecord):
    measured_fields = {"mmrc": "mmrc", "cat": "cat"}

    mmrc = models.PositiveSmallIntegerField("mMRC dyspnoea grade")
    cat = models.PositiveSmallIntegerField("CAT score")

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"mMRC {self.mmrc}, CAT {self.cat} on {date_words(self.taken_on)}"


class ChestCT(ClinicalRecord):
    measured_fields = {"low_attenuation_pct": "low_attenuation_pct"}

    emphysema_present = models.BooleanField()
    low_attenuation_pct = models.DecimalField(
        "low-attenuation area %",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
    )
    findings = models.TextField(blank=True)

    class Meta(ClinicalRecord.Meta):
        verbose_name = "chest CT"
        verbose_name_plural = "chest CTs"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"CT on {date_words(self.taken_on)}"


class CReactiveProtein(ClinicalRecord):
    """C-reactive protein in serum: what an anti-inflammatory therapy is followed by."""

    measured_fields = {"crp_mg_l": "crp_mg_l"}

    crp_mg_l = models.DecimalField("CRP (mg/L)", max_digits=5, decimal_places=1)

    class Meta(ClinicalRecord.Meta):
        verbose_name = "C-reactive protein"
        verbose_name_plural = "C-reactive protein results"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"CRP {self.crp_mg_l} mg/L on {date_words(self.taken_on)}"


class A1ATScreening(models.TextChoices):
    NOT_INDICATED = "not_indicated", "Not indicated"
    PENDING = "pending", "Indicated, result pending"
    NORMAL = "normal", "Indicated, normal"
    DEFICIENT = "deficient", "Indicated, deficient"


class ClinicalAssessment(ClinicalRecord):
    """The evaluation's clinical judgements the eligibility rules read."""

    fit_for_bronchoscopy = models.BooleanField(help_text="Cardiac assessment passed.")
    active_respiratory_infection = models.BooleanField()
    a1at_screening = models.CharField(
        "alpha-1 antitrypsin screening", max_length=20, choices=A1ATScreening.choices
    )
    dyspnoea_despite_optimised_therapy = models.BooleanField(
        "dyspnoea persists despite optimised inhalers and rehabilitation"
    )
    fit_for_infusion = models.BooleanField(
        "fit for an intravenous infusion",
        null=True,
        blank=True,
        help_text="For an infusion protocol: venous access, fluid load and allergies assessed.",
    )
    notes = models.TextField(blank=True)

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"Assessment on {date_words(self.taken_on)}"


class Medication(models.Model):
    """A COPD medication the patient takes, from when to when."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="medications")
    name = models.CharField(max_length=200, help_text="e.g. tiotropium / olodaterol")
    dose = models.CharField(max_length=100, blank=True, help_text="e.g. 2.5/2.5 µg, 2 puffs daily")
    started_on = models.DateField(null=True, blank=True)
    stopped_on = models.DateField(null=True, blank=True)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["patient", "-started_on"]

    def __str__(self) -> str:
        return f"{self.name} {self.dose}".strip()

    def clean(self) -> None:
        if self.started_on and self.stopped_on and self.stopped_on < self.started_on:
            raise ValidationError({"stopped_on": "A medication cannot stop before it started."})


class Relatedness(models.TextChoices):
    YES = "yes", "Related"
    NO = "no", "Not related"
    UNKNOWN = "unknown", "Unknown"


class AdverseEventOutcome(models.TextChoices):
    RECOVERED = "recovered", "Recovered"
    RECOVERING = "recovering", "Recovering"
    NOT_RECOVERED = "not_recovered", "Not recovered"
    SEQUELAE = "sequelae", "Recovered with sequelae"
    FATAL = "fatal", "Fatal"
    UNKNOWN = "unknown", "Unknown"


class AdverseEvent(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="adverse_events")
    course = models.ForeignKey(
        "pathway.TreatmentCourse", on_delete=models.PROTECT, related_name="adverse_events"
    )
    visit = models.ForeignKey(
        "scheduling.Visit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="adverse_events",
    )
    onset_on = models.DateField("onset")
    grade = models.PositiveSmallIntegerField(
        "CTCAE grade", choices=[(g, f"Grade {g}") for g in range(1, 6)]
    )
    serious = models.BooleanField()
    related_to_procedure = models.CharField(
        max_length=10, choices=Relatedness.choices, default=Relatedness.UNKNOWN
    )
    related_to_product = models.CharField(
        max_length=10, choices=Relatedness.choices, default=Relatedness.UNKNOWN
    )
    outcome = models.CharField(
        max_length=20, choices=AdverseEventOutcome.choices, default=AdverseEventOutcome.UNKNOWN
    )
    description = models.TextField()
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    entered_at = models.DateTimeField(default=timezone.now, editable=False)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-onset_on", "-id"]
        indexes = [models.Index(fields=["course", "grade"])]

    def __str__(self) -> str:
        serious = " serious" if self.serious else ""
        return f"Grade {self.grade}{serious} adverse event on {date_words(self.onset_on)}"

    def clean(self) -> None:
        errors = {}
        zone = self.patient.site.time_zone if self.patient_id else None
        if self.onset_on and self.onset_on > timezone.localdate(timezone=zone):
            errors["onset_on"] = f"The onset ({date_words(self.onset_on)}) cannot be in the future."
        if self.course_id and self.patient_id and self.course.patient_id != self.patient_id:
            errors["course"] = "This course belongs to another patient."
        if self.grade == 5 and self.outcome != AdverseEventOutcome.FATAL:
            errors["outcome"] = "A grade 5 event is fatal by definition: set the outcome to fatal."
        if errors:
            raise ValidationError(errors)


class Instrument(models.Model):
    """A questionnaire as data (patients/questionnaires.py): its items and answers in each
    language, how it is scored, the score that needs a clinician, its MCID."""

    code = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    definition = models.JSONField()
    licence = models.CharField(
        max_length=200,
        blank=True,
        help_text="For a licensed instrument: whose licence the site uses it under.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from patients.questionnaires import definition_errors

        errors = definition_errors(self.definition)
        if errors:
            raise ValidationError({"definition": errors})


class QuestionnaireResponse(ClinicalRecord):
    """A patient's answers to an instrument, and their score: a clinical record like any
    other, dated in the site's calendar."""

    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="responses")
    answers = models.JSONField()
    score = models.DecimalField(max_digits=6, decimal_places=1)
    needs_clinician = models.BooleanField(default=False)

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "instrument", "-taken_on"])]

    def __str__(self) -> str:
        return f"{self.instrument} {self.score.normalize()} on {date_words(self.taken_on)}"
