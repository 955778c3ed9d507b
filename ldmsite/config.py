"""Every environment variable ldmsite reads, with its default, in one place.

`settings.py` calls `load_config(os.environ)`; the README's configuration
table is checked against `VARIABLES` by a test, so the two cannot drift.
A bad value raises `ImproperlyConfigured` naming the variable.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def parse_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}.")


def int_parser(minimum: int, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}.") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ImproperlyConfigured(f"{name} must be at least {minimum}{upper}; got {value}.")
        return value

    return parse


def parse_list(name: str, raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise ImproperlyConfigured(f"{name} must be a directory path; got an empty value.")
    path = Path(raw.strip()).expanduser()
    return path if path.is_absolute() else (BASE_DIR / path)


def url_parser(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip()
        scheme = urlparse(value).scheme
        if scheme not in schemes:
            raise ImproperlyConfigured(
                f"{name} must be a URL starting with one of {', '.join(s + '://' for s in schemes)}; got {value!r}."
            )
        return value

    return parse


def torch_threads_parser(name: str, raw: str) -> int:
    """`auto` (0: decided where jobs run, see `generation.workers.torch_threads`) or 1-256 threads."""
    if raw.strip().lower() == "auto":
        return 0
    return int_parser(1, 256)(name, raw)


def choice_parser(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {raw!r}.")
        return value

    return parse


def parse_text(name: str, raw: str) -> str:
    return raw


RATE_PERIODS = {"s": "second", "sec": "second", "second": "second", "m": "minute", "min": "minute",
                "minute": "minute", "h": "hour", "hour": "hour", "d": "day", "day": "day"}


def parse_rate(name: str, raw: str) -> str:
    """A request rate as Django REST framework writes it: `120/min` (periods s, min, hour, day)."""
    value = raw.strip().lower()
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in RATE_PERIODS:
        raise ImproperlyConfigured(f"{name} must be a rate like 120/min (per s, min, hour or day); got {raw!r}.")
    return f"{int(count)}/{RATE_PERIODS[period]}"


def parse_output_check(name: str, raw: str) -> str:
    """`none`, `safety-checker:<directory>` or the dotted path of a callable (generation/outputs.py)."""
    value = raw.strip()
    if value.lower() in ("", "none"):
        return "none"
    if value.startswith("safety-checker:"):
        directory = value.partition(":")[2].strip()
        if not directory:
            raise ImproperlyConfigured(f"{name}: safety-checker: needs a directory, e.g. "
                                       "safety-checker:/models/stable-diffusion-safety-checker.")
        return f"safety-checker:{parse_path(name, directory)}"
    if all(part.isidentifier() for part in value.split(".")) and "." in value:
        return value
    raise ImproperlyConfigured(f"{name} must be none, safety-checker:<directory> or the dotted path of a "
                               f"callable (package.module.function); got {raw!r}.")


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: unset unless given; the description says what that means
    parse: Callable[[str, str], Any]
    description: str


VARIABLES: tuple[Variable, ...] = (
    Variable("LDM_DATA_DIR", "./var", parse_path,
             "Data directory: SQLite database, media files, the generated secret key. Relative paths are "
             "relative to the repository."),
    Variable("DATABASE_URL", None, url_parser(("sqlite", "postgres", "postgresql")),
             "Database URL. Unset: SQLite at `$LDM_DATA_DIR/db.sqlite3`. Scale-out: "
             "`postgres://user:pass@host:5432/ldmsite`."),
    Variable("REDIS_URL", None, url_parser(("redis", "rediss")),
             "Unset: embedded mode (in-process workers, in-memory broker and channel layer). Set: scale-out "
             "mode, Redis is the Dramatiq broker and the Channels layer, workers run as "
             "`manage.py rundramatiq`."),
    Variable("SECRET_KEY", None, parse_text,
             "Django secret key. Embedded mode generates one into `$LDM_DATA_DIR/secret_key` on first start; "
             "scale-out mode requires it (every process must share it)."),
    Variable("DEBUG", "false", parse_bool, "Django debug pages. Never on in production."),
    Variable("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]", parse_list,
             "Comma-separated host names the site answers to."),
    Variable("CSRF_TRUSTED_ORIGINS", "", parse_list,
             "Comma-separated extra origins (`https://example.com`) trusted for forms and websockets, "
             "e.g. behind a proxy."),
    Variable("LDM_HTTPS", "false", parse_bool,
             "Site is served over HTTPS: redirect HTTP, secure cookies, HSTS. Turn on in production."),
    Variable("LDM_BEHIND_PROXY", "false", parse_bool,
             "The site is reached through one reverse proxy: trust its `X-Forwarded-Proto` (TLS) and take "
             "the client's address from the last `X-Forwarded-For` entry (login lockout, throttles). Off: "
             "both headers are ignored, so clients cannot forge them."),
    Variable("LDM_HSTS_SECONDS", "31536000", int_parser(0),
             "HSTS max-age when `LDM_HTTPS` is on."),
    Variable("LDM_HSTS_PRELOAD", "true", parse_bool,
             "Send the HSTS `preload` and `includeSubDomains` flags when `LDM_HTTPS` is on."),
    Variable("LDM_WORKER_THREADS", "1", int_parser(0, 64),
             "Embedded mode: worker threads for generation jobs inside the server process (0 runs none; "
             "LoRA trainings get one more thread of their own). Ignored in scale-out mode, where "
             "`rundramatiq --threads` decides."),
    Variable("LDM_PRECISION", "auto", choice_parser(("auto", "fp32", "bf16", "fp16")),
             "Inference precision. `auto`: times a few UNet calls of each model in each candidate precision "
             "on the device at load (CPU: fp32 and bf16; CUDA: fp32 and fp16/bf16) and keeps the faster; "
             "remembered per model and device in the data directory's `cache/precision.json`."),
    Variable("LDM_TORCH_THREADS", "auto", torch_threads_parser,
             "Intra-op threads of torch in a process that runs jobs. `auto`: in embedded mode one less than the "
             "CPU cores the process may use (at least 1), so the web server keeps a core and torch's threads do "
             "not spin against it; in scale-out mode (and for `manage.py generate`) torch's own default, one per "
             "core."),
    Variable("LDM_FAST_PATH", "auto", choice_parser(("auto", "on", "off")),
             "GPU fast path (`generation/diffusion/fastpath.py`): channels_last UNet and VAE, SDPA attention, "
             "cuDNN autotuning and the UNet compiled with `torch.compile` and warmed up at load for the model's "
             "default size. `auto`: on for CUDA devices only; `on`: on any device; `off`: models run exactly as "
             "loaded. Sizes not compiled at load and jobs with LoRAs run the UNet uncompiled rather than waiting "
             "for a recompile."),
    Variable("LDM_MODEL_CACHE_MB", "8192", int_parser(1),
             "Memory budget of each worker's resident model cache; least recently used models are evicted "
             "beyond it."),
    Variable("LDM_JOB_QUEUES", "default", parse_list,
             "Job queues this process knows. Give models their own queue (admin: queue name) and start "
             "workers with `rundramatiq --queues NAME` to route models to the hosts that serve them."),
    Variable("LDM_MAX_ACTIVE_JOBS", "20", int_parser(1, 10000),
             "Queued plus running jobs one person may have at once."),
    Variable("LDM_MAX_ACTIVE_TRAININGS", "1", int_parser(1, 100),
             "Queued plus running LoRA trainings one person may have at once (staff are exempt)."),
    Variable("LDM_MAX_BATCH", "8", int_parser(1, 64),
             "Compatible queued jobs (same model, size, steps, sampler; text to image without hires fix, CLIP "
             "guidance or LoRAs) one worker runs together as one batch, in the fair queue's order. 1: one job at a "
             "time."),
    Variable("LDM_BATCH_WINDOW_MS", "100", int_parser(0, 10000),
             "How long a worker that claimed a job waits for compatible companions before it starts a batch; each "
             "companion that arrives opens the window again, up to 5 windows in all. Only while someone else has "
             "submitted to the model in the last 10 s: one person alone on a quiet site never waits. 0: no waiting."),
    Variable("LDM_JOB_MAX_ATTEMPTS", "3", int_parser(1, 100),
             "Attempts for a job whose worker died before it is failed with the reason."),
    Variable("LDM_JOB_TIME_LIMIT_SECONDS", "3600", int_parser(10),
             "Hard time limit of one generation job."),
    Variable("LDM_HEARTBEAT_SECONDS", "5", int_parser(1, 3600),
             "How often a worker records that its running job is alive."),
    Variable("LDM_HEARTBEAT_TIMEOUT_SECONDS", "60", int_parser(2),
             "A running job whose heartbeat is older than this is retried (its worker is presumed dead)."),
    Variable("LDM_REQUEUE_AFTER_SECONDS", "120", int_parser(1),
             "A job still queued this long after its last queue message is sent another one (lost messages)."),
    Variable("LDM_RECOVERY_INTERVAL_SECONDS", "15", int_parser(1),
             "How often the web process looks for lost or stuck jobs."),
    Variable("LDM_UNSAVED_RETENTION_DAYS", "30", int_parser(1),
             "Unsaved private images older than this are deleted by `manage.py purge_unsaved`."),
    Variable("LDM_S3_BUCKET", None, parse_text,
             "Store media (images, thumbnails) in this S3-compatible bucket instead of `$LDM_DATA_DIR/media`, "
             "so workers on other hosts write what the web tier serves."),
    Variable("LDM_S3_ENDPOINT_URL", None, url_parser(("http", "https")),
             "S3 endpoint for non-AWS object stores (MinIO, Ceph, …). Unset: AWS."),
    Variable("LDM_S3_REGION", "us-east-1", parse_text, "S3 region."),
    Variable("LDM_S3_ACCESS_KEY", None, parse_text, "S3 access key id (unset: boto3's usual credential chain)."),
    Variable("LDM_S3_SECRET_KEY", None, parse_text, "S3 secret access key."),
    Variable("LDM_LOGIN_FAILURE_LIMIT", "5", int_parser(1, 1000),
             "Failed logins for one username from one address before it is locked out."),
    Variable("LDM_LOGIN_COOLOFF_MINUTES", "15", int_parser(1, 100000),
             "How long a login lockout lasts."),
    Variable("LDM_API_RATE", "300/min", parse_rate,
             "REST and A1111 API requests one person may make (all tokens and the browser together), "
             "e.g. `300/min`; over it the API answers 429 with `Retry-After`."),
    Variable("LDM_API_GENERATE_RATE", "30/min", parse_rate,
             "Generation submissions through the APIs one person may make, e.g. `30/min`."),
    Variable("LDM_TOKEN_FAILURE_RATE", "20/min", parse_rate,
             "Failed API token authentications (REST, A1111, websockets) one client address may make, e.g. "
             "`20/min`; past it every token from that address is refused with 429 until the window passes."),
    Variable("LDM_DAILY_IMAGE_QUOTA", "500", int_parser(0),
             "Images one person may request per day (UTC), queued, running and finished together; "
             "staff are exempt, 0 turns the quota off."),
    Variable("LDM_A1111_TIMEOUT_SECONDS", "600", int_parser(1, 86400),
             "How long `/sdapi/v1/txt2img` waits for its job; past it the job goes on and the answer is "
             "202 with the job's address."),
    Variable("LDM_OUTPUT_CHECK", "none", parse_output_check,
             "Check run on each finished image before it can be published: `none`, "
             "`safety-checker:<dir>` (diffusers' Stable Diffusion safety checker from a local directory) or "
             "a dotted path to a callable `check(image, metadata)` returning a reason to hold it. A flagged "
             "image, or one the check fails on, stays private and waits for staff review."),
    Variable("LDM_EMAIL_BACKEND", "console", choice_parser(("console", "smtp")),
             "How the site sends email (password resets): `console` prints each message to the server's "
             "standard output (the log of `make run`), `smtp` sends it through `EMAIL_HOST`."),
    Variable("EMAIL_HOST", "localhost", parse_text, "SMTP server when `LDM_EMAIL_BACKEND` is `smtp`."),
    Variable("EMAIL_PORT", "587", int_parser(1, 65535), "SMTP port."),
    Variable("EMAIL_HOST_USER", "", parse_text, "SMTP user name (empty: no authentication)."),
    Variable("EMAIL_HOST_PASSWORD", "", parse_text, "SMTP password."),
    Variable("EMAIL_USE_TLS", "true", parse_bool, "STARTTLS to the SMTP server (port 587)."),
    Variable("EMAIL_USE_SSL", "false", parse_bool,
             "Implicit TLS to the SMTP server (port 465); not together with `EMAIL_USE_TLS`."),
    Variable("DEFAULT_FROM_EMAIL", "ldmsite <noreply@localhost>", parse_text,
             "Sender address of the site's email."),
    Variable("LDM_LOG_LEVEL", "info", choice_parser(("debug", "info", "warning", "error")),
             "Log level of ldmsite's own loggers."),
)


def read_variable(variable: Variable, environ: Mapping[str, str]) -> Any:
    raw = environ.get(variable.name)
    if raw is None:
        raw = variable.default
    if raw is None:
        return None
    return variable.parse(variable.name, raw)


def persistent_secret_key(data_dir: Path) -> str:
    """Read the secret key from the data directory, creating it on first start.

    The file is created exclusively so two processes starting at once agree on one key.
    """
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
    key = key_file.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{key_file} is empty; delete it to generate a new SECRET_KEY.")
    return key


def load_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse every variable; derive what follows from them."""
    config = {variable.name: read_variable(variable, environ) for variable in VARIABLES}
    data_dir: Path = config["LDM_DATA_DIR"]
    config["SCALE_OUT"] = config["REDIS_URL"] is not None
    if config["EMAIL_USE_TLS"] and config["EMAIL_USE_SSL"]:
        raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on; port 587 takes TLS, "
                                   "465 takes SSL.")
    if config["DATABASE_URL"] is None:
        config["DATABASE_URL"] = f"sqlite:///{data_dir / 'db.sqlite3'}"
    if not config["SECRET_KEY"]:
        if config["SCALE_OUT"]:
            raise ImproperlyConfigured(
                "SECRET_KEY must be set when REDIS_URL is set (scale-out mode): every web and worker "
                "process must share the same key."
            )
        config["SECRET_KEY"] = persistent_secret_key(data_dir)
    return config
