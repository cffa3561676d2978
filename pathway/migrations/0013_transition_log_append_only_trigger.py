"""On PostgreSQL the database refuses to change or delete a transition log row."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION pathway_transition_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'The transition log is append-only.';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER pathway_transition_log_append_only
    BEFORE UPDATE OR DELETE ON pathway_transitionlog
    FOR EACH ROW EXECUTE FUNCTION pathway_transition_log_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS pathway_transition_log_append_only ON pathway_transitionlog;
DROP FUNCTION IF EXISTS pathway_transition_log_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("pathway", "0012_audit_history")]

    operations = [migrations.RunPython(forwards, backwards)]
