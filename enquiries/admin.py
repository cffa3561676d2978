"""The enquiries in the admin, site-scoped like patients: the answers read-only as the person
gave them, what they suggest, the messages sent; and the coordinator's actions (reply, close,
convert), each a form over one service of enquiries/services.py."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from common.admin_scoping import SiteScopedAdmin
from common.errors import Refused
from common.forms import errors_beside_fields
from common.zones import local_words, respond_in_zone
from enquiries.models import CloseReason, Enquiry
from enquiries.rules import enquiry_answer_due
from enquiries.services import (
    enquiry_channels,
    enquiry_close,
    enquiry_convert,
    enquiry_may_act,
    enquiry_reply,
)
from enquiries.suggestions import enquiry_suggestion
from scheduling.models import Channel, Notification, NotificationArchive

ANSWERS = (
    "copd_diagnosed",
    "emphysema_on_ct",
    "smoking",
    "smoking_quit_on",
    "fev1_pct_predicted",
    "home_oxygen",
    "bronchoscopy_ok",
    "chest_infection_now",
)


class ReplyForm(forms.Form):
    channel = forms.ChoiceField(label="Send by")
    text = forms.CharField(
        label="Reply",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 70}),
        help_text="Write in the person's language: it goes as written, with a greeting and "
        "the clinic's name and number in their language.",
    )

    def __init__(self, *args, channels, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["channel"].choices = [(c, Channel(c).label) for c in channels]


class CloseForm(forms.Form):
    reason = forms.ChoiceField(label="Why it is closed", choices=CloseReason.choices)
    personal_line = forms.CharField(
        label="A line of your own (optional)",
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}),
        help_text="Added after the kind reply for the reason, which goes in the person's "
        "language (none for spam).",
    )


class ConvertForm(forms.Form):
    mrn = forms.CharField(label="MRN", max_length=40)
    date_of_birth = forms.DateField(
        label="Date of birth", widget=forms.DateInput(attrs={"type": "date"})
    )
    last_name = forms.CharField(
        label="Last name", max_length=100, required=False, help_text="Only if they gave none."
    )


@admin.register(Enquiry)
class EnquiryAdmin(SiteScopedAdmin, admin.ModelAdmin):
    list_display = ("submitted_at", "first_name", "last_name", "kind", "site", "status", "language")
    list_select_related = ("site",)
    list_filter = ("status", "kind", "site")
    search_fields = ("last_name", "first_name", "=email")
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("kind", "site", "status", "language", "submitted_at", "answer_due")}),
        (
            "The person, as they wrote",
            {
                "fields": (
                    "first_name",
                    "last_name",
                    "email",
                    "consent_email",
                    "phone",
                    "consent_sms",
                    "whatsapp",
                    "consent_whatsapp",
                    "country",
                    "time_zone",
                    "message",
                )
            },
        ),
        ("Pre-screening answers (self-reported)", {"fields": (*ANSWERS, "suggestion")}),
        ("Messages", {"fields": ("messages_sent", "messages_received")}),
        (
            "Outcome",
            {"fields": ("first_answered_at", "closed_at", "close_reason", "patient", "course")},
        ),
    )
    readonly_fields = (
        "kind",
        "site",
        "status",
        "language",
        "submitted_at",
        "answer_due",
        "first_name",
        "last_name",
        "email",
        "consent_email",
        "phone",
        "consent_sms",
        "whatsapp",
        "consent_whatsapp",
        "country",
        "time_zone",
        "message",
        *ANSWERS,
        "suggestion",
        "messages_sent",
        "messages_received",
        "first_answered_at",
        "closed_at",
        "close_reason",
        "patient",
        "course",
    )
    change_form_template = "enquiries/enquiry_change_form.html"

    @admin.display(description="answer due by (the site's time)")
    def answer_due(self, obj):
        return local_words(enquiry_answer_due(obj), obj.site.time_zone)

    @admin.display(description="what the answers suggest")
    def suggestion(self, obj):
        return format_html(
            "{}<div class='help'>Their own answers, through the eligibility checklist's rules "
            "and the site's default protocol: a pointer for the first call, not a decision."
            "</div>",
            enquiry_suggestion(obj).words,
        )

    @admin.display(description="messages received")
    def messages_received(self, obj):
        """What the person texted back (SMS or WhatsApp), whole, in the site's time."""
        received = obj.inbound_messages.order_by("received_at", "id")
        if not received:
            return "None."
        zone = obj.site.time_zone
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} by {}: <blockquote>{}</blockquote>{}</li>",
                (
                    (
                        local_words(m.received_at, zone),
                        m.get_channel_display(),
                        m.body,
                        m.removed_on_arrival,
                    )
                    for m in received
                ),
            ),
        )

    @admin.display(description="messages sent")
    def messages_sent(self, obj):
        """Every message to the person: the acknowledgement and each reply, with its text
        and what became of it (the outbox, then its archive)."""
        replies = {reply.idempotency_key: reply for reply in obj.replies.all()}
        zone = obj.site.time_zone
        rows = [
            (
                n.get_template_display(),
                n.channel,
                n.get_status_display(),
                n.send_after,
                n.idempotency_key,
            )
            for n in Notification.objects.filter(enquiry=obj).order_by("send_after", "id")
        ] + [
            (
                n.get_template_display(),
                n.channel,
                f"{n.get_status_display()} (archived)",
                n.send_after,
                n.idempotency_key,
            )
            for n in NotificationArchive.objects.filter(enquiry=obj).order_by("send_after", "id")
        ]
        if not rows:
            return "None yet."
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} by {}, {}: {}{}</li>",
                (
                    (
                        what,
                        channel,
                        local_words(at, zone),
                        status,
                        format_html(
                            "<blockquote>{}</blockquote>",
                            replies[key].text if key in replies else "",
                        )
                        if key in replies
                        else "",
                    )
                    for what, channel, status, at, key in rows
                ),
            ),
        )

    def has_add_permission(self, request):
        return False  # enquiries come from the public page

    def has_delete_permission(self, request, obj=None):
        return False  # the purge deletes, after the retention

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        context = (extra_context or {}) | {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "may_act": enquiry_may_act(user=request.user, enquiry=obj) and obj.is_open,
        }
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/reply/",
                self.admin_site.admin_view(self.reply_view),
                name="enquiries_enquiry_reply",
            ),
            path(
                "<path:object_id>/close/",
                self.admin_site.admin_view(self.close_view),
                name="enquiries_enquiry_close",
            ),
            path(
                "<path:object_id>/convert/",
                self.admin_site.admin_view(self.convert_view),
                name="enquiries_enquiry_convert",
            ),
            *super().get_urls(),
        ]

    def _step(self, request, object_id, title, make_form, act):
        enquiry = self.get_object(request, object_id)
        if not enquiry_may_act(user=request.user, enquiry=enquiry):
            raise PermissionDenied
        return respond_in_zone(
            enquiry.site.time_zone,
            lambda: self._step_page(request, enquiry, title, make_form, act),
        )

    def _step_page(self, request, enquiry, title, make_form, act):
        form = make_form(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                said = act(enquiry, form.cleaned_data)
            except Refused as refusal:
                errors_beside_fields(form, refusal.by_field, refusal.general)
            else:
                self.message_user(request, said, messages.SUCCESS)
                return redirect("admin:enquiries_enquiry_change", object_id=enquiry.pk)
        context = self.admin_site.each_context(request) | {
            "title": title,
            "enquiry": enquiry,
            "form": form,
            "opts": self.model._meta,
            "suggestion": enquiry_suggestion(enquiry).words,
            "sent_words": local_words(enquiry.submitted_at, enquiry.site.time_zone),
            "language": dict(Enquiry._meta.get_field("language").choices)[enquiry.language],
        }
        return TemplateResponse(request, "enquiries/enquiry_step.html", context)

    def reply_view(self, request, object_id):
        def act(enquiry, data):
            reply = enquiry_reply(
                enquiry=enquiry, by=request.user, text=data["text"], channel=data["channel"]
            )
            return f"Your reply goes to {enquiry.first_name} by {reply.channel}."

        enquiry = self.get_object(request, object_id)
        return self._step(
            request,
            object_id,
            "Reply",
            lambda data: ReplyForm(data, channels=enquiry_channels(enquiry)),
            act,
        )

    def close_view(self, request, object_id):
        def act(enquiry, data):
            reply = enquiry_close(
                enquiry=enquiry,
                by=request.user,
                reason=data["reason"],
                personal_line=data["personal_line"],
            )
            told = f", with a kind reply by {reply.channel}" if reply else ", with no reply"
            return f"The enquiry is closed{told}."

        return self._step(request, object_id, "Close", lambda data: CloseForm(data), act)

    def convert_view(self, request, object_id):
        def act(enquiry, data):
            course = enquiry_convert(
                enquiry=enquiry,
                by=request.user,
                mrn=data["mrn"],
                date_of_birth=data["date_of_birth"],
                last_name=data["last_name"],
            )
            url = reverse("admin:pathway_treatmentcourse_change", args=[course.pk])
            return format_html(
                'Now a patient, <a href="{}">{}</a>, with a course in evaluation; their '
                "answers are in its notes.",
                url,
                course.patient,
            )

        return self._step(request, object_id, "Make a patient", lambda data: ConvertForm(data), act)
