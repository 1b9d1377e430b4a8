"""Settings for the age & gender site, read from the environment with embedded defaults.

With no environment at all the site runs locally: SQLite, private files under `var/media`, Redis at
redis://127.0.0.1:6379/0. `DATABASE_URL` switches to PostgreSQL; `AGEGENDER_S3_BUCKET` switches the
uploaded images to S3 (or MinIO with `AGEGENDER_S3_ENDPOINT_URL`). See README.md for the full table.
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
]

if not DEBUG:  # runserver serves static files itself; gunicorn gets them from WhiteNoise
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

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
AGEGENDER_MAX_IMAGE_PIXELS = env_int("AGEGENDER_MAX_IMAGE_MEGAPIXELS", 50) * 1_000_000
# The upload form refuses a batch of more than AGEGENDER_MAX_FILES_PER_UPLOAD photos with a message; only a
# request of more files than this is refused by Django before the view (a 400 page), as abuse.
DATA_UPLOAD_MAX_NUMBER_FILES = max(100, 5 * AGEGENDER_MAX_FILES_PER_UPLOAD)
# Request bodies' non-file fields above this are refused before the view; files stream to disk above the next.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

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
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
