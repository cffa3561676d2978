"""The data each transition needs, as django-fsm-2's admin asks for it.

Date-times are read in the course's site time zone (the admin activates it).
"""

from decimal import Decimal

from django import forms
from django.contrib.admin import widgets
from django.contrib.auth import get_user_model

from pathway.coi import coi_id_is_valid, coi_id_normalise
from pathway.services import RELEASE_MEANING


def _note(label: str = "Note", *, required: bool = False) -> forms.CharField:
    return forms.CharField(label=label, required=required, widget=forms.Textarea(attrs={"rows": 3}))


def _when(label: str, *, required: bool = True) -> forms.SplitDateTimeField:
    return forms.SplitDateTimeField(
        label=label,
        required=required,
        widget=widgets.AdminSplitDateTime,
        help_text="Local time at the course's site.",
    )


def _decimal(label: str, low, high, places: int = 1, **kwargs) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=Decimal(low),
        max_value=Decimal(high),
        decimal_places=places,
        **kwargs,
    )


class ApproveForm(forms.Form):
    low_fev1_justification = _note("Specialist justification (FEV1 below range only)")
    note = _note()


class ReasonForm(forms.Form):
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


class AppointmentForm(forms.Form):
    scheduled_at = _when("Date and time")
    place = forms.CharField(max_length=200, help_text="Where the patient should go.")
    note = _note()


class ScheduleHarvestForm(AppointmentForm):
    pass


class ScheduleTransplantForm(AppointmentForm):
    pass


class RecordHarvestForm(forms.Form):
    performed_at = _when("Performed at")
    operator = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(groups__name="clinician", is_active=True),
        help_text="The bronchoscopist who took the brushing.",
    )
    note = _note()


class ReceiveAtLabForm(forms.Form):
    received_at = _when("Received at")
    temperature_c = _decimal("Temperature on arrival (°C)", -80, 60)
    transit_hours = _decimal("Hours in transit", 0, 1000)
    note = _note()


class ReleaseForm(forms.Form):
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


class RecordTransplantForm(forms.Form):
    performed_at = _when("Performed at")
    bedside_coi_id = forms.CharField(
        label="Chain-of-identity id on the product",
        max_length=30,
        help_text="Read it from the product label at the bedside; do not copy it from this page.",
    )
    cells_administered = forms.IntegerField(label="Cells administered", min_value=1)
    weight_kg = _decimal("Weight used for the dose (kg)", 20, 350)
    weighed_on = forms.DateField(label="Weighed on", widget=widgets.AdminDateWidget)
    second_person = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=True, is_staff=True),
        label="Confirmed by",
        help_text="The second person who checked the label and the dose.",
    )
    second_person_password = forms.CharField(
        label="Their password", strip=False, widget=forms.PasswordInput
    )
    discharged_at = _when("Discharged at", required=False)
    note = _note()

    def clean_bedside_coi_id(self) -> str:
        value = self.cleaned_data["bedside_coi_id"]
        if not coi_id_is_valid(value):
            raise forms.ValidationError(
                "This is not a valid chain-of-identity id: check for a mistyped character."
            )
        return coi_id_normalise(value)
