"""The scale-out compose file parses and speaks the same variables as the settings."""

from pathlib import Path

import yaml

from ldmsite.config import VARIABLES

REPO = Path(__file__).resolve().parent.parent


def load():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_the_compose_file_defines_the_scale_out_services_with_health_checks():
    services = load()["services"]
    assert {"db", "redis", "web", "worker", "worker-cpu"} <= set(services)
    for name in ("db", "redis", "web"):
        assert "healthcheck" in services[name], name
    for name in services:
        assert services[name].get("restart") == "unless-stopped", name
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert "rundramatiq" in " ".join(services["worker"]["command"])


def test_every_variable_the_compose_file_sets_is_one_the_settings_read():
    known = {variable.name for variable in VARIABLES}
    compose = load()
    app_services = [s for name, s in compose["services"].items() if name in ("web", "worker", "worker-cpu")]
    for service in app_services:
        environment = service["environment"]
        assert set(environment) <= known, set(environment) - known
        assert environment["REDIS_URL"].startswith("redis://") and environment["DATABASE_URL"].startswith("postgres://")
