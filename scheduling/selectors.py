from pathway.models import TreatmentCourse
from scheduling.models import Visit, VisitStatus


def course_completion_visit_done(*, course: TreatmentCourse) -> bool:
    """Whether the follow-up that completes the course has been done."""
    return Visit.objects.filter(
        course=course, protocol_visit__completes_course=True, status=VisitStatus.DONE
    ).exists()
