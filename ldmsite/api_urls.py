"""REST API routes: /api/v1/ (ldmsite's own), /api/schema/ and /api/docs/, and /sdapi/v1/ (A1111)."""

urlpatterns: list = []
