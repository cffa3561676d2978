"""The consultations' audit history gets the guard every history table has (pathway 0020): no
UPDATE, DELETE or TRUNCATE, even by the owner. (The enquiries' own history is the enquiry
page's to guard.)"""

from django.db import migrations

TABLE = "enquiries_historicalconsultation"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE OR REPLACE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()"
    )
    schema_editor.execute(
        f"CREATE OR REPLACE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
        "FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()"
    )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")


class Migration(migrations.Migration):
    dependencies = [("enquiries", "0002_consultation_reasons")]

    operations = [migrations.RunPython(forwards, backwards)]
