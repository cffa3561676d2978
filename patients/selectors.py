from patients.models import LungFunctionTest


def course_baseline_lung_function(*, course) -> LungFunctionTest | None:
    """The evaluation's lung function: the latest test not taken at a follow-up visit, on or
    before the transplant date."""
    tests = LungFunctionTest.objects.filter(patient_id=course.patient_id, visit__isnull=True)
    if course.transplanted_on:
        tests = tests.filter(taken_on__lte=course.transplanted_on)
    return tests.first()
