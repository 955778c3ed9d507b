"""Settings come from the environment; a bad value names its variable."""

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ldmsite.config import VARIABLES, load_config

REPO = Path(__file__).resolve().parent.parent


def config_for(tmp_path, **environ):
    return load_config({"LDM_DATA_DIR": str(tmp_path), **environ})


def test_defaults_give_embedded_mode_with_sqlite_in_the_data_dir(tmp_path):
    config = config_for(tmp_path)
    assert config["SCALE_OUT"] is False
    assert config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert config["DEBUG"] is False
    assert "127.0.0.1" in config["ALLOWED_HOSTS"]


def test_embedded_mode_generates_a_secret_key_once_and_keeps_it(tmp_path):
    first = config_for(tmp_path)["SECRET_KEY"]
    second = config_for(tmp_path)["SECRET_KEY"]
    assert len(first) >= 50
    assert first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0, "the key file must be private to its owner"


def test_scale_out_mode_requires_a_secret_key(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        config_for(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0")
    config = config_for(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0", SECRET_KEY="x" * 60)
    assert config["SCALE_OUT"] is True


@pytest.mark.parametrize(
    "variable, value",
    [
        ("DEBUG", "maybe"),
        ("LDM_HTTPS", "2"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://localhost:6379"),
        ("LDM_WORKER_THREADS", "many"),
        ("LDM_WORKER_THREADS", "-1"),
        ("LDM_LOGIN_FAILURE_LIMIT", "0"),
        ("LDM_HSTS_SECONDS", "1.5"),
        ("LDM_LOG_LEVEL", "loud"),
        ("LDM_DATA_DIR", ""),
    ],
)
def test_a_bad_value_raises_improperly_configured_naming_the_variable(tmp_path, variable, value):
    environ = {"LDM_DATA_DIR": str(tmp_path), variable: value}
    with pytest.raises(ImproperlyConfigured) as error:
        load_config(environ)
    assert variable in str(error.value)


def test_the_readme_configuration_table_lists_every_variable_the_settings_read():
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == {variable.name for variable in VARIABLES}
