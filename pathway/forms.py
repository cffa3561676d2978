"""The data each transition needs, as django-fsm-2's admin asks for it.

Date-times are read in the course's site time zone (the admin activates it). Each form is
given the course and the user (`CourseStepForm`), so that what it offers is what the service
will accept.
"""

from django import forms
from django.contrib.admin import widgets
from django.contrib.auth import get_user_model
from django.utils import timezone

from common.forms import SafeModelChoiceField, SecondLook, second_look_field
from common.zones import date_words, local_words, zone_words
from pathway.chains import chain_words, course_chains, course_chair, course_suite
from pathway.coi import coi_id_is_valid, coi_id_normalise
from pathway.models import CustodyKind, VitalSigns, VitalsTimepoint
from pathway.services import RELEASE_MEANING, units_thaw_recorded
from pathway.signatures import bedside_confirmers
from patients.measures import measure, unusual_values
from scheduling.chains import CHAIN_SEARCH_DAYS, infusion_chains_earliest
from scheduling.models import ReservationPurpose, VisitKind
from scheduling.rules import booking_notice


def _note(label: str = "Note", *, required: bool = False) -> forms.CharField:
    return forms.CharField(label=label, required=required, widget=forms.Textarea(attrs={"rows": 3}))


def _when(label: str, *, required: bool = True) -> forms.SplitDateTimeField:
    return forms.SplitDateTimeField(
        label=label,
        required=required,
        widget=widgets.AdminSplitDateTime,
        help_text="Local time at the course's site.",
    )


class MeasureField(forms.DecimalField):
    """A number typed as a measure of `patients.measures`: refused beside the field, in the
    measure's words, when it is impossible or finer than it is measured. A measure counted in
    whole units (cells) comes back as an int."""

    def __init__(self, key: str, *, label: str, **kwargs):
        self.measure = measure(key)
        super().__init__(label=label, **kwargs)

    def validate(self, value):
        super().validate(value)
        refusal = self.measure.refusal(value)
        if refusal:
            raise forms.ValidationError(refusal, code="impossible")

    def clean(self, value):
        number = super().clean(value)
        return int(number) if number is not None and self.measure.places == 0 else number


def _deviation_reason(what: str) -> forms.CharField:
    return _note(f"Reason, if {what} (a protocol deviation)")


def _scanned_coi_id(label: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=30,
        help_text="Scan it, or type it, from the label: do not copy it from this page.",
    )


def _valid_coi_id(value: str) -> str:
    if not coi_id_is_valid(value):
        raise forms.ValidationError(
            "This is not a valid chain-of-identity id: check for a mistyped character."
        )
    return coi_id_normalise(value)


class CourseStepForm(SecondLook, forms.Form):
    """A transition's form, knowing the course and who is taking the step. The numbers it
    takes (`measured`: field name → measure) are saved only once an unusual one is typed
    again: the service is then told `values_checked`."""

    measured: dict[str, str] = {}

    def __init__(self, *args, course=None, user=None, **kwargs):
        self.course, self.user = course, user
        super().__init__(*args, **kwargs)
        if course is not None:  # every time on the form names its zone
            for field in self.fields.values():
                if isinstance(field, forms.SplitDateTimeField):
                    field.help_text = (
                        f"Local time at {course.site.name} ({zone_words(course.site.time_zone)})."
                    )
        if self.measured:
            self.fields["second_look"] = second_look_field()

    def clean(self):
        cleaned = super().clean()
        if self.measured:
            unusual = unusual_values(
                cleaned,
                keys=self.measured,
                expected=self.course.protocol.expected_ranges if self.course else None,
            )
            cleaned.pop("second_look", None)
            cleaned["values_checked"] = self.take_second_look(unusual)
        return cleaned


class ApproveForm(CourseStepForm):
    low_fev1_justification = _note("Specialist justification (FEV1 below range only)")
    note = _note()


class ReasonForm(CourseStepForm):
    reason = _note("Reason", required=True)


class DeclineForm(ReasonForm):
    pass


class RejectSampleForm(ReasonForm):
    pass


class FailQcForm(ReasonForm):
    pass


class HoldForm(ReasonForm):
    pass


class WithdrawForm(ReasonForm):
    pass


class AppointmentForm(CourseStepForm):
    scheduled_at = _when("Date and time")
    place = forms.CharField(max_length=200, help_text="Where the patient should go.")
    deviation_reason = _deviation_reason("outside the site's clinic hours")
    note = _note()


class ScheduleHarvestForm(AppointmentForm):
    """Where the site keeps a calendar for its suite, the coordinator picks one of the
    earliest chains whose every part is free; otherwise types a date and time."""

    # A CharField, so that a chain taken since the page was drawn gets its own message.
    chain = forms.CharField(
        label="Chain",
        required=False,
        widget=forms.RadioSelect,
        help_text=(
            "Harvest, the lab's expansion days to the last release day, and a provisional "
            "transplant slot in the release window: all free now, reserved together."
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.suite = course_suite(self.course) if self.course else None
        if self.suite is None:
            del self.fields["chain"]
            return
        self.chains = {chain.key: chain for chain in course_chains(self.course)}
        self.fields["chain"].required = True
        self.fields["chain"].widget.choices = [
            (key, chain_words(chain, zone=self.suite.time_zone))
            for key, chain in self.chains.items()
        ]
        if not self.chains:
            self.fields["chain"].help_text = (
                f"{self.suite} has no free chain in the next {CHAIN_SEARCH_DAYS // 7} weeks: "
                "add sessions or lift a closure in the resource's calendar."
            )
        del self.fields["scheduled_at"]
        self.fields["place"].initial = str(self.suite)
        self.order_fields(["chain", "place", "deviation_reason", "note"])

    def clean_chain(self):
        key = self.cleaned_data.get("chain")
        if self.suite is None:
            return None
        chain = self.chains.get(key)
        if chain is None:  # taken since the page was drawn: the choices are fresh now
            raise forms.ValidationError("That chain is no longer free: choose another.")
        return chain

    def clean(self):
        cleaned = super().clean()
        chain = cleaned.pop("chain", None)
        if chain is not None:
            cleaned["scheduled_at"] = chain.harvest.starts_at
            cleaned["transplant_at"] = chain.transplant.starts_at
        return cleaned


class ScheduleTransplantForm(AppointmentForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        held = (
            self.course
            and self.course.reservations.filter(
                purpose=ReservationPurpose.TRANSPLANT, released_at__isnull=True, visit=None
            )
            .select_related("resource")
            .first()
        )
        if held:
            when = timezone.localtime(held.starts_at, held.resource.time_zone)
            self.fields["scheduled_at"].initial = when
            self.fields["place"].initial = str(held.resource)
            self.fields["scheduled_at"].help_text = (
                f"The slot held for this course is {local_words(when)}; another must "
                f"be a free slot of {held.resource}."
            )


class RecordHarvestForm(CourseStepForm):
    performed_at = _when("Performed at")
    operator = SafeModelChoiceField(
        queryset=get_user_model().objects.filter(groups__name="clinician", is_active=True),
        help_text="The bronchoscopist who took the brushing.",
    )
    note = _note()


class ReceiveAtLabForm(CourseStepForm):
    measured = {"temperature_c": "temperature_c", "transit_hours": "transit_hours"}

    received_at = _when("Received at")
    scanned_coi_id = _scanned_coi_id("Chain-of-identity id on the sample")
    temperature_c = MeasureField("temperature_c", label="Temperature on arrival (°C)")
    transit_hours = MeasureField("transit_hours", label="Hours in transit")
    note = _note()

    def clean_scanned_coi_id(self) -> str:
        return _valid_coi_id(self.cleaned_data["scanned_coi_id"])


class ReleaseForm(CourseStepForm):
    """The release signature: the signer's own password, and what the signature means."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput,
        help_text="Signing the release: you must not be the person who entered the QC results.",
    )
    meaning = forms.CharField(
        label="Meaning of the signature",
        initial=RELEASE_MEANING,
        max_length=200,
        widget=forms.TextInput(attrs={"size": 90}),
    )
    note = _note()


class RecordTransplantForm(CourseStepForm):
    measured = {"cells_administered": "cells_administered", "weight_kg": "weight_kg"}

    performed_at = _when("Performed at")
    bedside_coi_id = _scanned_coi_id("Chain-of-identity id on the product")
    cells_administered = MeasureField(
        "cells_administered",
        label="Viable cells administered (cells)",
        help_text="The count, e.g. 140000000 for 140 × 10⁶.",
    )
    weight_kg = MeasureField("weight_kg", label="Weight used for the dose (kg)")
    weighed_on = forms.DateField(label="Weighed on", widget=widgets.AdminDateWidget)
    second_person = SafeModelChoiceField(
        queryset=get_user_model().objects.none(),
        label="Confirmed by",
        help_text="The second person who checked the label and the dose: a clinician of this "
        "site allowed to confirm administrations.",
    )
    second_person_password = forms.CharField(
        label="Their password", strip=False, widget=forms.PasswordInput
    )
    discharged_at = _when("Discharged at", required=False)
    early_reason = _note("Reason, if done before its booked day (a protocol deviation)")
    note = _note()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.course is not None:
            self.fields["second_person"].queryset = bedside_confirmers(
                course=self.course, recorder=self.user
            )

    def clean_bedside_coi_id(self) -> str:
        return _valid_coi_id(self.cleaned_data["bedside_coi_id"])


class ProductCustodyForm(CourseStepForm):
    """The product leaving the lab for the site, or arriving there: the label scanned, when
    (now, unless told otherwise), where, and the temperature it travelled at."""

    measured = {"temperature_c": "temperature_c"}

    scanned_coi_id = _scanned_coi_id("Chain-of-identity id on the product's label")
    at = _when("When")
    location = forms.CharField(max_length=200, label="Where")
    temperature_c = MeasureField(
        "temperature_c",
        label="Temperature of the shipper (°C)",
        required=False,
        help_text="As the shipper's logger reads it, in degrees Celsius.",
    )
    note = _note()

    def clean_scanned_coi_id(self) -> str:
        return _valid_coi_id(self.cleaned_data["scanned_coi_id"])


class AllocateProductForm(CourseStepForm):
    note = _note()


class ScheduleInfusionForm(AppointmentForm):
    """Where the site keeps a calendar for its infusion chairs, the coordinator picks one of
    the earliest chains whose every dose's slot is free (between doses, the slot held for the
    next dose first); otherwise types a date and time."""

    chain = forms.CharField(
        label="Infusions",
        required=False,
        widget=forms.RadioSelect,
        help_text="A chair slot for each dose still to come, the protocol's days apart: all free "
        "now, held together; the patient is told of the first.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chair = course_chair(self.course) if self.course else None
        if self.chair is None:
            del self.fields["chain"]
            return
        zone = self.chair.time_zone
        notice = booking_notice(protocol=self.course.protocol, kind=VisitKind.INFUSION)
        held = list(
            self.course.reservations.filter(
                purpose=ReservationPurpose.INFUSION,
                released_at__isnull=True,
                visit=None,
                starts_at__gt=timezone.now() + notice,
            ).order_by("starts_at")
        )
        self.choices = {}
        if held:
            self.choices[held[0].starts_at.isoformat()] = (
                held[0].starts_at,
                f"{local_words(held[0].starts_at, zone)} (held for this dose)",
            )
        for chain in infusion_chains_earliest(course=self.course, after=timezone.now() + notice):
            doses = len(chain.slots)
            words = local_words(chain.slots[0].starts_at, zone)
            if doses > 1:
                last_day = timezone.localdate(chain.slots[-1].starts_at, zone)
                words += f" and {doses - 1} more, to {date_words(last_day)}"
            self.choices.setdefault(chain.key, (chain.slots[0].starts_at, words))
        self.fields["chain"].required = True
        self.fields["chain"].widget.choices = [(k, w) for k, (_at, w) in self.choices.items()]
        if not self.choices:
            self.fields["chain"].help_text = (
                f"{self.chair} has no free chain of slots in the next {CHAIN_SEARCH_DAYS // 7} "
                "weeks: add sessions or lift a closure in the resource's calendar."
            )
        del self.fields["scheduled_at"]
        self.fields["place"].initial = str(self.chair)
        self.order_fields(["chain", "place", "deviation_reason", "note"])

    def clean_chain(self):
        key = self.cleaned_data.get("chain")
        if self.chair is None:
            return None
        chosen = self.choices.get(key)
        if chosen is None:
            raise forms.ValidationError("Those slots are no longer free: choose others.")
        return chosen[0]

    def clean(self):
        cleaned = super().clean()
        first = cleaned.pop("chain", None)
        if first is not None:
            cleaned["scheduled_at"] = first
        return cleaned


_VITALS_LABELS = {
    "heart_rate_bpm": "heart rate (/min)",
    "systolic_mmhg": "systolic (mmHg)",
    "diastolic_mmhg": "diastolic (mmHg)",
    "spo2_pct": "SpO2 (%)",
    "temperature_c": "temperature (°C)",
    "respiratory_rate": "respiratory rate (/min)",
}
_REACTION_GRADES = [("", "No reaction"), *((str(g), f"CTCAE grade {g}") for g in range(1, 6))]


def _vitals_fields() -> dict:
    fields = {}
    for timepoint in VitalsTimepoint:
        for name, label in _VITALS_LABELS.items():
            fields[f"{timepoint}_{name}"] = MeasureField(
                VitalSigns.measured_fields[name], label=f"{timepoint.label}: {label}"
            )
    return fields


class _InfusionRecordFields(CourseStepForm):
    """The bedside record of one dose: what was scanned, when it was thawed and started, the
    cells and the weight, the vital signs at three moments, any reaction, the second person."""

    measured = {
        "cells_given": "cells_administered",
        "weight_kg": "weight_kg",
        **{
            f"{timepoint}_{name}": VitalSigns.measured_fields[name]
            for timepoint in VitalsTimepoint
            for name in _VITALS_LABELS
        },
    }

    scanned_unit_ids = forms.CharField(
        label="Units' labels",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Scan each unit's label (one per line): they must be this dose's units.",
    )
    scanned_coi_id = _scanned_coi_id("The patient's chain-of-identity id (wristband)")
    thawed_at = _when("Thawed at")
    started_at = _when("Infusion started at")
    thaw_delay_reason = _note("Reason, if started later after thaw than the protocol allows")
    cells_given = MeasureField(
        "cells_administered",
        label="Cells given (cells)",
        help_text="The count, e.g. 70000000 for 70 × 10⁶.",
    )
    weight_kg = MeasureField("weight_kg", label="Weight used for the dose (kg)")
    weighed_on = forms.DateField(label="Weighed on", widget=widgets.AdminDateWidget)
    reaction_grade = forms.TypedChoiceField(
        label="Infusion reaction",
        choices=_REACTION_GRADES,
        coerce=int,
        empty_value=None,
        required=False,
    )
    reaction_serious = forms.BooleanField(label="The reaction is serious", required=False)
    reaction_description = _note("What the reaction was")
    second_person = SafeModelChoiceField(
        queryset=get_user_model().objects.none(),
        label="Confirmed by",
        help_text="The second person who checked the labels and the dose: a clinician of this "
        "site allowed to confirm administrations.",
    )
    second_person_password = forms.CharField(
        label="Their password", strip=False, widget=forms.PasswordInput
    )
    early_reason = _note("Reason, if given before its booked day (a protocol deviation)")
    note = _note()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.course is not None:
            self.fields["second_person"].queryset = bedside_confirmers(
                course=self.course, recorder=self.user
            )
            # Thawed ahead (the thaw step): the bedside gives that time, so it is typed in.
            thawed = units_thaw_recorded(units=self.course.units.all())
            if thawed is not None:
                zone = self.course.site.time_zone
                self.fields["thawed_at"].initial = timezone.localtime(thawed, zone)

    def clean_scanned_coi_id(self) -> str:
        return _valid_coi_id(self.cleaned_data["scanned_coi_id"])

    def clean_scanned_unit_ids(self) -> list[str]:
        ids = [line.strip() for line in self.cleaned_data["scanned_unit_ids"].splitlines()]
        return [unit_id for unit_id in ids if unit_id]

    def clean(self):
        cleaned = super().clean()
        cleaned["vital_signs"] = {
            timepoint: {name: cleaned.pop(f"{timepoint}_{name}", None) for name in _VITALS_LABELS}
            for timepoint in VitalsTimepoint
        }
        return cleaned


# The vital signs' eighteen fields come after the weight, in the order they are taken.
RecordInfusionForm = type(
    "RecordInfusionForm",
    (_InfusionRecordFields,),
    {
        **_vitals_fields(),
        "__doc__": _InfusionRecordFields.__doc__,
        "__module__": __name__,
        "field_order": [
            *list(_InfusionRecordFields.base_fields)[:8],
            *_vitals_fields(),
        ],
    },
)


class UnitCustodyForm(CourseStepForm):
    """A dose's units leaving the stock for the site, or arriving there: every label scanned,
    when, where, and the shipper's temperature."""

    measured = {"temperature_c": "storage_temperature_c"}

    scanned_unit_ids = forms.CharField(
        label="Units' labels",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Scan each unit's label, one per line: every unit of the dose, and only those.",
    )
    at = _when("When")
    location = forms.CharField(max_length=200, label="Where")
    temperature_c = MeasureField(
        "storage_temperature_c",
        label="Temperature of the dry shipper (°C)",
        required=False,
        help_text="As the shipper's logger reads it, in degrees Celsius.",
    )
    note = _note()

    def __init__(self, *args, kind=None, **kwargs):
        super().__init__(*args, **kwargs)
        if kind == CustodyKind.THAWED:  # out of the shipper by now: no shipper to read
            del self.fields["temperature_c"]

    def clean_scanned_unit_ids(self) -> list[str]:
        ids = [line.strip() for line in self.cleaned_data["scanned_unit_ids"].splitlines()]
        return [unit_id for unit_id in ids if unit_id]
