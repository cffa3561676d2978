"""On PostgreSQL the database itself refuses to change or delete a custody event, whatever
code or person asks."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION pathway_custody_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'Custody events are append-only: record a correction instead.';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER pathway_custody_event_append_only
    BEFORE UPDATE OR DELETE ON pathway_custodyevent
    FOR EACH ROW EXECUTE FUNCTION pathway_custody_event_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS pathway_custody_event_append_only ON pathway_custodyevent;
DROP FUNCTION IF EXISTS pathway_custody_event_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("pathway", "0008_batches_and_custody")]

    operations = [migrations.RunPython(forwards, backwards)]
