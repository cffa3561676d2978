"""On PostgreSQL: TRUNCATE is refused on the append-only tables (the row triggers never see
it), and the audit history tables get the same guard as the logs: no UPDATE, DELETE or
TRUNCATE."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION tracker_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused.', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
"""
APPEND_ONLY = ("pathway_transitionlog", "pathway_custodyevent")


def _history_tables(apps):
    return sorted(
        model._meta.db_table
        for model in apps.get_models()
        if model.__name__.startswith("Historical") and "_historical" in model._meta.db_table
    )


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    for table in APPEND_ONLY:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()"
        )
    for table in _history_tables(apps):
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tracker_refuse_change()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tracker_refuse_change()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in APPEND_ONLY:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    for table in _history_tables(apps):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS tracker_refuse_change()")


class Migration(migrations.Migration):
    dependencies = [
        ("pathway", "0019_audit_hash_chain"),
        ("patients", "0008_clinic_hours_and_patient_facing_name"),
        ("scheduling", "0018_deviation_and_route_permissions"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
