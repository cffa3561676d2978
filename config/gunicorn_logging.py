"""gunicorn's access log, with the secrets some paths carry masked: a reminder's link
(`/v/<token>/`), a check-in's (`/q/<token>/`) and a calendar feed's (`/calendar/<token>.ics`)
open a patient's page or a site's calendar to whoever holds them, and the database keeps only
their hashes: the log must not keep them either."""

import re

from gunicorn.glogging import Logger

SECRET_PATH = re.compile(r"^/(v|q|calendar)/[^/]+?(/|\.ics)?$")


def path_without_secrets(path: str) -> str:
    """ "/v/AbC123/" → "/v/…/"; other paths as they are."""
    return SECRET_PATH.sub(lambda m: f"/{m.group(1)}/…{m.group(2) or ''}", path)


class SecretMaskingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["U"] = path_without_secrets(atoms.get("U", ""))
        return atoms
