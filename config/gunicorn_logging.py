"""gunicorn's logs, with the secrets some paths carry masked (`common/secret_paths.py`): its
access log writes every path, and its error log can quote one ("Error handling request
/v/…/")."""

from gunicorn.glogging import Logger

from common.secret_paths import SecretPathFilter


class SecretMaskingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        # On the two loggers themselves, which gunicorn logs to directly and which do not
        # pass their records up: every handler gunicorn gives them (a file, stderr, syslog)
        # then writes masked lines. Django's own records reach the root logger's handler,
        # which has the same filter (config/settings.py, LOGGING).
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, SecretPathFilter) for f in log.filters):
                log.addFilter(SecretPathFilter())
