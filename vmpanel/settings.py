"""vmpanel settings.

Every setting comes from an environment variable with a default that suits the embedded
demo (SQLite, a private Redis, the private test-driver hosts). A bad value stops the
process at start with a message that names the variable.
"""

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None


def env_header(name: str, default: str) -> tuple[str, str] | None:
    """A request header and its value, given as "X-Forwarded-Proto=https", in the form
    Django's SECURE_PROXY_SSL_HEADER takes; "" or "off" for none."""
    raw = os.environ.get(name, default).strip()
    if raw.lower() in ("", "off", "none", "false"):
        return None
    header, sep, value = raw.partition("=")
    if not sep or not header.strip() or not value.strip():
        raise ImproperlyConfigured(
            f"{name} must be a header and its value, like X-Forwarded-Proto=https, not {raw!r}"
        )
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


DEBUG = env_bool("DEBUG", False)
# The demo's key: public, so anyone could forge sessions with it. Refused at start unless
# DEBUG is on or VMPANEL_ALLOW_DEMO_SECRET says this is the demo or the tests.
DEMO_SECRET_KEY = "vmpanel-demo-secret-key-change-me-in-production"
SECRET_KEY = env_str("SECRET_KEY", DEMO_SECRET_KEY)
if SECRET_KEY == DEMO_SECRET_KEY and not DEBUG and not env_bool("VMPANEL_ALLOW_DEMO_SECRET", False):
    raise ImproperlyConfigured(
        "SECRET_KEY is the demo's published key, which must not sign a real panel's "
        "sessions. Set SECRET_KEY to a long random value (e.g. the output of "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), or set "
        "VMPANEL_ALLOW_DEMO_SECRET=true for the demo and the tests "
        "(make demo and make test do)."
    )
ALLOWED_HOSTS = env_str("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# Behind HTTPS (VMPANEL_HTTPS=true): secure cookies, HSTS, a redirect of plain HTTP, and the
# proxy's word that the request came in over HTTPS. Each can be set on its own too.
VMPANEL_HTTPS = env_bool("VMPANEL_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", VMPANEL_HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", VMPANEL_HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", VMPANEL_HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if VMPANEL_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", VMPANEL_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", VMPANEL_HTTPS)
# Trusted only when a proxy in front sets (or overwrites) this header on every request.
SECURE_PROXY_SSL_HEADER = env_header(
    "SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto=https" if VMPANEL_HTTPS else ""
)
# The health probes answer over plain HTTP too (a load balancer asks them directly).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "django_htmx",
    "csp",
    "domains",
    "provisioning",
]

MIDDLEWARE = [
    "vmpanel.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "vmpanel.middleware.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A page's "did it change?" poll answered before the session and user are loaded, when
    # nothing was written since it was confirmed (domains/kept_pages.py).
    "domains.kept_pages.PollMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # A signed-in person's own language (from their session) over the browser's.
    "domains.language.UserLanguageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "vmpanel.middleware.LoginRequiredMiddleware",
    # Axes goes last so it sees the authentication outcome.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Content-Security-Policy (django-csp): the panel's own files only; no inline script or
# style (base.html tells htmx not to inject its indicator style), no eval, no frames.
# Consoles: the page's WebSocket goes to the console proxy (`manage.py consoleproxy`). Behind
# a front proxy it lives under the panel's own origin at /console/ws/ (README); the demo and
# the tests reach it on its own port, which the Content-Security-Policy then allows.
VMPANEL_CONSOLE_PORT = env_int("VMPANEL_CONSOLE_PORT", 8001)
VMPANEL_CONSOLE_URL = env_str("VMPANEL_CONSOLE_URL", "/console/ws/")
VMPANEL_CONSOLE_TICKET_SECONDS = env_int("VMPANEL_CONSOLE_TICKET_SECONDS", 30)
VMPANEL_CONSOLE_RECHECK_SECONDS = env_int("VMPANEL_CONSOLE_RECHECK_SECONDS", 30)
_CONSOLE_ORIGIN = (
    VMPANEL_CONSOLE_URL.split("/console/", 1)[0] if "://" in VMPANEL_CONSOLE_URL else ""
)

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF, *([_CONSOLE_ORIGIN] if _CONSOLE_ORIGIN else [])],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    },
}
# Permissions-Policy: none of the browser's powerful features, for this page or any frame.
PERMISSIONS_POLICY = env_str(
    "VMPANEL_PERMISSIONS_POLICY",
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
    "fullscreen=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), "
    "serial=(), usb=(), xr-spatial-tracking=()",
)

ROOT_URLCONF = "vmpanel.urls"
WSGI_APPLICATION = "vmpanel.wsgi.application"

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
                "django.template.context_processors.i18n",
                "vmpanel.context_processors.inventory_freshness",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        # A kept connection (DATABASE_CONN_MAX_AGE) is tried before a request, a console's
        # check or a watcher's turn uses it again: one the database dropped meanwhile (a
        # restart, a failover, an administrator's pg_terminate_backend) is replaced, where
        # it failed the next request with a 500 (tests/test_database_faults.py).
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that accepts the connection and never answers (frozen, a failover half
    # done) held every page, and its gunicorn thread, for good: libpq waits for ever by
    # default. Past this a page is the "try again" page (vmpanel/busy.py), and a worker or
    # watcher tries again. `?connect_timeout=` in DATABASE_URL sets another.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker, the watcher and the web server write the same file. IMMEDIATE takes the
    # write lock when a transaction begins, so a writer waits for another (up to the
    # timeout) instead of failing with "database is locked" halfway through; WAL lets
    # readers go on meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates and times per language (vmpanel/formats/<language>/formats.py).
FORMAT_MODULE_PATH = ["vmpanel.formats"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "domain_list"
LOGOUT_REDIRECT_URL = "login"

# django-axes: lock a username+address pair after a few failures, for a while.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 15) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6391/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Bounded waits on the broker (kombu waits for ever by default): an action whose task is
# sent to a Redis that accepts but never answers held its page, and a gunicorn thread,
# for good; now it says the task queue does not answer within a few seconds. A worker's
# own commands fail the same way and it reconnects. Longer than the 1 s BRPOP poll.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 2, "socket_connect_timeout": 2}
# A send is tried again once, at once (a pooled connection that a Redis restart dropped),
# not three times: each try may wait out the timeout above.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# A task of ours never returns anything that is not already in its Operation row.
CELERY_TASK_IGNORE_RESULT = True

# How often the collector reads every host's usage counters (one call per host in bulk).
VMPANEL_STATS_SECONDS = env_int("VMPANEL_STATS_SECONDS", 10)
# How often the inventory watcher re-reads every host in full (events cover the rest).
VMPANEL_RECONCILE_SECONDS = env_int("VMPANEL_RECONCILE_SECONDS", 10)
# How long a view waits for a quick operation before answering with its progress page.
VMPANEL_QUICK_WAIT_SECONDS = env_int("VMPANEL_QUICK_WAIT_SECONDS", 2)
# A worker beats each running operation's heartbeat this often; an operation whose
# heartbeat is older than VMPANEL_STALE_SECONDS was orphaned by a dead worker.
VMPANEL_HEARTBEAT_SECONDS = env_int("VMPANEL_HEARTBEAT_SECONDS", 2)
VMPANEL_STALE_SECONDS = env_int("VMPANEL_STALE_SECONDS", 30)
# A queued operation no worker took within this many seconds is sent once more, then, after
# as long again, failed (its message was lost, or no worker runs).
VMPANEL_QUEUED_STALE_SECONDS = env_int("VMPANEL_QUEUED_STALE_SECONDS", 120)
# A migration whose outcome libvirt did not report is looked at again by every keeper pass
# (about every 30 s) until both hosts tell; after this long, it is failed saying so.
VMPANEL_CHECKING_GIVE_UP_SECONDS = env_int("VMPANEL_CHECKING_GIVE_UP_SECONDS", 3600)
# The inventory may be out of date (a banner on every page, /readyz fails) once no watcher
# pass has run for this long.
VMPANEL_WATCHER_STALE_SECONDS = env_int("VMPANEL_WATCHER_STALE_SECONDS", 30)
# Each host is owned by one watcher at a time through a lease this long (renewed several
# times within it): a dead watcher's hosts are taken over within it, and a host with no
# owner (no pass) for longer puts up the banner and fails /readyz (domains/leases.py).
VMPANEL_LEASE_SECONDS = env_int("VMPANEL_LEASE_SECONDS", 15)
if VMPANEL_LEASE_SECONDS < 3:
    raise ImproperlyConfigured("VMPANEL_LEASE_SECONDS must be 3 or more")
# How long a per-domain lock lives at most if a worker dies holding it.
VMPANEL_DOMAIN_LOCK_SECONDS = env_int("VMPANEL_DOMAIN_LOCK_SECONDS", 3600)
# How long phase 1 of a direct kernel boot (the installer) may run before it is stopped.
VMPANEL_INSTALL_TIMEOUT_SECONDS = env_int("VMPANEL_INSTALL_TIMEOUT_SECONDS", 3600)
# Bounds on talking to a host, so that one that hangs never stalls the panel: opening a
# connection, and any read (a change, which runs in a worker, waits as long as it takes;
# keepalive ends it when the host stops answering: after about interval × (count + 1)).
VMPANEL_LIBVIRT_CONNECT_SECONDS = env_int("VMPANEL_LIBVIRT_CONNECT_SECONDS", 5)
# A domain page's live read is shared this long by everyone on that page (0: not at all).
VMPANEL_LIVE_CACHE_SECONDS = env_int("VMPANEL_LIVE_CACHE_SECONDS", 2)
# How long a screen thumbnail is shared by everyone on the domain's page.
VMPANEL_SCREENSHOT_CACHE_SECONDS = env_int("VMPANEL_SCREENSHOT_CACHE_SECONDS", 5)
VMPANEL_LIBVIRT_CALL_SECONDS = env_int("VMPANEL_LIBVIRT_CALL_SECONDS", 10)
VMPANEL_LIBVIRT_KEEPALIVE_SECONDS = env_int("VMPANEL_LIBVIRT_KEEPALIVE_SECONDS", 3)
VMPANEL_LIBVIRT_KEEPALIVE_COUNT = env_int("VMPANEL_LIBVIRT_KEEPALIVE_COUNT", 3)

# Mail to requesters (approved, rejected, ready, failed). The demo prints it on the console.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "vmpanel@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
