"""Keep the stored follow-up outcomes right whatever writes what they are worked out from:
a measurement entered, corrected or deleted (in a form, the admin or a command), a follow-up
done or reopened, a transplant date recorded or corrected. Receivers, not calls from the
writers, because the writers sit in apps below reporting. Bulk SQL updates bypass them:
`manage.py follow_up_outcomes_rebuild` follows those."""

from django.db.models.signals import post_delete, post_save

from pathway.models import TreatmentCourse
from patients.models import CReactiveProtein, LungFunctionTest, SixMinuteWalkTest, SymptomScore
from reporting.models import FollowUpOutcome
from reporting.outcomes import follow_up_outcomes_refresh
from scheduling.models import Visit, VisitKind, VisitStatus

MEASUREMENTS = (LungFunctionTest, SixMinuteWalkTest, SymptomScore, CReactiveProtein)


def _measurement_changed(sender, instance, **kwargs):
    if instance.patient_id:
        follow_up_outcomes_refresh(patient_ids=[instance.patient_id])


def _visit_saved(sender, instance, update_fields=None, **kwargs):
    if instance.kind != VisitKind.FOLLOW_UP:
        return
    if update_fields is not None and not {"status", "done_at"} & set(update_fields):
        return  # a reschedule or a confirmation: no change counts differently
    if instance.status == VisitStatus.DONE:
        follow_up_outcomes_refresh(patient_ids=[instance.course.patient_id])
    else:  # reopened, or not done yet: it counts in no cohort
        FollowUpOutcome.objects.filter(visit_id=instance.pk).delete()


def _course_saved(sender, instance, update_fields=None, **kwargs):
    # Every transition saves the course; only the day it was treated moves a baseline.
    if instance.treated_on is None:
        return
    if update_fields is not None and not {"transplanted_on", "first_infused_on"} & set(
        update_fields
    ):
        return
    follow_up_outcomes_refresh(patient_ids=[instance.patient_id])


def connect() -> None:
    for model in MEASUREMENTS:
        post_save.connect(_measurement_changed, sender=model, dispatch_uid=f"outcomes.{model}")
        post_delete.connect(
            _measurement_changed, sender=model, dispatch_uid=f"outcomes.del.{model}"
        )
    post_save.connect(_visit_saved, sender=Visit, dispatch_uid="outcomes.visit")
    post_save.connect(_course_saved, sender=TreatmentCourse, dispatch_uid="outcomes.course")
