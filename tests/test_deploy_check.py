"""Production settings pass Django's deployment checklist."""

from tests.conftest import manage, site_env


def test_check_deploy_passes_with_production_variables(tmp_path):
    env = site_env(
        tmp_path,
        SECRET_KEY="k3y-" + "a7Bq9" * 12,
        ALLOWED_HOSTS="ldm.example.com",
        CSRF_TRUSTED_ORIGINS="https://ldm.example.com",
        LDM_HTTPS="true",
        LDM_BEHIND_PROXY="true",
    )
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_with_the_embedded_defaults(tmp_path):
    """The check is real: plain-HTTP defaults are not a production configuration."""
    result = manage(site_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "SECURE_SSL_REDIRECT" in result.stdout + result.stderr


def test_starting_with_a_bad_variable_names_it(tmp_path):
    result = manage(site_env(tmp_path, LDM_WORKER_THREADS="lots"), "check")
    assert result.returncode != 0
    assert "LDM_WORKER_THREADS" in result.stderr
