"""The SPEC's defaults as the first, default protocol."""

from django.db import migrations

FOLLOW_UPS = [
    # name, weeks after transplant, window (± days), includes CT, completes the course
    ("4-week lung function", 4, 7, False, False),
    ("12-week lung function", 12, 14, False, False),
    ("24-week lung function", 24, 14, False, True),
    ("6-month chest CT", 26, 14, True, False),
]


def create_default_protocol(apps, schema_editor):
    Protocol = apps.get_model("pathway", "Protocol")
    ProtocolVisit = apps.get_model("pathway", "ProtocolVisit")
    protocol, created = Protocol.objects.get_or_create(
        name="P63+ progenitor cells, standard", defaults={"is_default": True}
    )
    if created:
        ProtocolVisit.objects.bulk_create(
            ProtocolVisit(
                protocol=protocol, name=name, weeks_after_transplant=weeks, window_days=window,
                includes_ct=ct, completes_course=completes,
            )
            for name, weeks, window, ct, completes in FOLLOW_UPS
        )


class Migration(migrations.Migration):
    dependencies = [("pathway", "0001_initial")]

    operations = [migrations.RunPython(create_default_protocol, migrations.RunPython.noop)]
