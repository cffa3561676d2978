from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from phonenumber_field.modelfields import PhoneNumberField
from timezone_field import TimeZoneField

from patients.clinical import fev1_fvc_ratio, gold_stage


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
        settings.AUTH_USER_MODEL, blank=True, related_name="coordinated_sites"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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

    class Meta:
        ordering = ["last_name", "first_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "mrn"],
                name="patient_mrn_unique_per_site",
                violation_error_message="A patient with this MRN already exists at this site.",
            ),
        ]
        indexes = [models.Index(fields=["last_name", "first_name"])]

    def __str__(self) -> str:
        return f"{self.last_name}, {self.first_name} ({self.mrn})"

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
        if errors:
            raise ValidationError(errors)


class ClinicalRecord(models.Model):
    """A dated fact about a patient, with who entered it."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="%(class)ss")
    taken_on = models.DateField("date taken")
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    entered_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True
        ordering = ["-taken_on", "-id"]

    def clean(self) -> None:
        # "Today" is the site's today: a record taken this morning in Shanghai is not "future".
        zone = self.patient.site.time_zone if self.patient_id else None
        if self.taken_on and self.taken_on > timezone.localdate(timezone=zone):
            raise ValidationError({"taken_on": "The date taken cannot be in the future."})


def _range(low, high):
    return [MinValueValidator(low), MaxValueValidator(high)]


class BodyMeasurement(ClinicalRecord):
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, validators=_range(20, 350))
    height_cm = models.DecimalField(
        max_digits=4, decimal_places=1, null=True, blank=True, validators=_range(100, 250)
    )

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"{self.weight_kg} kg on {self.taken_on}"


class LungFunctionTest(ClinicalRecord):
    """Post-bronchodilator spirometry, with diffusion and volumes where measured."""

    fev1_l = models.DecimalField(
        "FEV1 (L)", max_digits=4, decimal_places=2, validators=_range(0.1, 8)
    )
    fev1_pct_predicted = models.DecimalField(
        "FEV1 % predicted", max_digits=4, decimal_places=1, validators=_range(1, 200)
    )
    fvc_l = models.DecimalField(
        "FVC (L)", max_digits=4, decimal_places=2, validators=_range(0.1, 10)
    )
    dlco_pct_predicted = models.DecimalField(
        "DLCO % predicted",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        validators=_range(1, 200),
    )
    tlc_pct_predicted = models.DecimalField(
        "TLC % predicted",
        max_digits=4,
        decimal_places=1,
        null=True,
        blank=True,
        validators=_range(1, 200),
    )

    class Meta(ClinicalRecord.Meta):
        verbose_name = "lung function test"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"FEV1 {self.fev1_l} L ({self.fev1_pct_predicted} %) on {self.taken_on}"

    @property
    def fev1_fvc(self):
        return fev1_fvc_ratio(fev1_l=self.fev1_l, fvc_l=self.fvc_l)

    @property
    def gold_stage(self) -> int | None:
        return gold_stage(fev1_fvc=self.fev1_fvc, fev1_pct_predicted=self.fev1_pct_predicted)

    def clean(self) -> None:
        super().clean()
        if self.fev1_l and self.fvc_l and self.fev1_l > self.fvc_l:
            raise ValidationError({"fev1_l": "FEV1 cannot exceed FVC."})


class ChestCT(ClinicalRecord):
    emphysema_present = models.BooleanField()
    findings = models.TextField(blank=True)

    class Meta(ClinicalRecord.Meta):
        verbose_name = "chest CT"
        verbose_name_plural = "chest CTs"
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"CT on {self.taken_on}"


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
    notes = models.TextField(blank=True)

    class Meta(ClinicalRecord.Meta):
        indexes = [models.Index(fields=["patient", "-taken_on"])]

    def __str__(self) -> str:
        return f"Assessment on {self.taken_on}"
