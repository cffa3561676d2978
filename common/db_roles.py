"""Least privilege on PostgreSQL: the application connects as a role that owns nothing.

Two roles: the *owner* owns the database's tables and runs the migrations; the *app* role,
which the web processes, workers and beat use, may read and write the ordinary tables but only
read and add rows to the append-only ones (the transition log, the chain of custody and every
audit history table): no UPDATE, DELETE or TRUNCATE there, and no ALTER anywhere, so it cannot
lift their triggers either. `manage.py db_roles` makes both; every `migrate` run as the owner
grants the app role what new tables need (`DATABASE_APP_ROLE`).
"""

from django.apps import apps


def append_only_tables() -> list[str]:
    """The tables whose rows are never changed: append-only models and audit histories."""
    return sorted(
        model._meta.db_table
        for model in apps.get_models()
        if getattr(model, "append_only", False) or model.__name__.startswith("Historical")
    )


def _quote(connection, name: str) -> str:
    return connection.ops.quote_name(name)


def app_role_grant(connection, app_role: str) -> None:
    """Give `app_role` what the application needs on every table, less the append-only
    tables' UPDATE and DELETE. Idempotent; run as the tables' owner."""
    role = _quote(connection, app_role)
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        cursor.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
        for table in append_only_tables():
            cursor.execute(
                f"REVOKE UPDATE, DELETE, TRUNCATE ON {_quote(connection, table)} FROM {role}"
            )


def append_only_revoke_everywhere(connection) -> None:
    """Take UPDATE, DELETE and TRUNCATE on the append-only tables from every role but their
    owner, whoever granted them (default privileges give them to any table made later)."""
    tables = append_only_tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
            "       ELSE a.grantee::regrole::text END "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
            "     aclexplode(c.relacl) a "
            "WHERE n.nspname = 'public' AND c.relname = ANY(%s) AND a.grantee <> c.relowner "
            "AND a.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE')",
            [tables],
        )
        for table, grantee in cursor.fetchall():
            who = grantee if grantee == "PUBLIC" else _quote(connection, grantee.strip('"'))
            cursor.execute(
                f"REVOKE UPDATE, DELETE, TRUNCATE ON {_quote(connection, table)} FROM {who}"
            )


def role_exists(connection, role: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        return cursor.fetchone() is not None


def roles_create(connection, *, owner: str, app: str, owner_password: str, app_password: str):
    """Run once, as a PostgreSQL superuser, on the tracker's database: make (or update) both
    roles, hand the database, its schema and every table and sequence to the owner, and let
    the app role in with only what `app_role_grant` gives it, now and for tables to come."""
    database = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        for role, password in ((owner, owner_password), (app, app_password)):
            verb = "ALTER" if role_exists(connection, role) else "CREATE"
            cursor.execute(
                f"{verb} ROLE {_quote(connection, role)} "
                "WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s",
                [password],
            )
        q_owner, q_app = _quote(connection, owner), _quote(connection, app)
        cursor.execute(f"ALTER DATABASE {_quote(connection, database)} OWNER TO {q_owner}")
        cursor.execute(f"ALTER SCHEMA public OWNER TO {q_owner}")
        # A table's own sequences (its ids) change owner with it.
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():
            cursor.execute(f"ALTER TABLE {_quote(connection, table)} OWNER TO {q_owner}")
        cursor.execute(f"REVOKE ALL ON DATABASE {_quote(connection, database)} FROM PUBLIC")
        cursor.execute(f"GRANT CONNECT ON DATABASE {_quote(connection, database)} TO {q_app}")
        cursor.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        cursor.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {q_owner} IN SCHEMA public "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {q_app}"
        )
        cursor.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {q_owner} IN SCHEMA public "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {q_app}"
        )
    app_role_grant(connection, app)
