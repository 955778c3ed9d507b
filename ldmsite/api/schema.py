"""OpenAPI: the error answers every operation may give (a drf-spectacular postprocessing hook,
named in ``SPECTACULAR_SETTINGS``). The bodies are the ones `ldmsite.api.errors` writes."""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in words"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Refused input: field name (`__all__`: the request as a whole) -> message"},
        "limit": {"type": "string", "enum": ["request_rate", "generate_rate", "active_jobs", "daily_images"],
                  "description": "429 only: which limit was reached"},
    },
    "required": ["detail"],
}
A1111_VALIDATION_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "array", "items": {
        "type": "object",
        "properties": {"loc": {"type": "array", "items": {"type": "string"}}, "msg": {"type": "string"},
                       "type": {"type": "string"}},
        "required": ["loc", "msg", "type"]}}},
    "required": ["detail"],
}
ERROR_DESCRIPTIONS = {
    "400": "Refused input (malformed JSON, wrong types, out-of-range values, unknown fields, bad cursor)",
    "401": "No credentials, or a token that is invalid, expired or revoked",
    "403": "The token lacks the scope, the session lacks the CSRF token, or only the owner may do this",
    "404": "No such object, or one you may not see",
    "413": "The body is too large (JSON: 32 MB; a multipart or form submission with pictures: 54 MB)",
    "415": "The body is not application/json (POST /api/v1/generations/: nor multipart/form-data or a form)",
    "422": "Refused input, in A1111's (FastAPI's) shape",
    "429": "A limit was reached: `limit` says which, `Retry-After` says when to try again",
}


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["A1111ValidationError"] = A1111_VALIDATION_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    a1111_error = {"application/json": {"schema": {"$ref": "#/components/schemas/A1111ValidationError"}}}
    for route, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            codes = ["401", "403", "429"]
            if "{" in route:
                codes.append("404")
            if route.startswith(("/sdapi/", "/internal/")):  # A1111 views: refused input is a 422
                if method == "post":
                    codes.append("422")
            else:
                codes.append("400")
            if "requestBody" in operation or method in ("post", "put", "patch"):
                codes.extend(["413", "415"])
            for code in codes:
                content = a1111_error if code == "422" else error
                if code == "429":
                    responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code], "content": content,
                                                "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                                            "description": "Seconds to wait"}}})
                else:
                    responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code], "content": content})
    return result
