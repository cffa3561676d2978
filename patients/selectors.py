from patients.models import LungFunctionTest


def baseline_records(model, *, patient_id, transplanted_on):
    """A patient's baseline records of one kind, the baseline first: the evaluation's records,
    not taken at a follow-up visit, on or before the transplant date (any date before it).

    The one definition of baseline. `patient_id` and `transplanted_on` may be values or
    `OuterRef`s, so the outcomes read the same record in SQL that this reads in Python.
    """
    records = model.objects.filter(patient_id=patient_id, visit__isnull=True)
    if transplanted_on is not None:
        records = records.filter(taken_on__lte=transplanted_on)
    return records.order_by("-taken_on", "-id")


def course_baseline_lung_function(*, course) -> LungFunctionTest | None:
    """The lung function the course's follow-ups are compared with."""
    return baseline_records(
        LungFunctionTest, patient_id=course.patient_id, transplanted_on=course.treated_on
    ).first()
