#!/usr/bin/env python
import os
import sys

# Commands that read only the code: no secret, mailbox or message provider is used, so a fresh
# checkout runs them with no environment at all. Every other command keeps production's rule
# that SECRET_KEY, EMAIL_URL and SMS_BACKEND are set unless DEBUG is on.
CODE_ONLY_COMMANDS = {"makemigrations"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] and sys.argv[1] in CODE_ONLY_COMMANDS:
        os.environ.setdefault("DEBUG", "1")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings, to say plainly what is missing)
    except ImproperlyConfigured as error:
        # Django would carry on without settings and fail later as "Models aren't loaded yet".
        sys.exit(f"{error}\nFor development, set DEBUG=1 (as `make run` does); see the README.")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
