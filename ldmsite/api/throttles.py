"""Per-person request rates: Django REST framework throttles over the cache.

- request rate (``LDM_API_RATE``): every API request of a person (every token and the browser
  session of a person together; anonymous requests count per address);
- generation submissions (``LDM_API_GENERATE_RATE``): views that create jobs set
  ``throttle_generation = True``.

Soft limits: a few requests may slip past them in a race, which is harmless. The hard limits
(active jobs, images per day) are `generation.admission.check_job_limits`. Every refusal is a
`Refusal` with status 429, the limit's name and ``Retry-After``.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from generation.admission import Refusal


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
