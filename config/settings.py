"""Settings for the tracker, read once from the environment (django-environ).

Every variable is listed in the README under "Configuration".
"""

import datetime as dt
from pathlib import Path

import environ
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

# A development key is only acceptable while DEBUG is on; anything else must bring its own.
_DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_fsm",
    "simple_history",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_celery_beat",
    "phonenumber_field",
    # The project's apps, floor by floor: each imports only the ones above it in this list.
    "common",
    "patients",
    "scheduling",
    "pathway",
    "enquiries",
    "reporting",
    "delivery",
]
# PostgreSQL's least privilege (common/db_roles.py): the role the application runs as. A
# migration run as the owner grants it what new tables need; empty: no grants are made.
DATABASE_APP_ROLE = env.str("DATABASE_APP_ROLE", default="")
# The admin's site scoping (common/) applies the patients app's rule of who sees which site.
SITE_SCOPE_FUNCTION = "patients.access.scope_to_user_sites"

MIDDLEWARE = [
    # First: forwarded headers from anyone but a trusted proxy are dropped (common/proxies.py).
    "common.proxies.ForwardedHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself, compressed and cached (no proxy needed).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "common.middleware.PermissionsPolicyMiddleware",
    "common.middleware.RefuseNulMiddleware",
    # A database that cannot be reached (a failover under way) answers 503 with Retry-After.
    "common.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "common.second_factor.SecondFactorMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR.mkdir(exist_ok=True)
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'tracker.sqlite3'}"),
}
# Behind PgBouncer in transaction pooling (README, "Scaling out"), each transaction may run on
# another server connection, so nothing may outlive a transaction. Django's server-side
# cursors would (`.iterator()` outside a transaction opens a WITH HOLD cursor, and fetches
# from it later): they are turned off. Everything else the tracker does holds: its advisory
# locks are pg_advisory_xact_lock, its SETs are SET LOCAL, it prepares no statement and
# LISTENs to nothing. Client connections to PgBouncer are cheap to keep, so they are kept.
DATABASE_TRANSACTION_POOLING = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
# A multi-host URL (postgres://u@db1:5432,db2:5432/tracker?target_session_attrs=read-write
# &connect_timeout=3) finds the primary of a Patroni cluster by itself: its query string
# becomes the connection's OPTIONS, which psycopg2 hands to libpq.
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int(
    "CONN_MAX_AGE", default=60 if DATABASE_TRANSACTION_POOLING else 0
)
# A kept connection that the server dropped is noticed and replaced before it is used.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_TRANSACTION_POOLING
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A worker, beat and the web server share the file: wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
# A streaming replica for the heavy reads that may be a few seconds old: the weekly report,
# exports, FHIR, the calendar feed and the capacity heat map (common/replica.py). Writes, and
# what a person reads right after acting, stay on the primary. A replica further behind than
# DATABASE_REPLICA_MAX_LAG_SECONDS, or down, is passed over for the primary, with a log line.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
DATABASE_REPLICA_MAX_LAG_SECONDS = env.int("DATABASE_REPLICA_MAX_LAG_SECONDS", default=60)
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = environ.Env.db_url_config(DATABASE_REPLICA_URL) | {
        key: DATABASES["default"][key]
        for key in (
            "ATOMIC_REQUESTS",
            "CONN_MAX_AGE",
            "CONN_HEALTH_CHECKS",
            "DISABLE_SERVER_SIDE_CURSORS",
        )
    }
    # A test run reads the replica's copy of the test database: nothing is made on it.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["common.replica.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # django-axes first: it counts failed logins and refuses a locked-out user or address.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The address a failure is counted against: behind the proxy, the client's, never one a
# client wrote in a header itself (common/proxies.py).
AXES_CLIENT_IP_CALLABLE = "common.proxies.client_address"
# Masked in what axes stores of a failed login's form (it always masks `password`). A
# signature's password never reaches it: pathway/signatures.py checks it without the form.
AXES_SENSITIVE_PARAMETERS = ["csrfmiddlewaretoken", "second_person_password", "token"]

# Staff sessions end after 15 minutes without a request.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_SECONDS", default=15 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# Two-factor (TOTP, django-otp) for staff: with it on, a password alone does not open the
# admin; each member of staff sets up an authenticator app on first sign-in. On unless DEBUG,
# and turned off only by saying so (OTP_REQUIRED=0).
OTP_REQUIRED = env.bool("OTP_REQUIRED", default=not DEBUG)
OTP_TOTP_ISSUER = "Pathway tracker"

# Production: HTTPS only. Behind a proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The load balancer asks over plain HTTP, inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (addresses or networks,
# comma-separated); from any other peer those headers are dropped (common/proxies.py). The
# default, loopback, is a proxy on the same machine, with gunicorn bound to loopback behind it.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"])

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "common.passwords.GuessabilityValidator", "OPTIONS": {"min_score": 3}},
    {"NAME": "common.passwords.NotTheDemoPasswordValidator"},
]

# Content-Security-Policy (django-csp): scripts only from this server, nothing may frame a
# page, forms post only here. Inline style attributes stay allowed: the weekly report's
# email-shaped HTML and the printed label carry them, and a style cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LANGUAGE_CODE = "en-gb"
# The languages patients are written to in (reminders, replies, the pages behind their links):
# each is complete, and tests/test_i18n.py fails when a patient-facing string is not.
LANGUAGES = [
    ("en", "English"),
    ("es", "Spanish"),
    ("zh-hans", "Simplified Chinese"),
]
# The zone the admin shows times in when no site is in play; each Site has its own zone.
TIME_ZONE = env.str("TIME_ZONE", default="Europe/London")
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"  # `manage.py collectstatic` fills it for WhiteNoise
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Under `make run` (DEBUG), WhiteNoise serves straight from the apps' static folders.
WHITENOISE_USE_FINDERS = DEBUG

# Phone numbers typed without a country code are read as numbers of this region.
PHONENUMBER_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="GB")
PHONENUMBER_DB_FORMAT = "E164"

# Celery: Redis when REDIS_URL is set, otherwise kombu's filesystem transport, which needs
# no server and is enough for one machine running `make run`.
REDIS_URL = env.str("REDIS_URL", default="")
# /metrics: with a token, for Prometheus anywhere; without, for this machine only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# The patient pages' rate limit counts in Redis across every web process (common/rate_limits.py:
# a moving window, counted in each process alone while Redis cannot be reached); without
# REDIS_URL, in each process.
RATE_LIMIT_STORAGE_URL = REDIS_URL
# Django's cache: Redis when there is one, else this process's memory. Nothing in the tracker
# reads it today; a use of it must fail safe as the rate limit does (Redis may be down while
# the pages are not).
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# CELERY_BROKER_URL, when set, names the broker, as Celery's own convention has it. On
# RabbitMQ (Celery's recommended production broker) the task queue is a quorum queue
# (replicated; it survives a broker restart), and every publish waits for the broker's
# confirm, so a tick that returned was really queued. Otherwise Redis (REDIS_URL), else the
# embedded filesystem broker.
EXPLICIT_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if EXPLICIT_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    CELERY_BROKER_URL = EXPLICIT_BROKER_URL
    CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="tracker")
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
elif EXPLICIT_BROKER_URL:
    CELERY_BROKER_URL = EXPLICIT_BROKER_URL
elif REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    # Every folder the transport writes, under var/ (git-ignored): left to itself it makes
    # a control/ folder in the working directory.
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Email: any django-environ EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.org:587.
# The default prints messages to the console.
# Without DEBUG there is no default: a production that forgot to set a provider would
# otherwise print patients' reminders to its logs and call them sent.
_console_when_debugging = {"default": "consolemail://"} if DEBUG else {}
try:
    vars().update(env.email_url("EMAIL_URL", **_console_when_debugging))
except ImproperlyConfigured as error:  # django-environ's own words do not name the variable
    raise ImproperlyConfigured(f"EMAIL_URL: {error}".rstrip()) from None
# Where samples are expanded: the location written in the chain of custody.
MANUFACTURING_FACILITY = env.str("MANUFACTURING_FACILITY", default="Cell manufacturing facility")
# Calendar feeds' event titles name the visit, never the patient: a subscribed
# calendar is read by its provider's servers and shown on lock screens. On, they start with the
# MRN: only for calendars that stay on the hospital's own server.
CALENDAR_FEED_SHOWS_MRN = env.bool("CALENDAR_FEED_SHOWS_MRN", default=False)
# Links in alert emails point here.
SITE_URL = env.str("SITE_URL", default="http://localhost:8000")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Pathway tracker <noreply@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)

# SMS: "console" (prints), "null" (drops, for benchmarks) or "twilio".
SMS_BACKEND = env.str("SMS_BACKEND", **({"default": "console"} if DEBUG else {}))
SMS_TIMEOUT = env.int("SMS_TIMEOUT", default=10)
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
# Ask Twilio to report delivery to SITE_URL/sms/status/ (which must be reachable from Twilio).
TWILIO_STATUS_CALLBACK = env.bool("TWILIO_STATUS_CALLBACK", default=False)
# The pace a sending number is given at its first message, in messages a second (a long
# code's 1); each number's is then data, changed in the admin (delivery/pacing.py).
SMS_SENDER_DEFAULT_PER_SECOND = env.float("SMS_SENDER_DEFAULT_PER_SECOND", default=1.0)
# Only for tests and staging: send Twilio API calls to another server (a local stub).
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="")
# WhatsApp, through the same provider and backend as SMS: the clinic's WhatsApp sender
# (E.164, with or without the `whatsapp:` prefix). Empty: a WhatsApp message fails, and is
# alerted, rather than being sent from nowhere.
WHATSAPP_FROM = env.str("WHATSAPP_FROM", default="")
# A WhatsApp sender's pace at its first message: the provider's default throughput for one
# (80 messages a second); then data, as each SMS number's (delivery/pacing.py).
WHATSAPP_SENDER_DEFAULT_PER_SECOND = env.float("WHATSAPP_SENDER_DEFAULT_PER_SECOND", default=80.0)

# The outbox dispatcher (see delivery/outbox.py).
NOTIFICATION_BATCH_SIZE = env.int("NOTIFICATION_BATCH_SIZE", default=100)
# A row claimed by a worker that has not finished within this time is claimed again.
NOTIFICATION_CLAIM_TIMEOUT = env.int("NOTIFICATION_CLAIM_TIMEOUT", default=300)
# The first retry waits this long, each later one twice as long (capped at a day).
NOTIFICATION_RETRY_BASE_SECONDS = env.int("NOTIFICATION_RETRY_BASE_SECONDS", default=60)
# A worker writes each message's outcome before it sends the next, so that a worker killed
# sends again at most the message each of its processes had in hand. Those writes commit
# without waiting for the disk (delivery/outbox.py): on, they wait, and a crash of PostgreSQL
# itself (not of a worker) cannot make the last 0.6 s of messages go twice, at a cost per
# message.
NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT = env.bool(
    "NOTIFICATION_OUTCOME_SYNCHRONOUS_COMMIT", default=False
)
# Sent, failed and cancelled notifications move to the archive this many days after they
# settled (scheduling/outbox_archive.py), so the outbox stays the size of what is pending.
# 90 days outlasts every late word on a message (a provider's delivery report comes within
# days), the coordinator's "did they get it?" about recent visits (the course page and the
# Notification admin read the outbox), and the 12-week follow-up cycle.
NOTIFICATION_ARCHIVE_AFTER_DAYS = env.int("NOTIFICATION_ARCHIVE_AFTER_DAYS", default=90)
# Archived notifications lose what they hold about the patient (the link to them and their
# visit, error text, the provider's id) this many days after they settled; counts stay.
# Two years covers the programme's yearly reporting with a year to spare.
NOTIFICATION_PURGE_AFTER_DAYS = env.int("NOTIFICATION_PURGE_AFTER_DAYS", default=730)

# The public enquiry page (enquiries/): a form sent sooner than this after it was shown is
# refused (a person takes longer; a script does not); a form older than the maximum age is
# refused too (its signed timestamp has expired), and shown again to send.
ENQUIRY_MIN_FILL_SECONDS = env.int("ENQUIRY_MIN_FILL_SECONDS", default=3)
ENQUIRY_FORM_MAX_AGE_HOURS = env.int("ENQUIRY_FORM_MAX_AGE_HOURS", default=24)
# Posts of the enquiry form allowed per client address in an hour (a moving window in the
# shared Redis, common/rate_limits.py); the next is refused with 429.
ENQUIRY_POSTS_PER_HOUR = env.int("ENQUIRY_POSTS_PER_HOUR", default=30)
# An enquiry not answered within this many working days (Monday to Friday in its site's
# zone) raises one alert to the site's coordinators.
ENQUIRY_ANSWER_WORKING_DAYS = env.int("ENQUIRY_ANSWER_WORKING_DAYS", default=2)
# Enquiries closed longer ago than this, and never converted into a patient, are deleted with
# their messages and history by the nightly purge (`manage.py enquiries_purge`); their counts
# are kept for the weekly report's funnel.
ENQUIRY_RETENTION_DAYS = env.int("ENQUIRY_RETENTION_DAYS", default=365)

# Every record reaches the root logger's one handler, through the filter that masks the
# secrets in paths (common/secret_paths.py): Django's request logger writes the path of every
# 4xx and 5xx. A handler added here, or a logger that does not propagate, takes the filter too.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"secrets": {"()": "common.secret_paths.SecretPathFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["secrets"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's defaults give these handlers of their own (with DEBUG, under `runserver`)
        # that would print paths unmasked: theirs go through the root's instead.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": ["console"], "propagate": False},
        # Twilio's SDK narrates each API request's headers at INFO.
        "twilio.http_client": {"level": "WARNING"},
    },
}
if DEBUG:
    # In development the console backends stand in for the patient's phone and mailbox: what
    # they "send" prints whole, links and all, so a newcomer can open the patient's side from
    # the worker's output. Without DEBUG it goes through the root's masking, as every log does.
    LOGGING["handlers"]["sent_in_development"] = {"class": "logging.StreamHandler"}
    LOGGING["loggers"]["delivery.console"] = {
        "handlers": ["sent_in_development"],
        "propagate": False,
    }
    # Django's console email backend writes to standard output, which a worker would otherwise
    # hand to the (masking) logger.
    CELERY_WORKER_REDIRECT_STDOUTS = False
