"""A search that finds no one says so, and offers the patients it may have meant."""

from dataclasses import dataclass, field

from django.urls import reverse
from django.utils.http import urlencode
from django.utils.text import Truncator

from common.admin_scoping import scope
from patients.models import Patient
from patients.search import patients_close_to


@dataclass(frozen=True)
class NoMatch:
    query: str
    close: list[tuple[str, str]] = field(default_factory=list)  # (link, "Elizabeth Moore (…)")


class OffersCloseMatches:
    """Mix into the admin of a list searched by patient (the patients', and the courses'
    through `patient`). When a search finds nothing, the list says so beside the box and
    offers the closest patients at the user's sites, each a link (`patients_close_to`, on
    PostgreSQL): one query more, only then. The worklist's "Find a patient" searches the
    patients' list."""

    def close_match_candidates(self, request):
        """The patients at the user's sites with a row in this list."""
        patients = scope(Patient.objects.all(), request.user)
        if self.model is Patient:
            return patients
        rows = scope(self.model._default_manager.all(), request.user)
        return patients.filter(pk__in=rows.values("patient_id"))

    def close_match_link(self, patient) -> str:
        if self.model is Patient:
            return reverse("admin:patients_patient_change", args=[patient.pk])
        opts = self.model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return f"{changelist}?{urlencode({'q': patient.mrn})}"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        cl = (getattr(response, "context_data", None) or {}).get("cl")
        query = cl.query.strip() if cl is not None else ""
        # A search narrows the list, so its count is exact (not the paginator's estimate).
        if query and cl.result_count == 0:
            close = patients_close_to(self.close_match_candidates(request), query)
            cl.no_match = NoMatch(
                query=Truncator(query).chars(80),
                close=[
                    (self.close_match_link(p), f"{p.first_name} {p.last_name} ({p.mrn})")
                    for p in close
                ],
            )
        return response
