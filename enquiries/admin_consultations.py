"""The consultations' admin: booked from an enquiry (`add/?enquiry=<id>`), moved, and marked
done, missed or cancelled, every step through `enquiries.consultations`. Site-scoped; each time
in the site's zone, named; the booking form reads its times in the site's zone and says so, and
shows whom it books: the enquirer's own answers, as they gave them."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from common.admin_scoping import SiteScopedAdmin
from common.errors import Refused
from common.forms import errors_beside_fields
from common.zones import date_words, local_words, respond_in_zone, zone_words
from enquiries.consultations import (
    consultation_book,
    consultation_booking_refusals,
    consultation_cancel,
    consultation_mark_done,
    consultation_mark_missed,
    consultation_move,
    default_place,
    enquirer_zone,
)
from enquiries.models import Consultation, ConsultationMode, ConsultationStatus, Enquiry
from patients.access import scope_to_user_sites

_REASON_HELP = (
    "Needed only to book outside the site's clinic hours; kept with the consultation and its "
    "history."
)


class ConsultationForm(forms.Form):
    """Booking or moving a consultation: what the rules refuse is shown beside its field."""

    scheduled_at = forms.SplitDateTimeField(
        label="Date and time", widget=admin.widgets.AdminSplitDateTime
    )
    mode = forms.ChoiceField(
        label="How", choices=ConsultationMode.choices, widget=forms.RadioSelect
    )
    place = forms.CharField(
        max_length=200,
        required=False,
        help_text="In person: where. Empty: the site's clinic, as patients' messages name it.",
    )
    video_link = forms.CharField(
        label="Video link",
        max_length=500,
        required=False,
        help_text="By video: the https:// meeting link the person joins by.",
    )
    reason = forms.CharField(
        label="Reason to book outside the clinic's hours",
        max_length=1000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_REASON_HELP,
    )

    def __init__(self, *args, enquiry: Enquiry, by, consultation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.enquiry, self.by, self.consultation = enquiry, by, consultation
        site = enquiry.site
        self.fields[
            "scheduled_at"
        ].help_text = f"Local time at {site.name} ({zone_words(site.time_zone)})."
        person = enquirer_zone(enquiry)
        if person != site.time_zone:
            self.fields[
                "scheduled_at"
            ].help_text += (
                f" {enquiry.first_name} reads it in {zone_words(person)}: the reminders say so."
            )

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        mode, place = data["mode"], data["place"]
        if mode == ConsultationMode.IN_PERSON and not place.strip():
            place = default_place(site=self.enquiry.site)
        refused = consultation_booking_refusals(
            enquiry=self.enquiry,
            by=self.by,
            scheduled_at=data.get("scheduled_at"),
            mode=mode,
            place=place,
            video_link=data["video_link"],
            reason=data["reason"],
            consultation=self.consultation,
        )
        if refused:
            add_refusal(self, refused)
        return data


def add_refusal(form: forms.Form, refused: Refused) -> None:
    """A refusal's reasons on the form: each beside its field, the rest above."""
    errors_beside_fields(form, refused.by_field, refused.general)


def consultation_book_url(enquiry: Enquiry) -> str:
    """Where a coordinator books a consultation for this enquiry (the enquiry's page links
    here)."""
    return reverse("admin:enquiries_consultation_add") + f"?enquiry={enquiry.pk}"


def _yes_no(value: str, display: str) -> str:
    return display if value else "not answered"


def enquirer_summary(enquiry: Enquiry) -> list[tuple[str, str]]:
    """Whom a booking is for, as they told it (self-reported, never checked): what the
    coordinator reads before booking."""
    zone = enquirer_zone(enquiry)
    reach = []
    if enquiry.email:
        consent = "consents" if enquiry.consent_email else "no consent"
        reach.append(f"email {enquiry.email} ({consent})")
    if enquiry.phone:
        consent = "consents" if enquiry.consent_sms else "no consent"
        reach.append(f"SMS {enquiry.phone} ({consent})")
    fev1 = enquiry.fev1_pct_predicted
    rows = [
        ("Name", f"{enquiry.first_name} {enquiry.last_name}".strip()),
        ("Asked", f"{enquiry.get_kind_display()}, {local_words(enquiry.submitted_at, zone)}"),
        ("Site", enquiry.site.name),
        ("Language", enquiry.get_language_display()),
        ("Their time zone", zone_words(zone)),
        ("How to reach them", ", ".join(reach) or "no address given"),
        ("Status", enquiry.get_status_display()),
        ("COPD diagnosed", _yes_no(enquiry.copd_diagnosed, enquiry.get_copd_diagnosed_display())),
        (
            "Emphysema on a CT",
            _yes_no(enquiry.emphysema_on_ct, enquiry.get_emphysema_on_ct_display()),
        ),
        (
            "Smoking",
            _yes_no(enquiry.smoking, enquiry.get_smoking_display())
            + (
                f", stopped {date_words(enquiry.smoking_quit_on)}"
                if enquiry.smoking_quit_on
                else ""
            ),
        ),
        ("Last FEV1 (% predicted)", f"{fev1}" if fev1 is not None else "not known"),
        ("Oxygen at home", _yes_no(enquiry.home_oxygen, enquiry.get_home_oxygen_display())),
        (
            "Able to have a bronchoscopy",
            _yes_no(enquiry.bronchoscopy_ok, enquiry.get_bronchoscopy_ok_display()),
        ),
        (
            "A chest infection now",
            _yes_no(enquiry.chest_infection_now, enquiry.get_chest_infection_now_display()),
        ),
    ]
    if enquiry.message:
        rows.append(("Their message", enquiry.message))
    return rows


@admin.register(Consultation)
class ConsultationAdmin(SiteScopedAdmin, admin.ModelAdmin):
    list_display = ("enquiry", "scheduled_at", "mode", "where", "status", "booked_by")
    list_select_related = ("enquiry__site", "booked_by")
    list_filter = ("status", "mode", "enquiry__site")
    search_fields = ("^enquiry__last_name", "^enquiry__first_name")
    date_hierarchy = None
    actions = ["mark_done", "mark_missed", "cancel"]
    fields = (
        "enquiry",
        "enquirer",
        "scheduled_at",
        "mode",
        "place",
        "video_link",
        "status",
        "status_reason",
        "outside_hours_reason",
        "booked_by",
        "booked_at",
        "next_steps",
    )
    readonly_fields = fields

    @admin.display(description="where")
    def where(self, obj):
        return obj.video_link if obj.mode == ConsultationMode.VIDEO else obj.place

    @admin.display(description="whom it is for (self-reported)")
    def enquirer(self, obj):
        return format_html(
            "<dl>{}</dl>",
            format_html_join("", "<dt>{}</dt><dd>{}</dd>", enquirer_summary(obj.enquiry)),
        )

    @admin.display(description="next steps")
    def next_steps(self, obj):
        if obj.status != ConsultationStatus.BOOKED:
            return "–"
        return format_html(
            '<a class="button" href="{}">Move</a>',
            reverse("admin:enquiries_consultation_move", args=[obj.pk]),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A page to read: its changes are the steps (Move, and the list's actions)."""
        extra_context = (extra_context or {}) | {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        """Nothing is saved from the page itself: every change goes through a service."""

    def has_delete_permission(self, request, obj=None):
        return False  # cancelled, not deleted: the history keeps what was booked

    def get_urls(self):
        return [
            path(
                "<path:object_id>/move/",
                self.admin_site.admin_view(self.move_view),
                name="enquiries_consultation_move",
            ),
            *super().get_urls(),
        ]

    def _page(self, request, *, title, enquiry, form, consultation=None):
        context = self.admin_site.each_context(request) | {
            "title": title,
            "opts": self.model._meta,
            "enquiry": enquiry,
            "summary": enquirer_summary(enquiry),
            "form": form,
            "consultation": consultation,
        }
        return TemplateResponse(request, "enquiries/consultation_form.html", context)

    def add_view(self, request, form_url="", extra_context=None):
        """Booking from an enquiry: `?enquiry=<id>`, one of the user's sites'."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        ident = request.GET.get("enquiry", "")
        enquiries = scope_to_user_sites(
            Enquiry.objects.select_related("site"), request.user, "site"
        )
        enquiry = enquiries.filter(pk=int(ident)).first() if ident.isdecimal() else None
        if enquiry is None:
            self.message_user(
                request,
                "Book a consultation from its enquiry (the enquiry was not found at your sites).",
                messages.ERROR,
            )
            return redirect("admin:enquiries_consultation_changelist")
        return respond_in_zone(enquiry.site.time_zone, lambda: self._book(request, enquiry))

    def _book(self, request, enquiry):
        initial = {"mode": ConsultationMode.IN_PERSON, "place": default_place(site=enquiry.site)}
        data = request.POST if request.method == "POST" else None
        form = ConsultationForm(data, initial=initial, enquiry=enquiry, by=request.user)
        if data is not None and form.is_valid():
            try:
                booked = consultation_book(
                    enquiry=enquiry,
                    by=request.user,
                    scheduled_at=form.cleaned_data["scheduled_at"],
                    mode=form.cleaned_data["mode"],
                    place=form.cleaned_data["place"],
                    video_link=form.cleaned_data["video_link"],
                    reason=form.cleaned_data["reason"],
                )
            except Refused as refused:  # changed since the form was checked
                add_refusal(form, refused)
            else:
                self.message_user(request, self._booked_words(booked), messages.SUCCESS)
                return redirect("admin:enquiries_consultation_change", object_id=booked.pk)
        return self._page(request, title="Book a consultation", enquiry=enquiry, form=form)

    @staticmethod
    def _booked_words(consultation) -> str:
        zone = consultation.enquiry.site.time_zone
        told = (
            " They will be reminded."
            if consultation.notifications.exists()
            else " No reminder can be sent: they consented to no channel with an address."
        )
        return f"Consultation booked for {local_words(consultation.scheduled_at, zone)}.{told}"

    def move_view(self, request, object_id):
        consultation = self.get_object(request, object_id)
        if not self.has_change_permission(request, consultation):
            raise PermissionDenied
        return respond_in_zone(
            consultation.enquiry.site.time_zone, lambda: self._move(request, consultation)
        )

    def _move(self, request, consultation):
        initial = {
            "scheduled_at": consultation.scheduled_at,
            "mode": consultation.mode,
            "place": consultation.place,
            "video_link": consultation.video_link,
            "reason": consultation.outside_hours_reason,
        }
        data = request.POST if request.method == "POST" else None
        form = ConsultationForm(
            data,
            initial=initial,
            enquiry=consultation.enquiry,
            by=request.user,
            consultation=consultation,
        )
        if data is not None and form.is_valid():
            try:
                moved = consultation_move(
                    consultation=consultation,
                    by=request.user,
                    scheduled_at=form.cleaned_data["scheduled_at"],
                    mode=form.cleaned_data["mode"],
                    place=form.cleaned_data["place"],
                    video_link=form.cleaned_data["video_link"],
                    reason=form.cleaned_data["reason"],
                )
            except Refused as refused:
                add_refusal(form, refused)
            else:
                zone = moved.enquiry.site.time_zone
                self.message_user(
                    request,
                    f"Consultation moved to {local_words(moved.scheduled_at, zone)}; its "
                    "reminders follow.",
                    messages.SUCCESS,
                )
                return redirect("admin:enquiries_consultation_change", object_id=moved.pk)
        return self._page(
            request,
            title="Move the consultation",
            enquiry=consultation.enquiry,
            form=form,
            consultation=consultation,
        )

    def _each(self, request, queryset, step, done_words: str):
        """A step on each consultation picked, through its service; each refusal said."""
        done = 0
        for consultation in queryset.select_related("enquiry__site"):
            try:
                step(consultation=consultation, by=request.user)
            except Refused as refused:
                for reason in refused.reasons:
                    self.message_user(request, f"{consultation.enquiry}: {reason}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"{done} {done_words}.", messages.SUCCESS)

    @admin.action(description="Mark done", permissions=["change"])
    def mark_done(self, request, queryset):
        self._each(request, queryset, consultation_mark_done, "marked done")

    @admin.action(description="Mark missed (their reminders are cancelled)", permissions=["change"])
    def mark_missed(self, request, queryset):
        self._each(request, queryset, consultation_mark_missed, "marked missed")

    @admin.action(description="Cancel (their reminders are cancelled)", permissions=["change"])
    def cancel(self, request, queryset):
        self._each(request, queryset, consultation_cancel, "cancelled")

    def get_object(self, request, object_id, from_field=None):
        if not str(object_id).isdecimal():
            raise Http404("No such consultation.")
        return super().get_object(request, object_id, from_field)
