"""What each notification says. Patient messages hold a first name, a date, a time and a
place: never a diagnosis or a treatment's name."""

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from common.urls import public_url
from delivery.channels import OutgoingMessage
from reporting.weekly_render import report_chart_png, report_context, report_csv, report_text
from reporting.weekly_report import weekly_report
from scheduling.models import Channel, Notification, NotificationTemplate


def _reminder_context(notification: Notification) -> dict:
    visit = notification.visit
    site = visit.course.site
    local = timezone.localtime(visit.scheduled_at, site.time_zone)
    return {
        "first_name": notification.patient.first_name,
        "date": f"{local:%A} {local.day} {local:%B %Y}",
        "time": f"{local:%H:%M}",
        "place": visit.place or site.name,
        "site_name": site.name,
    }


def _alert_context(notification: Notification) -> dict:
    alert = notification.alert
    path = reverse("admin:pathway_treatmentcourse_change", args=[alert.course_id])
    return {
        "alert": alert,
        "site_name": alert.site.name,
        "course_url": public_url(path),
    }


CHART_FILENAME = "weekly-chart.png"


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


def notification_message(notification: Notification) -> OutgoingMessage:
    """Render a notification for its channel."""
    if notification.template == NotificationTemplate.WEEKLY_REPORT:
        return _weekly_report_message(notification)
    if notification.template == NotificationTemplate.VISIT_REMINDER:
        context = _reminder_context(notification)
        to = (
            notification.patient.email
            if notification.channel == Channel.EMAIL
            else str(notification.patient.phone)
        )
        if notification.channel == Channel.SMS:
            text = render_to_string("delivery/messages/visit_reminder_sms.txt", context).strip()
            return OutgoingMessage(to=to, text=text, idempotency_key=notification.idempotency_key)
        return OutgoingMessage(
            to=to,
            subject=f"Reminder: your appointment on {context['date']}",
            text=render_to_string("delivery/messages/visit_reminder.txt", context),
            html=render_to_string("delivery/messages/visit_reminder.html", context),
            idempotency_key=notification.idempotency_key,
        )
    context = _alert_context(notification)
    alert = context["alert"]
    return OutgoingMessage(
        to=notification.user.email,
        subject=(
            f"[{alert.get_severity_display()}] {alert.get_kind_display()}: "
            f"course #{alert.course_id}"
        ),
        text=render_to_string("delivery/messages/alert.txt", context),
        html=render_to_string("delivery/messages/alert.html", context),
        idempotency_key=notification.idempotency_key,
    )
