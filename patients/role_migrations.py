"""What the role migrations share: give groups permissions from inside a data migration.

Permissions are created after migrations run; a data migration that hands them to a group
has to create them first, from the historical models it is given.
"""

from django.contrib.auth.management import create_permissions


def create_all_permissions(apps) -> None:
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None


def grant(apps, role_permissions: dict[str, list[str]]) -> None:
    """Give each role (a group, made if missing) its permissions, named "app_label.codename"."""
    create_all_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in role_permissions.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
