"""Settings for the age & gender site, read from the environment with embedded defaults.

With no environment at all the site runs locally: SQLite, private files under `var/media`, Redis at
redis://127.0.0.1:6379/0. `DATABASE_URL` switches to PostgreSQL; `AGEGENDER_S3_BUCKET` switches the
uploaded images to S3 (or MinIO with `AGEGENDER_S3_ENDPOINT_URL`). docs/configuration.md has them all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dj_database_url

from agegender_site.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("AGEGENDER_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production")
if not DEBUG and SECRET_KEY.startswith("dev-only"):
    raise ValueError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "predictions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "agegender_site.security.SecurityHeadersMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers a locked-out login
]

# Static files from WhiteNoise under gunicorn (`make run` and production alike); with DEBUG, straight from
# the source folders, re-read as they change.
MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = DEBUG

ROOT_URLCONF = "agegender_site.urls"
WSGI_APPLICATION = "agegender_site.wsgi.application"

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

# --- Database: SQLite by default, anything dj-database-url understands with DATABASE_URL ----------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no var/
    # A file (not the in-memory default) so that the test worker and live-server threads share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    # Web and worker write concurrently: take the write lock when a transaction begins (a deferred
    # read-then-write transaction fails at once with "database is locked"), and let readers run
    # alongside the writer (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "predictions:history"
LOGOUT_REDIRECT_URL = "predictions:upload"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

# --- Storage of uploaded images: private local folder by default, S3 when a bucket is set -------
AGEGENDER_S3_BUCKET = env_str("AGEGENDER_S3_BUCKET", "")
MEDIA_ROOT = Path(env_str("AGEGENDER_MEDIA_ROOT", str(VAR_DIR / "media")))
_STATIC_BACKEND = (
    "django.contrib.staticfiles.storage.StaticFilesStorage"
    if DEBUG
    else "whitenoise.storage.CompressedManifestStaticFilesStorage"
)
if AGEGENDER_S3_BUCKET:
    _DEFAULT_STORAGE = {
        "BACKEND": "agegender_site.storage.PrivateS3Storage",
        "OPTIONS": {
            "bucket_name": AGEGENDER_S3_BUCKET,
            "endpoint_url": env_str("AGEGENDER_S3_ENDPOINT_URL", "") or None,
            # Where browsers reach the store, when that differs from the endpoint above (Docker + MinIO).
            "public_endpoint_url": env_str("AGEGENDER_S3_PUBLIC_ENDPOINT_URL", "") or None,
            "region_name": env_str("AGEGENDER_S3_REGION", "") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "default_acl": "private",
            "querystring_auth": True,  # every URL handed out is signed ...
            "querystring_expire": env_int("AGEGENDER_S3_URL_EXPIRE", 300),  # ... and short-lived
            "file_overwrite": False,
            "addressing_style": env_str("AGEGENDER_S3_ADDRESSING_STYLE", "path"),
            "signature_version": "s3v4",
        },
    }
else:
    # `base_url=None`: there is no public media URL; images are served by an ownership-checking view.
    _DEFAULT_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    }
STORAGES = {"default": _DEFAULT_STORAGE, "staticfiles": {"BACKEND": _STATIC_BACKEND}}

# --- Uploads ----------------------------------------------------------------------------------------
AGEGENDER_MAX_UPLOAD_BYTES = env_int("AGEGENDER_MAX_UPLOAD_MB", 15) * 1024 * 1024
AGEGENDER_MAX_FILES_PER_UPLOAD = env_int("AGEGENDER_MAX_FILES_PER_UPLOAD", 20)
AGEGENDER_ALLOWED_EXTENSIONS = env_list(
    "AGEGENDER_ALLOWED_EXTENSIONS", ["jpg", "jpeg", "jfif", "png", "webp", "heic", "heif", "avif"]
)
# Photos one client (IP address) may send an hour, counted in Redis; 0: no limit. Behind N reverse
# proxies set AGEGENDER_TRUSTED_PROXIES=N, so that the client's address is read from X-Forwarded-For.
AGEGENDER_UPLOADS_PER_HOUR = env_int("AGEGENDER_UPLOADS_PER_HOUR", 300)
AGEGENDER_TRUSTED_PROXIES = env_int("AGEGENDER_TRUSTED_PROXIES", 0)
# A photo's cost to the worker grows with its pixels (~0.13 s a megapixel), so the allowance counts them
# too (0: no limit), and one upload may not hold more than AGEGENDER_MAX_UPLOAD_MEGAPIXELS in all (20
# phone photos of 12 MP fit): the photos past it are refused before they are decoded.
AGEGENDER_MEGAPIXELS_PER_HOUR = env_int("AGEGENDER_MEGAPIXELS_PER_HOUR", 2000)
AGEGENDER_MAX_UPLOAD_PIXELS = env_int("AGEGENDER_MAX_UPLOAD_MEGAPIXELS", 250) * 1_000_000
AGEGENDER_MAX_IMAGE_PIXELS = env_int("AGEGENDER_MAX_IMAGE_MEGAPIXELS", 50) * 1_000_000
# WebP, HEIC and AVIF decode only at full size, through a second buffer: a lower limit keeps a worker under
# 1.2 GB on them (ml.images.FULL_DECODE_FORMATS; the engine's own is AGEGENDER_MAX_FULL_DECODE_PIXELS).
AGEGENDER_MAX_FULL_DECODE_PIXELS = env_int("AGEGENDER_MAX_FULL_DECODE_MEGAPIXELS", 20) * 1_000_000
# ExifTool removes where a photo was taken before it is stored (Debian: libimage-exiftool-perl).
AGEGENDER_EXIFTOOL = env_str("AGEGENDER_EXIFTOOL", "exiftool")
# The upload form refuses a batch of more than AGEGENDER_MAX_FILES_PER_UPLOAD photos with a message; only a
# request of more files than this is refused by Django before the view (a 400 page), as abuse.
DATA_UPLOAD_MAX_NUMBER_FILES = max(100, 5 * AGEGENDER_MAX_FILES_PER_UPLOAD)
# Request bodies' non-file fields above this are refused before the view; files stream to disk above the next.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Django's own handlers, keeping a file name's length as sent (a name too long is refused with a message).
FILE_UPLOAD_HANDLERS = [
    "predictions.upload_handlers.MemoryHandler",
    "predictions.upload_handlers.TemporaryFileHandler",
]

# --- The API (Django REST framework; docs/api.md) --------------------------------------------------
INSTALLED_APPS += [
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "predictions.api",
]
REST_FRAMEWORK = {
    # A token first, so that a request without credentials is answered 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "predictions.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the site's own pages (CSRF checked)
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Age & gender estimator API",
    "DESCRIPTION": "Send photos; get every face's box, age (with a likely range) and gender (docs/api.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# The longest `POST /analyze` waits for its photo's job before answering 503 (the job goes on); as
# `?wait=` on the API, at most 30 s, so that a waiting request never holds a web thread for long.
AGEGENDER_ANALYZE_WAIT_SECONDS = 30

# --- Celery: Redis broker, JSON only, one job at a time per worker process ----------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A job names a row of this deployment's database, so only workers writing to that database may take
# it: by default the queue is named after the database (engine, host, port, name). Two checkouts on one
# Redis then keep their jobs apart, while web and workers of one deployment, wherever they run, meet.
_DB = DATABASES["default"]
_DB_IDENTITY = "|".join(str(_DB.get(key) or "") for key in ("ENGINE", "HOST", "PORT", "NAME"))
AGEGENDER_QUEUE = env_str("AGEGENDER_QUEUE", "") or (
    f"predictions-{hashlib.sha256(_DB_IDENTITY.encode()).hexdigest()[:10]}"
)
CELERY_TASK_DEFAULT_QUEUE = AGEGENDER_QUEUE
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis redelivers an unacknowledged job after this many seconds; must exceed the hard time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("AGEGENDER_VISIBILITY_TIMEOUT", 3600)}
# Jobs that recover by themselves (`predictions.outbox.sweep`, run by beat every AGEGENDER_SWEEP_SECONDS
# and by every worker as it starts): a worker holds the job it runs for AGEGENDER_LEASE_SECONDS, renewed
# while it works; a job whose lease ran out (its worker died) is taken back and sent again, and so is a
# queued job that neither the broker's queue nor a live worker holds (a Redis restarted without its
# data), once sent more than AGEGENDER_SEND_GRACE_SECONDS ago.
AGEGENDER_LEASE_SECONDS = env_int("AGEGENDER_LEASE_SECONDS", 60)
AGEGENDER_SWEEP_SECONDS = env_int("AGEGENDER_SWEEP_SECONDS", 30)
AGEGENDER_SEND_GRACE_SECONDS = env_int("AGEGENDER_SEND_GRACE_SECONDS", 10)
# After failing to reach the broker, a process leaves it alone this many seconds (jobs wait, unsent).
AGEGENDER_BROKER_RETRY_PAUSE = env_int("AGEGENDER_BROKER_RETRY_PAUSE", 10)
# Visitors who never sign in lose their session (SESSION_COOKIE_AGE, two weeks); their photos are deleted
# this many days after upload (0 keeps them). Signed-in users keep theirs until they delete them.
AGEGENDER_ANONYMOUS_RETENTION_DAYS = env_int("AGEGENDER_ANONYMOUS_RETENTION_DAYS", 14)
# Periodic upkeep, run by one Celery beat (`make run` and docker compose each run one): the sweep of
# jobs above; expired photos and sessions go every hour; stored files that no prediction names any more
# go once a day.
AGEGENDER_SWEEP_TASK = "worker.sweep"
AGEGENDER_HOUSEKEEPING_TASK = "worker.housekeeping"
AGEGENDER_ORPHANED_FILES_TASK = "worker.delete_orphaned_files"
CELERY_BEAT_SCHEDULE = {
    "sweep": {
        "task": AGEGENDER_SWEEP_TASK,
        "schedule": float(AGEGENDER_SWEEP_SECONDS),
        "options": {"queue": AGEGENDER_QUEUE, "expires": 0.9 * AGEGENDER_SWEEP_SECONDS},
    },
    "housekeeping": {
        "task": AGEGENDER_HOUSEKEEPING_TASK,
        "schedule": 3600.0,
        "options": {"queue": AGEGENDER_QUEUE, "expires": 3000},
    },
    "orphaned-files": {
        "task": AGEGENDER_ORPHANED_FILES_TASK,
        "schedule": 86400.0,
        "options": {"queue": AGEGENDER_QUEUE, "expires": 80000},
    },
}
AGEGENDER_TASK_SOFT_TIME_LIMIT = env_int("AGEGENDER_TASK_SOFT_TIME_LIMIT", 120)
AGEGENDER_TASK_TIME_LIMIT = env_int("AGEGENDER_TASK_TIME_LIMIT", 150)
# A job that fails for a reason other than the photo itself (storage or database away for a moment, a
# bug) is tried again this many times, after AGEGENDER_TASK_RETRY_DELAY seconds, doubling each time;
# after that the photo is marked failed, and its sender may ask for one more try ("Try again").
AGEGENDER_TASK_RETRIES = env_int("AGEGENDER_TASK_RETRIES", 2)
AGEGENDER_TASK_RETRY_DELAY = env_int("AGEGENDER_TASK_RETRY_DELAY", 10)
AGEGENDER_PREDICT_TASK = "worker.predict"
# Each worker process starts loading the model as it starts, instead of on its first job.
AGEGENDER_PRELOAD_MODEL = env_bool("AGEGENDER_PRELOAD_MODEL", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Django's own "django" logger writes to the console too (when DEBUG is on): its messages go to the
    # root's handler only, not twice. mail_admins is not used (no email is set up).
    "loggers": {"django": {"handlers": [], "level": env_str("LOG_LEVEL", "INFO"), "propagate": True}},
}

# --- HTTPS: on by default in production (DJANGO_DEBUG=0); docker-compose.yml turns it off for plain HTTP
# on localhost. Behind a proxy that ends TLS, DJANGO_SECURE_PROXY_SSL_HEADER names the header it sets to
# "https" (e.g. X-Forwarded-Proto); only set it when the proxy always sets or strips that header.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
_PROXY_SSL_HEADER = env_str("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one account from one
# address, that pair is refused for an hour; the address is the one the upload allowance counts.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("AGEGENDER_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 1  # hour
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "predictions.ratelimit.login_client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
