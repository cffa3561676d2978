"""The published figures SPEC.md shows beside outcomes, and the local transplant date of
courses transplanted before that date was stored."""

from decimal import Decimal

from django.db import migrations

FIGURES = [
    # measure, weeks, value, kind, source
    ("dlco_relative_pct", 24, Decimal("18.2"), "reported",
     "2024 Science Translational Medicine trial, 17 treated patients"),
    ("walk_m", None, Decimal("52"), "reported", "2022 meta-analysis, 11 studies, 371 patients"),
    ("fev1_ml", None, Decimal("71"), "reported", "2022 meta-analysis, 11 studies, 371 patients"),
    ("walk_m", None, Decimal("30"), "mcid", "Minimal clinically important difference"),
]


def seed(apps, schema_editor):
    ReferenceFigure = apps.get_model("pathway", "ReferenceFigure")
    for measure, weeks, value, kind, source in FIGURES:
        ReferenceFigure.objects.get_or_create(
            measure=measure, weeks_after_transplant=weeks, kind=kind,
            defaults={"value": value, "source": source},
        )
    TreatmentCourse = apps.get_model("pathway", "TreatmentCourse")
    for course in TreatmentCourse.objects.filter(
        transplanted_at__isnull=False, transplanted_on__isnull=True
    ).select_related("site"):
        course.transplanted_on = course.transplanted_at.astimezone(course.site.time_zone).date()
        course.save(update_fields=["transplanted_on"])


class Migration(migrations.Migration):
    dependencies = [("pathway", "0005_safety_thresholds_reference_figures")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
