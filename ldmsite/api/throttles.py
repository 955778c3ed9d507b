"""Per-person request rates: Django REST framework throttles over the cache.

- request rate (``LDM_API_RATE``): every API request of a person (every token and the browser
  session of a person together; anonymous requests count per address);
- generation submissions (``LDM_API_GENERATE_RATE``): views that create jobs set
  ``throttle_generation = True``;
- failed token authentications (``LDM_TOKEN_FAILURE_RATE``), per client address: past the limit
  every token from that address is refused, right or wrong, until the window has passed
  (``FailedTokenThrottle``, used by ``ldmsite.api.authentication`` and the websockets).

The client address (``client_address``) is the connection's own, or, only when
``LDM_BEHIND_PROXY`` is on, the last entry of ``X-Forwarded-For`` (the one the proxy in front of
the server wrote; entries before it are whatever the client sent). Login lockout (django-axes,
``AXES_CLIENT_IP_CALLABLE``) uses the same rule.

Soft limits: a few requests may slip past them in a race, which is harmless. The hard limits
(active jobs, images per day) are `generation.admission.check_job_limits`. Every refusal is a
`Refusal` with status 429, the limit's name and ``Retry-After``.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from generation.admission import Refusal


def address_from(remote_addr: str | None, forwarded_for: str | None) -> str:
    """The client's address from the connection's address and the X-Forwarded-For header."""
    if settings.LDM_BEHIND_PROXY and forwarded_for:
        entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
        if entries:
            try:
                return str(ipaddress.ip_address(entries[-1]))
            except ValueError:
                pass  # not an address: count the proxy's own, as if there were no header
    return remote_addr or ""


def client_address(request) -> str:
    """The client address of a Django request (also django-axes' ``AXES_CLIENT_IP_CALLABLE``)."""
    return address_from(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def scope_client_address(scope) -> str:
    """The client address of an ASGI (websocket) connection, by the same rule."""
    forwarded = None
    for name, value in scope.get("headers") or []:
        if name.lower() == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
    client = scope.get("client") or (None,)
    return address_from(client[0], forwarded)


class PersonRateThrottle(SimpleRateThrottle):
    """Every API request of a person counts; anonymous requests count per address."""

    scope = "api"
    rate_setting = "LDM_API_RATE"
    limit = "request_rate"
    what = "API requests"

    def get_rate(self):
        return getattr(settings, self.rate_setting)  # read per request, so settings may change

    def applies(self, request, view) -> bool:
        return True

    def allow_request(self, request, view):
        if not self.applies(request, view):
            return True
        return super().allow_request(request, view)

    def get_ident(self, request):
        return client_address(request)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        who = f"person:{user.pk}" if user is not None and user.is_authenticated else f"address:{self.get_ident(request)}"
        return f"ldmsite.throttle.{self.scope}.{who}"

    def throttle_failure(self):
        count, period = self.rate.split("/")
        raise Refusal({"__all__": f"Too many {self.what}: the limit is {count} per {period} per person "
                                  f"({self.rate_setting})."}, status=429, limit=self.limit, retry_after=self.wait())


class GenerationRateThrottle(PersonRateThrottle):
    """Submissions: views that create jobs set ``throttle_generation = True``."""

    scope = "generate"
    rate_setting = "LDM_API_GENERATE_RATE"
    limit = "generate_rate"
    what = "generation submissions"

    def applies(self, request, view) -> bool:
        return request.method == "POST" and getattr(view, "throttle_generation", False)


class FailedTokenThrottle(SimpleRateThrottle):
    """Failed token authentications per client address (``LDM_TOKEN_FAILURE_RATE``).

    Only failures are counted (`record_failure`); `check` refuses every token from an address
    that is over the limit, before the token is looked at, so guessing gets no answer at all.
    """

    scope = "token_failures"
    limit = "token_failures"

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def get_rate(self):
        return settings.LDM_TOKEN_FAILURE_RATE

    def get_cache_key(self, request=None, view=None):
        return f"ldmsite.throttle.{self.scope}.address:{self.address}"

    def recent_failures(self) -> list[float]:
        self.key = self.get_cache_key()
        self.now = self.timer()
        return [moment for moment in self.cache.get(self.key, []) if moment > self.now - self.duration]

    def check(self) -> None:
        """Raise a 429 `Refusal` when this address has failed too often lately."""
        history = self.recent_failures()  # newest first
        if len(history) >= self.num_requests:
            # Under the limit again when the failure that filled it is older than the window.
            filling = history[self.num_requests - 1]
            count, period = self.rate.split("/")
            raise Refusal({"__all__": f"Too many failed token attempts from your address: the limit is {count} "
                                      f"per {period} (LDM_TOKEN_FAILURE_RATE). Try again later."},
                          status=429, limit=self.limit, retry_after=max(1.0, self.duration - (self.now - filling)))

    def record_failure(self) -> None:
        history = self.recent_failures()
        history.insert(0, self.now)
        self.cache.set(self.key, history, self.duration)
