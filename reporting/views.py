import base64
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from patients.access import site_coordinators, user_sees_all_sites, user_sites
from reporting.calendar_feed import (
    calendar_feed_ics,
    calendar_feed_token_mark_used,
    calendar_feed_token_resolve,
)
from reporting.weekly_render import report_chart_png, report_context, report_csv
from reporting.weekly_report import previous_week, weekly_report
from reporting.worklist import worklist
from scheduling.services import work_assign, worklist_row_done


@require_http_methods(["GET", "HEAD", "POST"])
@permission_required("pathway.view_treatmentcourse")
def weekly_report_view(request):
    """The weekly report in the admin, for a chosen week and site, or as CSV; a POST works a
    closed week's kept figures out again."""
    recompute = request.method == "POST"
    if recompute and not request.user.has_perm("reporting.change_weeklyfigures"):
        raise PermissionDenied("Only a site's coordinators and programme leads may do that.")
    asked = request.POST if recompute else request.GET
    sites = list(user_sites(request.user))
    site = next((s for s in sites if s.code == asked.get("site")), None)
    if site is None and not user_sees_all_sites(request.user):
        # Only programme leads and auditors see the report across sites.
        if not sites:
            raise PermissionDenied("You belong to no site.")
        site = sites[0]
    zone = site.time_zone if site else ZoneInfo(settings.TIME_ZONE)
    week = asked.get("week") or previous_week(timezone.now(), zone)
    try:
        report = weekly_report(week=week, site=site, recompute=recompute)
    except ValueError as error:
        messages.error(request, str(error))
        return redirect(request.path)
    if recompute:
        messages.success(
            request, f"Week {week}'s figures were worked out again from today's records."
        )
        query = urlencode({"week": week, "site": site.code if site else ""})
        return redirect(f"{request.path}?{query}")
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
            "may_recompute": request.user.has_perm("reporting.change_weeklyfigures"),
        }
    )
    return render(request, "reporting/report/admin.html", context)


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


@require_POST
def worklist_assign_view(request):
    """Take a worklist row ("mine"), give it to another coordinator of its site, or give it
    back. Only a row the user's own worklist shows can be given, so a made-up key writes
    nothing; only a coordinator of the row's site can receive it."""
    key = request.POST.get("key", "")[:60]
    rows = {item.key: item for item in worklist(user=request.user, sites=user_sites(request.user))}
    item = rows.get(key)
    to = request.POST.get("to", "")
    if item is None:
        messages.error(request, "That piece of work is no longer on your worklist.")
    elif request.POST.get("give_back") and item.assigned_to == request.user:
        work_assign(key=key, to=None, by=request.user)
        messages.success(request, f"Given back: {item.what}, {item.about}.")
    elif request.POST.get("give") and not to:
        messages.error(request, "Choose whom to give it to.")
    elif request.POST.get("give"):
        receiver = (
            site_coordinators(sites=[item.site])
            .filter(pk=int(to) if to.isdecimal() and len(to) < 12 else None)
            .first()
        )
        if receiver is None:
            messages.error(request, "Only a coordinator of the patient's site can take it.")
        else:
            work_assign(key=key, to=receiver, by=request.user)
            messages.success(request, f"Given to {receiver}: {item.what}, {item.about}.")
    else:
        work_assign(key=key, to=request.user, by=request.user)
        messages.success(request, f"Yours: {item.what}, {item.about}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("admin:index")
    return redirect(back)


@require_POST
def worklist_done_view(request):
    """Tick off a row that is done by saying so: a patient's message answered, a booking
    confirmed by phone. Only a row on the user's own worklist, so a made-up key does nothing."""
    key = request.POST.get("key", "")[:60]
    rows = {item.key: item for item in worklist(user=request.user, sites=user_sites(request.user))}
    item = rows.get(key)
    if item is None:
        messages.error(request, "That piece of work is no longer on your worklist.")
    else:
        worklist_row_done(key=key, by=request.user)
        messages.success(request, f"Done: {item.what}, {item.about}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("admin:index")
    return redirect(back)
