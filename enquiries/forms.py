"""The public enquiry form: what a person may send, every field bounded, every error in their
language beside the field it belongs to.

Three guards against scripts, none of them a third-party service: a field people never see
(`website`, the honeypot), a signed timestamp of when the form was shown (`started`: a form
sent sooner than ENQUIRY_MIN_FILL_SECONDS after is refused), and the view's rate limit per
address. The submission key (`key`, random per form shown) makes a retried post one enquiry.
"""

import datetime as dt
import secrets
import time
from decimal import Decimal

from django import forms
from django.conf import settings
from django.core import signing
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from phonenumber_field.formfields import PhoneNumberField

from enquiries.models import EnquiryKind
from enquiries.selectors import known_zone
from patients.measures import measure

SIGNING_SALT = "enquiries.form-started"
KEY_PATTERN = r"^[A-Za-z0-9_-]{20,64}$"

# The choices as the public reads them (the models' own labels are the staff's, in English).
KIND_CHOICES = [
    (EnquiryKind.QUESTION, _("I have a question")),
    (EnquiryKind.APPLICATION, _("I would like to apply for treatment")),
]
YES_NO_UNSURE = [("yes", _("Yes")), ("no", _("No")), ("unsure", _("Not sure"))]
SMOKING_CHOICES = [
    ("never", _("I have never smoked")),
    ("former", _("I used to smoke and have stopped")),
    ("current", _("I smoke now")),
]
# The pre-screening questions an application must answer ("Not sure" is an answer).
APPLICATION_REQUIRES = (
    "copd_diagnosed",
    "emphysema_on_ct",
    "smoking",
    "home_oxygen",
    "bronchoscopy_ok",
    "chest_infection_now",
)
DAMAGED = _("This form arrived damaged: check your answers and send it again.")
PHONE_INVALID = _("Enter a phone number with its country code, e.g. +44 7911 123456.")


def new_key() -> str:
    """A fresh submission key, for one showing of the form."""
    return secrets.token_urlsafe(24)


def started_stamp() -> str:
    """When the form was shown, signed so that nobody can claim an earlier time."""
    return signing.dumps(time.time(), salt=SIGNING_SALT)


def _radios(choices, label, required=False):
    return forms.ChoiceField(
        label=label, choices=choices, required=required, widget=forms.RadioSelect
    )


class EnquiryForm(forms.Form):
    kind = _radios(KIND_CHOICES, _("What would you like to do?"), required=True)
    first_name = forms.CharField(label=_("First name"), max_length=100)
    last_name = forms.CharField(label=_("Last name"), max_length=100, required=False)
    email = forms.EmailField(label=_("Email"), max_length=254, required=False)
    consent_email = forms.BooleanField(label=_("You may contact me by email"), required=False)
    phone = PhoneNumberField(
        label=_("Mobile phone"),
        required=False,
        max_length=32,
        error_messages={"invalid": PHONE_INVALID},
    )
    consent_sms = forms.BooleanField(label=_("You may send me text messages"), required=False)
    whatsapp = PhoneNumberField(
        label=_("WhatsApp number"),
        required=False,
        max_length=32,
        error_messages={"invalid": PHONE_INVALID},
    )
    consent_whatsapp = forms.BooleanField(label=_("You may contact me on WhatsApp"), required=False)
    site = forms.ChoiceField(label=_("Clinic"), required=False)
    message = forms.CharField(
        label=_("Your question or message"),
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
    )
    copd_diagnosed = _radios(YES_NO_UNSURE, _("Has a doctor told you that you have COPD?"))
    emphysema_on_ct = _radios(YES_NO_UNSURE, _("Has a CT scan of your chest shown emphysema?"))
    smoking = _radios(SMOKING_CHOICES, _("Do you smoke?"))
    smoking_quit_on = forms.DateField(
        label=_("If you have stopped: when did you stop?"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    # The one possible range of the measure (patients/measures.py), refused in the page's
    # language by Django's own messages.
    fev1_pct_predicted = forms.DecimalField(
        label=_("Your last FEV1 as a percentage of predicted, if you know it"),
        required=False,
        min_value=Decimal(measure("fev1_pct_predicted").possible[0]),
        max_value=Decimal(measure("fev1_pct_predicted").possible[1]),
        max_digits=4,
        decimal_places=measure("fev1_pct_predicted").places,
    )
    home_oxygen = _radios(YES_NO_UNSURE, _("Do you use oxygen at home?"))
    bronchoscopy_ok = _radios(
        YES_NO_UNSURE,
        _("Has a doctor said you could have a bronchoscopy (a camera test of the airways)?"),
    )
    chest_infection_now = _radios(YES_NO_UNSURE, _("Do you have a chest infection now?"))
    # Hidden: filled by the page (the browser's zone), or by the server (key, started).
    time_zone = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)
    key = forms.RegexField(
        regex=KEY_PATTERN,
        widget=forms.HiddenInput,
        error_messages={"required": DAMAGED, "invalid": DAMAGED},
    )
    # Checked in `clean` (its words: expired, or too quick), not here.
    started = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
    # The honeypot: hidden from people (and from screen readers); a script fills it in.
    website = forms.CharField(
        label=_("Leave this empty"),
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"tabindex": "-1", "autocomplete": "off"}),
    )

    def __init__(self, *args, sites, **kwargs):
        super().__init__(*args, **kwargs)
        self.sites = {site.code: site for site in sites}
        self.fields["site"].choices = [("", _("Propose the nearest clinic for me"))] + [
            (site.code, site.patient_facing_name or site.name) for site in sites
        ]

    def clean_time_zone(self):
        # Written by the page's script, not the person: an unknown zone is no zone.
        return known_zone(self.cleaned_data.get("time_zone", ""))

    def clean_smoking_quit_on(self):
        day = self.cleaned_data.get("smoking_quit_on")
        if day is not None and not dt.date(1900, 1, 1) <= day <= timezone.localdate():
            raise forms.ValidationError(_("Enter a date in the past."))
        return day

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("website"):
            raise forms.ValidationError(_("This form could not be sent."), code="honeypot")
        self._check_time_taken()
        self._check_contact(cleaned)
        if cleaned.get("kind") == EnquiryKind.QUESTION and not cleaned.get("message"):
            self.add_error("message", _("Write your question."))
        if cleaned.get("kind") == EnquiryKind.APPLICATION:
            for name in APPLICATION_REQUIRES:
                if name not in self.errors and not cleaned.get(name):
                    self.add_error(name, _("Choose an answer (“Not sure” is one)."))
        return cleaned

    def _check_time_taken(self):
        """Refused when the form's timestamp is not ours, is older than the maximum age, or
        is younger than a person takes to fill the form."""
        try:
            shown_at = signing.loads(self.data.get("started", ""), salt=SIGNING_SALT)
            taken = time.time() - float(shown_at)
        except (signing.BadSignature, TypeError, ValueError):
            taken = None
        if taken is None or taken > settings.ENQUIRY_FORM_MAX_AGE_HOURS * 3600:
            raise forms.ValidationError(
                _("This form has expired: check your answers and send it again."),
                code="expired",
            )
        if taken < settings.ENQUIRY_MIN_FILL_SECONDS:
            raise forms.ValidationError(
                _("That was sent very quickly: check your answers and send it again."),
                code="too_fast",
            )

    def _check_contact(self, cleaned):
        """At least one way to reach the person, given and consented to; a consent ticked
        without its address is an error beside the address."""
        reachable = False
        for address, consent in (
            ("email", "consent_email"),
            ("phone", "consent_sms"),
            ("whatsapp", "consent_whatsapp"),
        ):
            if address in self.errors:
                continue
            if cleaned.get(consent) and not cleaned.get(address):
                self.add_error(address, _("Give the address or number you ticked we may use."))
            elif cleaned.get(consent):
                reachable = True
        if not reachable and not any(f in self.errors for f in ("email", "phone", "whatsapp")):
            raise forms.ValidationError(
                _(
                    "Give at least one way to reach you (email, mobile or WhatsApp) and tick "
                    "that we may use it."
                ),
                code="unreachable",
            )

    def chosen_site(self):
        """The site the person chose, or None (then the page proposes one)."""
        return self.sites.get(self.cleaned_data.get("site") or "")

    def enquiry_fields(self) -> dict:
        """The answers, as the Enquiry stores them."""
        data = self.cleaned_data
        names = [
            "kind",
            "first_name",
            "last_name",
            "email",
            "consent_email",
            "phone",
            "consent_sms",
            "whatsapp",
            "consent_whatsapp",
            "message",
            "copd_diagnosed",
            "emphysema_on_ct",
            "smoking",
            "smoking_quit_on",
            "fev1_pct_predicted",
            "home_oxygen",
            "bronchoscopy_ok",
            "chest_infection_now",
        ]
        fields = {name: data.get(name) for name in names}
        for name in ("phone", "whatsapp"):
            fields[name] = fields[name] or ""
        for name in ("last_name", "email", "message", *APPLICATION_REQUIRES):
            fields[name] = fields[name] or ""
        fields["time_zone"] = data.get("time_zone") or None
        return fields
