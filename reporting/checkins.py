"""A course's check-ins as the care team reads them."""

from dataclasses import dataclass

from common.zones import local_words
from patients.models import SymptomScore
from patients.questionnaires import change_is_important
from patients.selectors import baseline_records


@dataclass(frozen=True)
class CheckinRow:
    name: str
    asked: str  # in the site's zone, named
    status: str
    score: str  # "–" unanswered; "⚠" when it needed a clinician
    change: str  # mMRC: the change from the baseline, and whether it reaches the MCID


def course_checkins(*, course, last: int = 12) -> list[CheckinRow]:
    """The course's latest questionnaires: asked, answered or missed, their scores, and
    mMRC's change from the evaluation's grade. Two queries."""
    invitations = list(
        course.invitations.select_related("instrument", "response").order_by("-opens_at")[:last]
    )
    if not invitations:
        return []
    baseline = baseline_records(
        SymptomScore, patient_id=course.patient_id, transplanted_on=course.treated_on
    ).first()
    rows = []
    for invitation in invitations:
        response, score, change = invitation.response, "–", ""
        if response is not None:
            score = f"{response.score.normalize()}" + (" ⚠" if response.needs_clinician else "")
            if invitation.instrument.code == "mmrc" and baseline is not None:
                important = change_is_important(
                    invitation.instrument.definition,
                    baseline=baseline.mmrc,
                    latest=response.score,
                )
                change = f"{response.score - baseline.mmrc:+.0f} from baseline"
                change += " (reaches the MCID)" if important else ""
        rows.append(
            CheckinRow(
                name=invitation.instrument.name,
                asked=local_words(invitation.opens_at, course.site.time_zone),
                status=invitation.get_status_display(),
                score=score,
                change=change,
            )
        )
    return rows
