"""The default protocol asks the chest diary weekly from the transplant to week 24, and mMRC
around each follow-up."""

from django.db import migrations


def forwards(apps, schema_editor):
    Protocol = apps.get_model("pathway", "Protocol")
    Instrument = apps.get_model("patients", "Instrument")
    ProtocolInstrument = apps.get_model("pathway", "ProtocolInstrument")
    protocol = Protocol.objects.filter(is_default=True).first()
    if protocol is None:
        return
    diary = Instrument.objects.get(code="exacerbation-diary")
    mmrc = Instrument.objects.get(code="mmrc")
    ProtocolInstrument.objects.get_or_create(
        protocol=protocol,
        instrument=diary,
        defaults={"every_days": 7, "until_weeks": 24, "open_days": 3, "remind_after_days": 2},
    )
    ProtocolInstrument.objects.get_or_create(
        protocol=protocol,
        instrument=mmrc,
        defaults={"every_days": None, "until_weeks": 24, "open_days": 14, "remind_after_days": 7},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0025_questionnaires"),
        ("patients", "0012_shipped_instruments"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
