"""API plumbing shared by the apps' REST and A1111 views, wired in `settings.REST_FRAMEWORK`:

- `authentication`: personal access tokens (Bearer, and Basic for A1111 clients) and token scopes;
- `throttles`: per-person request and submission rates;
- `errors`: the one mapping of refusals (`generation.admission.Refusal`, DRF's own) to JSON bodies;
- `pagination`: keyset pages, newest first;
- `urls`: the /api/v1/ and /sdapi/v1/ routes, and `schema`: the OpenAPI error answers.

The apps never import this package: their views use DRF's defaults, which settings point here.
"""
