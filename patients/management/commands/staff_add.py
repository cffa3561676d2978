"""Add a member of staff with a role at their sites (or change theirs). They set their own
password: `manage.py changepassword <username>`, or the administrator in the admin."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from patients.access import ALL_SITES_GROUPS
from patients.models import Site

ROLES = ("coordinator", "clinician", "lab", *ALL_SITES_GROUPS)


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument(
            "--site",
            action="append",
            default=[],
            help="A site's code; repeat for more. Not for roles that see every site.",
        )
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")

    def handle(self, *args, username, email, role, site, first_name, last_name, **options):
        sites = list(Site.objects.filter(code__in=site))
        unknown = set(site) - {s.code for s in sites}
        if unknown:
            raise CommandError(f"No site with the code {', '.join(sorted(unknown))}.")
        if role not in ALL_SITES_GROUPS and not sites:
            raise CommandError(f"A {role} works at a site: give --site CODE.")
        group = Group.objects.filter(name=role).first()
        if group is None:
            raise CommandError(f"The {role} role is missing: run `manage.py migrate` first.")
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": email, "is_staff": True}
        )
        user.email, user.first_name, user.last_name, user.is_staff = (
            email,
            first_name,
            last_name,
            True,
        )
        if created:
            user.set_unusable_password()  # they choose their own
        user.save()
        user.groups.add(group)
        for each in sites:
            (each.coordinators if role == "coordinator" else each.members).add(user)
        where = ", ".join(s.code for s in sites) or "every site"
        self.stdout.write(
            f"{'Added' if created else 'Changed'} {username} as {role} at {where}."
            + (f" Next: manage.py changepassword {username}" if created else "")
        )
