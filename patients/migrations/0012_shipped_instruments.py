"""The instruments the tracker ships, in its own words: mMRC and the weekly chest diary."""

from django.db import migrations


def forwards(apps, schema_editor):
    from patients.questionnaires import SHIPPED

    Instrument = apps.get_model("patients", "Instrument")
    for code, (name, definition) in SHIPPED.items():
        Instrument.objects.update_or_create(
            code=code, defaults={"name": name, "definition": definition}
        )


def backwards(apps, schema_editor):
    from patients.questionnaires import SHIPPED

    apps.get_model("patients", "Instrument").objects.filter(code__in=SHIPPED).delete()


class Migration(migrations.Migration):
    dependencies = [("patients", "0011_questionnaires")]

    operations = [migrations.RunPython(forwards, backwards)]
