"""What each notification says. Patient messages hold a first name, what the visit is and how
to prepare for it in the protocol's plain words, a date and a time in the patient's own zone
(named), a place (a resource's name and address for patients, never the staff's name for it:
`scheduling/places.py`), the clinic's neutral patient-facing name and its number: never a
diagnosis or a treatment's name."""

import datetime as dt
import functools
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.translation import gettext

from common.urls import public_url
from delivery.channels import OutgoingMessage
from delivery.consultation_messages import consultation_reminder_message
from delivery.patient_wording import in_patients_language
from delivery.whatsapp import whatsapp_content, whatsapp_message, whatsapp_to_enquirer
from enquiries.messages import enquiry_message
from pathway.checkins import invitation_link_issue
from reporting.weekly_render import report_chart_png, report_context, report_csv, report_text
from reporting.weekly_report import weekly_report
from scheduling.chains import course_resource, free_slots
from scheduling.models import (
    Channel,
    Notification,
    NotificationTemplate,
    ResourceKind,
    VisitKind,
)
from scheduling.places import resource_place_for_patients, visit_resource
from scheduling.visit_links import visit_link_issue, visit_links_issue


def visit_in_patients_words(visit) -> tuple[str, str]:
    """What the visit is and how to prepare, as the protocol words them for patients."""
    if visit.protocol_visit_id:
        return visit.protocol_visit.patient_description, visit.protocol_visit.preparation
    protocol = visit.course.protocol
    if visit.kind == VisitKind.HARVEST:
        return protocol.harvest_description, protocol.harvest_preparation
    if visit.kind == VisitKind.INFUSION:
        return protocol.infusion_description, protocol.infusion_preparation
    return protocol.transplant_description, protocol.transplant_preparation


def patient_moment(at, patient) -> tuple[str, str]:
    """A date and a time as the patient reads them: in their zone (named), in their
    language's own format ("Wed 2 Dec 2026", "2 de diciembre de 2026", "2026年12月2日").
    Call it inside `translation.override(patient.preferred_language)`."""
    local = timezone.localtime(at, patient.zone)
    return date_format(local, "DATE_FORMAT"), f"{local:%H:%M} {local.tzname()}"


def visit_page_context(visit) -> dict:
    """What a patient is told of a visit, in their own zone and language: the reminder's
    words, and the one-tap page's. Call it inside `translation.override`."""
    patient = visit.course.patient
    site = visit.course.site
    what, preparation = visit_in_patients_words(visit)
    clinic = site.patient_facing_name or gettext("your clinic")
    date, time = patient_moment(visit.scheduled_at, patient)
    phone = site.patient_phone.as_international if site.patient_phone else ""
    place, address = visit.place or clinic, ""
    resource = visit_resource(visit)
    if resource is not None:  # its name is the staff's: the patients' in their language
        words = resource_place_for_patients(resource, patient.preferred_language)
        place, address = words.name or clinic, words.address
    return {
        "language": patient.preferred_language,
        "first_name": patient.first_name,
        "what": in_patients_language(what),
        "preparation": in_patients_language(preparation.strip()),
        "date": date,
        "short_date": date,
        "time": time,
        "place": place,
        "address": address,
        # On one line, for a text message.
        "place_line": ", ".join([place, *filter(None, map(str.strip, address.splitlines()))]),
        "clinic": clinic,
        "phone": phone,
        # The clinic's name and number together: a WhatsApp template's variable.
        "contact": ", ".join(filter(None, [clinic, phone])),
    }


@functools.lru_cache(maxsize=8)
def _visit_page_path_around(script_prefix: str) -> tuple[str, str]:
    """What comes before and after the token in a visit page's path: `reverse` once, rather
    than for every reminder (it cost as much as rendering the SMS)."""
    head, _, tail = reverse("visit-page", args=["0"]).rpartition("0")
    return head, tail


def visit_page_url(token: str) -> str:
    """The public link to a visit's page. Tokens are URL-safe, so they go in as they are."""
    head, tail = _visit_page_path_around(get_script_prefix())
    return public_url(f"{head}{token}{tail}")


def _reminder_context(notification: Notification, link_token: str | None) -> dict:
    """The visit in words, and a new link to its page (only the link's hash is kept)."""
    visit = notification.visit
    token = link_token or visit_link_issue(visit=visit)
    return visit_page_context(visit) | {"link": visit_page_url(token)}


def reminder_links_issue(notifications: list[Notification]) -> dict[int, str]:
    """A new page link for each reminder among `notifications`, issued together (three
    queries, however many); by notification id, for `notification_message`."""
    reminders = [n for n in notifications if n.template == NotificationTemplate.VISIT_REMINDER]
    tokens = visit_links_issue(visits=[n.visit for n in reminders])
    return {n.pk: token for n, token in zip(reminders, tokens, strict=True)}


def _whatsapp(notification: Notification, *, text: str, words: dict, templates) -> OutgoingMessage:
    """A patient's WhatsApp message: the text its SMS would carry, sent free-form within the
    patient's 24-hour window, else as the approved template (delivery/whatsapp.py)."""
    patient = notification.patient
    content = whatsapp_content(
        message=notification.template,
        language=patient.preferred_language,
        text=text,
        words=words,
        last_inbound_at=patient.whatsapp_last_inbound_at,
        templates=templates,
    )
    return whatsapp_message(
        to=patient.whatsapp, content=content, idempotency_key=notification.idempotency_key
    )


def _reminder_message(
    notification: Notification, link_token: str | None, whatsapp_templates=None
) -> OutgoingMessage:
    """An appointment reminder, in the patient's language: an SMS and a WhatsApp message say
    the same (no diagnosis, no treatment's name)."""
    patient = notification.patient
    to = patient.email if notification.channel == Channel.EMAIL else str(patient.phone)
    with translation.override(patient.preferred_language):
        context = _reminder_context(notification, link_token)
        if notification.channel in (Channel.SMS, Channel.WHATSAPP):
            text = render_to_string("delivery/messages/visit_reminder_sms.txt", context).strip()
            if notification.channel == Channel.WHATSAPP:
                return _whatsapp(
                    notification, text=text, words=context, templates=whatsapp_templates
                )
            return OutgoingMessage(to=to, text=text, idempotency_key=notification.idempotency_key)
        return OutgoingMessage(
            to=to,
            subject=gettext("Reminder: your appointment on %(date)s") % {"date": context["date"]},
            text=render_to_string("delivery/messages/visit_reminder.txt", context),
            html=render_to_string("delivery/messages/visit_reminder.html", context),
            idempotency_key=notification.idempotency_key,
        )


# How many other times the page offers, where the clinic keeps a calendar.
OTHER_TIMES = 6


@dataclass(frozen=True)
class OtherTime:
    """A free slot the patient may ask for, and how they read it."""

    starts_at: dt.datetime
    words: str  # in their zone (named) and their language

    @property
    def value(self) -> str:
        return self.starts_at.isoformat()


def visit_other_times(*, visit) -> list[OtherTime]:
    """Free slots a patient may ask for instead, in their zone: a follow-up's, inside its
    window, at the site's clinic. Procedures are rearranged by the coordinator."""
    if visit.kind != VisitKind.FOLLOW_UP or not visit.window_closes_on:
        return []
    clinic = course_resource(site=visit.course.site, kind=ResourceKind.LUNG_FUNCTION)
    if clinic is None:
        return []
    slots = free_slots(
        resource=clinic,
        first_day=visit.window_opens_on,
        last_day=visit.window_closes_on,
        after=timezone.now(),
    )
    patient = visit.course.patient
    return [
        OtherTime(slot.starts_at, " ".join(patient_moment(slot.starts_at, patient)))
        for slot in slots
        if slot.starts_at != visit.scheduled_at
    ][:OTHER_TIMES]


def _alert_context(notification: Notification) -> dict:
    """The alert, and what it is about: a course, or an enquiry (no patient yet)."""
    alert = notification.alert
    if alert.course_id:
        about = f"Course #{alert.course_id}"
        path = reverse("admin:pathway_treatmentcourse_change", args=[alert.course_id])
    else:
        about = f"Enquiry #{alert.enquiry_id}"
        path = reverse("admin:enquiries_enquiry_change", args=[alert.enquiry_id])
    return {
        "alert": alert,
        "about": about,
        "site_name": alert.site.name,
        "course_url": public_url(path),
    }


CHART_FILENAME = "weekly-chart.png"
# To someone not yet a patient, about their enquiry: its words are the enquiries app's.
ENQUIRY_TEMPLATES = (
    NotificationTemplate.ENQUIRY_ACKNOWLEDGEMENT,
    NotificationTemplate.ENQUIRY_REPLY,
)


def _weekly_report_message(notification: Notification) -> OutgoingMessage:
    site = notification.report_site
    report = weekly_report(week=notification.report_week, site=site)
    scope = site.code if site else "all-sites"
    html = render_to_string(
        "reporting/report/email.html", report_context(report) | {"chart_cid": CHART_FILENAME}
    )
    return OutgoingMessage(
        to=notification.user.email,
        subject=f"Weekly status report {report.week}: {report.scope}",
        text=report_text(report),
        html=html,
        idempotency_key=notification.idempotency_key,
        attachments=(
            (f"pathway-{report.week}-{scope}.csv", report_csv(report), "text/csv"),
            (CHART_FILENAME, report_chart_png(report), "image/png"),
        ),
        inline=(CHART_FILENAME,),
    )


def _questionnaire_message(notification: Notification, whatsapp_templates=None) -> OutgoingMessage:
    """A link to the questions, and until when they are open, in the patient's zone."""
    invitation, patient = notification.invitation, notification.patient
    site = patient.site
    token = invitation_link_issue(invitation=invitation)
    with translation.override(patient.preferred_language):
        clinic = site.patient_facing_name or gettext("your clinic")
        context = {
            "first_name": patient.first_name,
            "clinic": clinic,
            "link": public_url(reverse("checkin-page", args=[token])),
            "until": " ".join(patient_moment(invitation.closes_at, patient)),
            "reminder": notification.idempotency_key.split(".")[2] == "reminder",
        }
        text = render_to_string("delivery/messages/questionnaire.txt", context).strip()
        subject = gettext("%(clinic)s: a few questions about how you are") % {"clinic": clinic}
    if notification.channel == Channel.WHATSAPP:
        return _whatsapp(notification, text=text, words=context, templates=whatsapp_templates)
    if notification.channel == Channel.SMS:
        to = str(patient.phone)
        return OutgoingMessage(to=to, text=text, idempotency_key=notification.idempotency_key)
    return OutgoingMessage(
        to=patient.email, subject=subject, text=text, idempotency_key=notification.idempotency_key
    )


def notification_message(
    notification: Notification, *, link_token: str | None = None, whatsapp_templates=None
) -> OutgoingMessage:
    """Render a notification for its channel. A reminder links to its visit's page with
    `link_token`, issued beforehand by `reminder_links_issue`, or with a link issued now. A
    WhatsApp message outside the patient's window takes its template from
    `whatsapp_templates` (`whatsapp_templates_usable`, read once for a batch), or reads it.
    Raises DeliveryError for a message that cannot be delivered as it stands."""
    if notification.template == NotificationTemplate.WEEKLY_REPORT:
        return _weekly_report_message(notification)
    if notification.template in ENQUIRY_TEMPLATES:
        words = enquiry_message(notification)
        if notification.channel == Channel.WHATSAPP:
            return whatsapp_to_enquirer(
                number=words.to,
                message=notification.template,
                language=notification.enquiry.language,
                text=words.text,
                words=words.words,
                idempotency_key=notification.idempotency_key,
                templates=whatsapp_templates,
            )
        return OutgoingMessage(
            to=words.to,
            subject=words.subject if notification.channel == Channel.EMAIL else "",
            text=words.text,
            idempotency_key=notification.idempotency_key,
        )
    if notification.template == NotificationTemplate.QUESTIONNAIRE:
        return _questionnaire_message(notification, whatsapp_templates)
    if notification.template == NotificationTemplate.VISIT_REMINDER:
        return _reminder_message(notification, link_token, whatsapp_templates)
    if notification.template == NotificationTemplate.CONSULTATION_REMINDER:
        return consultation_reminder_message(notification, whatsapp_templates)
    context = _alert_context(notification)
    alert = context["alert"]
    return OutgoingMessage(
        to=notification.user.email,
        subject=(
            f"[{alert.get_severity_display()}] {alert.get_kind_display()}: "
            f"{context['about'][0].lower()}{context['about'][1:]}"
        ),
        text=render_to_string("delivery/messages/alert.txt", context),
        html=render_to_string("delivery/messages/alert.html", context),
        idempotency_key=notification.idempotency_key,
    )
