import base64
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe
from twilio.request_validator import RequestValidator

from patients.access import user_sees_all_sites, user_sites
from scheduling.calendar_feed import (
    calendar_feed_ics,
    calendar_feed_token_mark_used,
    calendar_feed_token_resolve,
)
from scheduling.outbox import notification_record_provider_status
from scheduling.reports import (
    previous_week,
    report_chart_png,
    report_context,
    report_csv,
    weekly_report,
)


@csrf_exempt  # Twilio cannot send a CSRF token; its signature authenticates the request instead
@require_POST
def sms_status_callback(request):
    """Twilio's delivery report for a message we sent, signed with our auth token."""
    # Twilio signs the public URL it called, which behind a proxy is SITE_URL's, not ours.
    url = settings.SITE_URL.rstrip("/") + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    if not settings.TWILIO_AUTH_TOKEN or not validator.validate(
        url, request.POST.dict(), signature
    ):
        return HttpResponseForbidden("Bad signature.")
    notification_record_provider_status(
        provider_message_id=request.POST.get("MessageSid", ""),
        status=request.POST.get("MessageStatus", ""),
        error=request.POST.get("ErrorCode", ""),
    )
    return HttpResponse(status=204)


@permission_required("pathway.view_treatmentcourse")
def weekly_report_view(request):
    """The weekly report in the admin, for a chosen week and site, or as CSV."""
    sites = list(user_sites(request.user))
    site = next((s for s in sites if s.code == request.GET.get("site")), None)
    if site is None and not user_sees_all_sites(request.user):
        # Only programme leads and auditors see the report across sites.
        if not sites:
            raise PermissionDenied("You belong to no site.")
        site = sites[0]
    zone = site.time_zone if site else ZoneInfo(settings.TIME_ZONE)
    week = request.GET.get("week") or previous_week(timezone.now(), zone)
    try:
        report = weekly_report(week=week, site=site)
    except ValueError as error:
        messages.error(request, str(error))
        return redirect(request.path)
    if request.GET.get("format") == "csv":
        response = HttpResponse(report_csv(report), content_type="text/csv")
        scope = site.code if site else "all-sites"
        response["Content-Disposition"] = f'attachment; filename="pathway-{week}-{scope}.csv"'
        return response
    chart = base64.b64encode(report_chart_png(report)).decode()
    context = (
        admin.site.each_context(request)
        | report_context(report)
        | {
            "title": f"Weekly status report {week}",
            "sites": sites,
            "chosen_site": site,
            "chart_data_uri": f"data:image/png;base64,{chart}",
        }
    )
    return render(request, "scheduling/report/admin.html", context)


@require_safe
def calendar_feed_view(request, token):
    """A site's visits for a calendar application, behind a secret link instead of a login."""
    feed = calendar_feed_token_resolve(token=token)
    if feed is None:
        # Unknown, revoked or no longer allowed: the same answer, so a link reveals nothing.
        raise Http404("No such calendar.")
    now = timezone.now()
    calendar_feed_token_mark_used(feed=feed, now=now)
    response = HttpResponse(
        calendar_feed_ics(site=feed.site, now=now), content_type="text/calendar; charset=utf-8"
    )
    # Private: a shared cache must not serve one user's link to another's request.
    response["Cache-Control"] = "private, max-age=300"
    response["Content-Disposition"] = f'inline; filename="{feed.site.code.lower()}-visits.ics"'
    # A link pasted somewhere public should not end up in a search engine.
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response
