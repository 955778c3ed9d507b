"""Django settings, driven by the environment (see `ldmsite/config.py` and the README table).

Embedded mode (no REDIS_URL) and scale-out mode differ only here: which broker,
which channel layer, whether worker threads run inside the server.
"""

import os

import dj_database_url

from ldmsite.config import BASE_DIR, load_config

CONFIG = load_config(os.environ)

DATA_DIR = CONFIG["LDM_DATA_DIR"]
SCALE_OUT = CONFIG["SCALE_OUT"]
SECRET_KEY = CONFIG["SECRET_KEY"]
DEBUG = CONFIG["DEBUG"]
ALLOWED_HOSTS = CONFIG["ALLOWED_HOSTS"]
CSRF_TRUSTED_ORIGINS = CONFIG["CSRF_TRUSTED_ORIGINS"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN): /api/docs/ works offline
    "django_dramatiq",
    "axes",
    "csp",
    "ldmsite.accounts",
    "generation",
    "gallery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Near the top, so every response gets the policy, error pages of the middleware below too.
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into its response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "ldmsite.urls"
ASGI_APPLICATION = "ldmsite.asgi.application"

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
                "ldmsite.navigation.navigation",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(CONFIG["DATABASE_URL"], conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker threads and the web server write at the same time: wait for the lock
    # instead of failing, and let readers proceed during writes (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too: worker threads need the same locking (busy timeout, WAL) as
    # production, which shared-cache in-memory databases do not have.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Email (password resets): printed to standard output by default, SMTP when configured.
EMAIL_BACKEND = {"console": "django.core.mail.backends.console.EmailBackend",
                 "smtp": "django.core.mail.backends.smtp.EmailBackend"}[CONFIG["LDM_EMAIL_BACKEND"]]
EMAIL_HOST = CONFIG["EMAIL_HOST"]
EMAIL_PORT = CONFIG["EMAIL_PORT"]
EMAIL_HOST_USER = CONFIG["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = CONFIG["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = CONFIG["EMAIL_USE_TLS"]
EMAIL_USE_SSL = CONFIG["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = CONFIG["DEFAULT_FROM_EMAIL"]
PASSWORD_RESET_TIMEOUT = 60 * 60 * 24  # a reset link works for a day

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# Login throttling (django-axes): lock a username from one address after N failures.
AXES_FAILURE_LIMIT = CONFIG["LDM_LOGIN_FAILURE_LIMIT"]
AXES_COOLOFF_TIME = CONFIG["LDM_LOGIN_COOLOFF_MINUTES"] / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# A lockout ends LDM_LOGIN_COOLOFF_MINUTES after the failure that caused it: attempts refused
# during it are not recorded, so nobody can keep a person locked out by trying again and again.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# The client's address: the connection's, or behind a proxy the one it appended to
# X-Forwarded-For (ldmsite/api/throttles.py; the API throttles use the same rule).
AXES_CLIENT_IP_CALLABLE = "ldmsite.api.throttles.client_address"
LDM_BEHIND_PROXY = CONFIG["LDM_BEHIND_PROXY"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
# Serve straight from the source folders, so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"  # never served directly: gallery views check permissions and stream files
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if CONFIG["LDM_S3_BUCKET"]:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CONFIG["LDM_S3_BUCKET"],
            "endpoint_url": CONFIG["LDM_S3_ENDPOINT_URL"],
            "region_name": CONFIG["LDM_S3_REGION"],
            "access_key": CONFIG["LDM_S3_ACCESS_KEY"],
            "secret_key": CONFIG["LDM_S3_SECRET_KEY"],
            "default_acl": "private",
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }

# --- Security -----------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the small amount of page JavaScript reads it for fetch()
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if CONFIG["LDM_HTTPS"]:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = CONFIG["LDM_HSTS_SECONDS"]
    SECURE_HSTS_INCLUDE_SUBDOMAINS = CONFIG["LDM_HSTS_PRELOAD"]
    SECURE_HSTS_PRELOAD = CONFIG["LDM_HSTS_PRELOAD"]
if CONFIG["LDM_BEHIND_PROXY"]:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content-Security-Policy (django-csp) on every response: scripts and styles only from the site's
# own files — no inline script, no event-handler attributes, no inline styles (templates load
# static/js/*.js; tests/security/test_web_csp.py checks every page) — images also as data: URLs
# (the live previews), connections (fetch, the job websockets) only to the site itself.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Jobs (Dramatiq) and live updates (Channels) -------------------------------
DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.ShutdownNotifications",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "generation.workers.WorkerStatusMiddleware",
]
if SCALE_OUT:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {"url": CONFIG["REDIS_URL"]},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [CONFIG["REDIS_URL"]]},
        }
    }
    EMBEDDED_WORKER_THREADS = 0
else:
    # Dramatiq's in-memory broker, consumed by worker threads inside the server process.
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    EMBEDDED_WORKER_THREADS = CONFIG["LDM_WORKER_THREADS"]
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# Generation jobs (see generation/admission.py, queue.py, recovery.py).
LDM_PRECISION = CONFIG["LDM_PRECISION"]
LDM_TORCH_THREADS = CONFIG["LDM_TORCH_THREADS"]  # 0: auto
LDM_FAST_PATH = CONFIG["LDM_FAST_PATH"]  # auto | on | off (generation/diffusion/fastpath.py)
LDM_MODEL_CACHE_BYTES = CONFIG["LDM_MODEL_CACHE_MB"] * 1024 * 1024
LDM_MAX_ACTIVE_JOBS = CONFIG["LDM_MAX_ACTIVE_JOBS"]
LDM_JOB_MAX_ATTEMPTS = CONFIG["LDM_JOB_MAX_ATTEMPTS"]
LDM_MAX_BATCH = CONFIG["LDM_MAX_BATCH"]  # generation/queue.py claim_compatible_jobs, runner.py run_claimed_batch
LDM_BATCH_WINDOW_MS = CONFIG["LDM_BATCH_WINDOW_MS"]
LDM_MAX_ACTIVE_TRAININGS = CONFIG["LDM_MAX_ACTIVE_TRAININGS"]
LDM_JOB_TIME_LIMIT_SECONDS = CONFIG["LDM_JOB_TIME_LIMIT_SECONDS"]
LDM_HEARTBEAT_SECONDS = CONFIG["LDM_HEARTBEAT_SECONDS"]
LDM_HEARTBEAT_TIMEOUT_SECONDS = CONFIG["LDM_HEARTBEAT_TIMEOUT_SECONDS"]
LDM_REQUEUE_AFTER_SECONDS = CONFIG["LDM_REQUEUE_AFTER_SECONDS"]
LDM_RECOVERY_INTERVAL_SECONDS = CONFIG["LDM_RECOVERY_INTERVAL_SECONDS"]
LDM_JOB_QUEUES = CONFIG["LDM_JOB_QUEUES"] or ["default"]
LDM_UNSAVED_RETENTION_DAYS = CONFIG["LDM_UNSAVED_RETENTION_DAYS"]
LDM_OUTPUT_CHECK = CONFIG["LDM_OUTPUT_CHECK"]  # see generation/outputs.py
LDM_BUILTIN_MODEL_DIR = BASE_DIR / "generation" / "builtin_model"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"handlers": ["console"], "level": CONFIG["LDM_LOG_LEVEL"].upper(), "propagate": False}
        for name in ("ldmsite", "generation", "gallery")
    },
}

# --- REST API (see the ldmsite/api/ package and docs/API.md) ------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ldmsite.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # the browser, with CSRF
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "ldmsite.api.authentication.TokenScopePermission",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "ldmsite.api.throttles.PersonRateThrottle",
        "ldmsite.api.throttles.GenerationRateThrottle",
    ],
    "DEFAULT_PARSER_CLASSES": ["ldmsite.api.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "ldmsite.api.pagination.NewestFirstPagination",
    "EXCEPTION_HANDLER": "ldmsite.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ldmsite API",
    "DESCRIPTION": "Text-to-image generation, galleries and moderation. Authenticate with a personal access "
                   "token: `Authorization: Bearer <token>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ (templates/api/docs.html) loads Swagger UI from drf-spectacular-sidecar, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"VisibilityEnum": "gallery.models.Image.Visibility"},
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ldmsite.api.schema.add_error_responses",
    ],
    "TAGS": [
        {"name": "account", "description": "You and your limits"},
        {"name": "models", "description": "Models you can generate with"},
        {"name": "generations", "description": "Jobs: submit, follow, cancel"},
        {"name": "images", "description": "Your images and anyone's shared ones"},
        {"name": "albums", "description": "Named, ordered selections of your images"},
        {"name": "likes", "description": "Likes"},
        {"name": "reports", "description": "Reporting images to staff"},
        {"name": "explore", "description": "Everyone's public images, and search"},
        {"name": "a1111", "description": "The AUTOMATIC1111 web UI API subset (/sdapi/v1/), for existing clients"},
    ],
}

# API limits (ldmsite/api/throttles.py, generation/admission.py) and the A1111 API (generation/a1111/).
LDM_API_RATE = CONFIG["LDM_API_RATE"]
LDM_API_GENERATE_RATE = CONFIG["LDM_API_GENERATE_RATE"]
LDM_TOKEN_FAILURE_RATE = CONFIG["LDM_TOKEN_FAILURE_RATE"]
LDM_DAILY_IMAGE_QUOTA = CONFIG["LDM_DAILY_IMAGE_QUOTA"]
LDM_A1111_TIMEOUT_SECONDS = CONFIG["LDM_A1111_TIMEOUT_SECONDS"]
if SCALE_OUT:
    # Rate throttles count in the cache: share it between web processes.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": CONFIG["REDIS_URL"]}}
