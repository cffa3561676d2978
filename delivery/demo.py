"""For the demo only (DEBUG): the patient's side in two clicks. The links patients get (one-tap
for a visit, a check-in's questions) are kept only as hashes, so this page issues a fresh one
for an upcoming booked visit or an open check-in when asked, and opens it."""

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from common.zones import local_words
from pathway.checkins import invitation_link_issue
from pathway.states import CourseState
from scheduling.models import InvitationStatus, QuestionnaireInvitation, Visit, VisitStatus
from scheduling.visit_links import visit_link_issue

SHOWN = 20


def demo_links_shown() -> bool:
    """Whether the page is there: only in the demo (DEBUG)."""
    return settings.DEBUG


def demo_only(view):
    def wrapped(request, *args, **kwargs):
        if not demo_links_shown():
            raise Http404("Only in the demo.")
        return view(request, *args, **kwargs)

    return wrapped


def _checkins_open(now):
    """The check-ins a patient can answer now, as their link's page opens them."""
    return (
        QuestionnaireInvitation.objects.filter(
            status=InvitationStatus.OPEN,
            opens_at__lte=now,
            closes_at__gt=now,
            course__state=CourseState.FOLLOW_UP,
        )
        .select_related("course__patient", "course__site", "instrument")
        .order_by("closes_at")[:SHOWN]
    )


@demo_only
@staff_member_required
@require_http_methods(["GET", "POST"])
def demo_patient_links(request):
    """The next booked visits of the demo's patients and their open check-ins; "Open as the
    patient" issues a link like the one a reminder or a check-in's message carries, and
    follows it."""
    now = timezone.now()
    upcoming = (
        Visit.objects.filter(status=VisitStatus.BOOKED, scheduled_at__gt=now)
        .select_related("course__patient__site", "course__site", "protocol_visit")
        .order_by("scheduled_at")[:SHOWN]
    )
    checkins = _checkins_open(now)
    if request.method == "POST":
        if "invitation" in request.POST:
            invitation = next(
                (i for i in checkins if str(i.pk) == request.POST["invitation"]), None
            )
            if invitation is None:
                raise Http404("No such open check-in.")
            return redirect("checkin-page", token=invitation_link_issue(invitation=invitation))
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
    checkin_rows = [
        {
            "invitation": invitation,
            "patient": invitation.course.patient,
            "language": invitation.course.patient.get_preferred_language_display(),
            "until": local_words(invitation.closes_at, invitation.course.site.time_zone),
        }
        for invitation in checkins
    ]
    return render(
        request,
        "delivery/demo/patient_links.html",
        {
            "title": "Patients' pages (demo)",
            "rows": rows,
            "checkin_rows": checkin_rows,
            "has_permission": True,
        },
    )
