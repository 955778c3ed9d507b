"""ASGI entry point: Django for HTTP, Channels for websockets, and in embedded
mode the Dramatiq worker threads, all in one server process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ldmsite.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from generation.routing import websocket_urlpatterns  # noqa: E402
from generation.workers import start_embedded_worker, start_recovery_loop  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

if settings.EMBEDDED_WORKER_THREADS:
    start_embedded_worker(settings.EMBEDDED_WORKER_THREADS)
start_recovery_loop(settings.LDM_RECOVERY_INTERVAL_SECONDS)
