"""For the demo only (DEBUG): the patient's side in two clicks. The one-tap links patients
get are kept only as hashes, so this page issues a fresh one for an upcoming booked visit
when asked, and opens it."""

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from common.zones import local_words
from scheduling.models import Visit, VisitStatus
from scheduling.visit_links import visit_link_issue

SHOWN = 20


def demo_only(view):
    def wrapped(request, *args, **kwargs):
        if not settings.DEBUG:
            raise Http404("Only in the demo.")
        return view(request, *args, **kwargs)

    return wrapped


@demo_only
@staff_member_required
@require_http_methods(["GET", "POST"])
def demo_patient_links(request):
    """The next booked visits of the demo's patients; "Open as the patient" issues a link
    like the one a reminder carries, and follows it."""
    upcoming = (
        Visit.objects.filter(status=VisitStatus.BOOKED, scheduled_at__gt=timezone.now())
        .select_related("course__patient__site", "course__site", "protocol_visit")
        .order_by("scheduled_at")[:SHOWN]
    )
    if request.method == "POST":
        visit = next((v for v in upcoming if str(v.pk) == request.POST.get("visit")), None)
        if visit is None:
            raise Http404("No such upcoming visit.")
        return redirect("visit-page", token=visit_link_issue(visit=visit))
    rows = [
        {
            "visit": visit,
            "patient": visit.course.patient,
            "language": visit.course.patient.get_preferred_language_display(),
            "when": local_words(visit.scheduled_at, visit.course.site.time_zone),
        }
        for visit in upcoming
    ]
    return render(
        request,
        "delivery/demo/patient_links.html",
        {"title": "Patients' pages (demo)", "rows": rows, "has_permission": True},
    )
