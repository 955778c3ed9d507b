"""ASGI entry point: Django for HTTP, Channels for websockets, and in embedded
mode the Dramatiq worker threads, all in one server process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ldmsite.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from generation.recovery import start_recovery_loop  # noqa: E402  (imports the actors, generation.tasks)
from generation.workers import start_embedded_worker  # noqa: E402
from ldmsite.websockets import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})

if settings.EMBEDDED_WORKER_THREADS:
    start_embedded_worker(settings.EMBEDDED_WORKER_THREADS)
start_recovery_loop(settings.LDM_RECOVERY_INTERVAL_SECONDS)
