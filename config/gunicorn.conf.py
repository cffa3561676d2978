"""gunicorn, as production runs the web process: `gunicorn -c config/gunicorn.conf.py
config.wsgi`.

The access log names the path but never the query string: a search for an MRN or a name in
the admin travels in the URL (`?q=…`), and an access log is no place for a patient's
identifiers. `%(U)s` is the path alone; `%(r)s` (the request line) and `%(q)s` would carry
the query. Paths that carry a secret (a patient's link, a calendar feed's) are masked in every line
gunicorn writes (`config/gunicorn_logging.py`, `common/secret_paths.py`).
"""

import os

# Loopback: only the TLS proxy on this machine reaches gunicorn, and only its forwarded
# headers are believed (TRUSTED_PROXIES, common/proxies.py; gunicorn's own reading of them
# follows the same list).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "127.0.0.1,::1")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
logger_class = "config.gunicorn_logging.SecretMaskingLogger"
