"""On PostgreSQL a chained row's id always comes from its sequence, whatever the INSERT said:
the hash chain is walked in id order, and a row slipped in with an id of its choosing (far
ahead, say) would break the order of every row written after it."""

from django.db import migrations

CHAINED = ("pathway_transitionlog", "pathway_custodyevent")
FUNCTION = """
CREATE OR REPLACE FUNCTION tracker_sequential_id() RETURNS trigger AS $$
BEGIN
    NEW.id := nextval(pg_get_serial_sequence(TG_TABLE_NAME, 'id'));
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    for table in CHAINED:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_sequential_id BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tracker_sequential_id()"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in CHAINED:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_sequential_id ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS tracker_sequential_id()")


class Migration(migrations.Migration):
    dependencies = [("pathway", "0020_append_only_guards")]

    operations = [migrations.RunPython(forwards, backwards)]
