"""Settings: parsing every kind of value from the environment, the errors a bad one gives (in Python, through the
CLI and through gunicorn), and the generated configuration page."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import config_docs
from shared.config import Settings
from shared.errors import ClassifierError, SettingsError

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


# --- reading ---------------------------------------------------------------------------------------------------------

def test_constructing_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    assert Settings().workers == 1
    assert Settings.from_env().workers == 7


def test_every_kind_of_value_parses() -> None:
    settings = Settings.from_env({
        "WEB_CONCURRENCY": "3", "MEMBER_TIMEOUT_S": "2.5", "MODELS_DIR": "/m", "HISTORY_ENABLED": "off",
        "METRICS_REQUIRE_KEY": "YES", "DEVICE": "cpu", "OCR_DETECTOR": "fp32", "OCR_BACKEND": "torch",
        "OMP_WAIT_POLICY": "active", "MEMBER_URLS": "ocr_nb=http://a:1/, clip_svm=https://b", "SERVICE_PORTS":
        "ocr_nb=7000", "OCR_MAX_BOXES": "0", "GATEWAY_SLACK_SHARE": "1", "CLIP_MODEL": "RN50",
    })
    assert (settings.workers, settings.member_timeout_s, settings.models_dir) == (3, 2.5, Path("/m"))
    assert (settings.history_enabled, settings.metrics_require_key) == (False, True)
    assert (settings.device, settings.ocr_detector, settings.ocr_backend) == ("cpu", "fp32", "torch")
    assert settings.omp_wait_policy == "ACTIVE" and settings.ocr_max_boxes == 0 and settings.clip_model == "RN50"
    assert settings.member_url_map() == {"ocr_nb": "http://a:1", "clip_svm": "https://b"}
    assert settings.port_map() == {"ocr_nb": 7000}


def test_an_empty_variable_means_its_default() -> None:
    empty = {variable: "" for variable in Settings.env_names().values()}
    assert Settings.from_env(empty) == Settings()


@pytest.mark.parametrize("word, value", [(w, True) for w in ("1", "true", "Yes", "ON")]
                         + [(w, False) for w in ("0", "False", "no", "off")])
def test_boolean_words(word: str, value: bool) -> None:
    assert Settings.from_env({"HISTORY_KEEP_IMAGES": word}).history_keep_images is value


def test_keyword_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"WEB_CONCURRENCY": "3", "DEVICE": "cuda"}, workers=5)
    assert (settings.workers, settings.device) == (5, "cuda")


def test_to_env_is_the_inverse_of_from_env() -> None:
    settings = Settings(workers=3, member_timeout_s=2.5, history_enabled=False, models_dir=Path("/m"),
                        member_urls="ocr_nb=http://a:1", omp_wait_policy="ACTIVE")
    assert Settings.from_env(settings.to_env()) == settings
    assert settings.to_env()["HISTORY_ENABLED"] == "0" and settings.to_env()["WEB_CONCURRENCY"] == "3"


def test_immutable_hashable_and_replaced_by_copy() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.workers = 3  # type: ignore[misc]
    assert hash(settings) == hash(Settings()) and {settings: 1}[Settings()] == 1
    changed = settings.replace(workers=3)
    assert (changed.workers, settings.workers) == (3, 1)


# --- bad values ------------------------------------------------------------------------------------------------------

BAD_VALUES = [  # variable, value, what the message says was expected
    ("MEMBER_TIMEOUT_S", "abc", "valid number"),                    # not a float
    ("WEB_CONCURRENCY", "1.5", "valid integer"),                    # not an int
    ("MAX_IMAGE_BYTES", "-5", "greater than 0"),                    # negative
    ("OCR_MAX_BOXES", "-1", "greater than or equal to 0"),          # negative where 0 means "all"
    ("GUNICORN_THREADS", "0", "greater than or equal to 1"),        # zero where one is the least
    ("GATEWAY_DEADLINE_S", "0", "greater than 0"),                  # zero seconds
    ("GATEWAY_SLACK_SHARE", "1.5", "less than or equal to 1"),      # past a share's range
    ("BATCH_MAX_WAIT_MS", "nan", "finite number"),                  # not finite
    ("DEVICE", "gpu", "'auto', 'cpu' or 'cuda'"),                   # out of choices
    ("OCR_DETECTOR", "fp16", "'auto', 'int8' or 'fp32'"),
    ("OCR_BACKEND", "tensorrt", "'onnx' or 'torch'"),
    ("OMP_WAIT_POLICY", "spin", "'PASSIVE' or 'ACTIVE'"),
    ("HISTORY_ENABLED", "maybe", "1/0/true/false/yes/no/on/off"),   # bad bool
    ("METRICS_REQUIRE_KEY", "2", "1/0/true/false/yes/no/on/off"),
    ("MEMBER_URLS", "ocr_nb", "name=url pairs"),                    # malformed pairs
    ("MEMBER_URLS", "ocr_nb=http://a:1,=http://b:2", "name=url pairs"),
    ("MEMBER_URLS", "ocr_nb=ftp://a", "http:// or https:// URL"),
    ("MEMBER_URLS", "ocr_nb=http://a:1,ocr_nb=http://b:2", "each name once"),
    ("SERVICE_PORTS", "ocr_nb:5000", "name=port pairs"),
    ("SERVICE_PORTS", "ocr_nb=abc", "port number 1-65535"),
    ("SERVICE_PORTS", "ocr_nb=70000", "port number 1-65535"),
    ("HISTORY_DB", "mysql://app@127.0.0.1:3306/history", "a SQLite file path or a postgresql"),
]


def test_a_refused_database_url_is_shown_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"HISTORY_DB": "mysql://app:s3cret@db/history"})
    assert "mysql://app:***@db/history" in caught.value.message and "s3cret" not in caught.value.message


def test_history_db_takes_a_path_or_a_postgresql_url() -> None:
    assert Settings.from_env({"HISTORY_DB": "postgresql://u:p@h:5432/d"}).history_db == "postgresql://u:p@h:5432/d"
    assert Settings.from_env({}).history_db == "models/history.sqlite3"


@pytest.mark.parametrize("variable, value, expected", BAD_VALUES)
def test_a_bad_value_names_the_variable_the_value_and_what_was_expected(variable: str, value: str,
                                                                        expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert f"{variable}={value!r}" in caught.value.message and expected in caught.value.message


def test_one_error_names_every_bad_variable_and_no_good_one() -> None:
    env = {variable: value for variable, value, _ in BAD_VALUES} | {"WEB_CONCURRENCY": "2"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    lines = caught.value.message.splitlines()[1:]
    assert sorted(line.split("=", 1)[0].strip() for line in lines) == sorted({v for v, _, _ in BAD_VALUES} - {
        "WEB_CONCURRENCY"})
    assert isinstance(caught.value, ClassifierError) and isinstance(caught.value, ValueError)


def test_keywords_and_replace_are_checked_too() -> None:
    with pytest.raises(SettingsError, match="WEB_CONCURRENCY=0: Input should be greater than or equal to 1"):
        Settings(workers=0)
    with pytest.raises(SettingsError, match="MEMBER_TIMEOUT_S=-1"):
        Settings().replace(member_timeout_s=-1)
    with pytest.raises(SettingsError, match="no_such_setting"):
        Settings(no_such_setting=1)


@pytest.mark.parametrize("command", [["predict", "x.jpg"], ["train", "--data", "x"], ["evaluate", "--data", "x"],
                                     ["weights", "--synthetic"], ["serve"], ["settings"]])
def test_the_cli_prints_the_message_and_exits_non_zero(command: list[str]) -> None:
    done = run([sys.executable, "-m", "shared", *command], MEMBER_TIMEOUT_S="abc", HISTORY_ENABLED="maybe")
    assert done.returncode == 2, done.stderr
    assert "MEMBER_TIMEOUT_S='abc'" in done.stderr and "HISTORY_ENABLED='maybe'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_service_prints_the_message_and_exits_non_zero() -> None:
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    done = run([gunicorn, "-c", "services/stacking/gunicorn.conf.py"], MAX_IMAGE_BYTES="-5")
    assert done.returncode != 0
    assert "MAX_IMAGE_BYTES='-5'" in done.stderr and "greater than 0" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_the_settings_command_prints_the_settings_in_effect() -> None:
    done = run([sys.executable, "-m", "shared", "settings"], WEB_CONCURRENCY="3", HISTORY_ENABLED="no")
    assert done.returncode == 0, done.stderr
    assert {"WEB_CONCURRENCY=3", "HISTORY_ENABLED=0", "DEVICE=auto"} <= set(done.stdout.splitlines())


# --- the configuration page ------------------------------------------------------------------------------------------

def test_the_configuration_page_is_the_generated_one() -> None:
    assert config_docs.PAGE.exists(), f"{config_docs.PAGE} is missing: run `{config_docs.REGENERATE}`"
    assert config_docs.PAGE.read_text(encoding="utf-8") == config_docs.markdown(), (
        f"{config_docs.PAGE.relative_to(REPO)} differs from the settings: run `{config_docs.REGENERATE}`")


def test_the_page_lists_every_setting_and_deploy_variable() -> None:
    page = config_docs.markdown()
    for variable in [*Settings.env_names().values(), *(var.name for var in config_docs.DEPLOY_VARIABLES)]:
        assert f"| `{variable}` |" in page
    assert "| `MAX_IMAGE_BYTES` | `20971520` | integer > 0 |" in page


def test_the_settings_command_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    done = run([sys.executable, "-m", "shared", "settings", "--markdown", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == config_docs.markdown()


def _reads(text: str, name: str) -> bool:
    """Whether a compose/stack/shell file (${NAME), Dockerfile (ARG NAME) or Makefile ($(NAME), NAME ?=) reads it."""
    escaped = re.escape(name)
    pattern = rf"\$\{{{escaped}\b|\$\({escaped}\)|^\s*(export\s+)?{escaped}\s*\?=|^ARG {escaped}\b"
    return re.search(pattern, text, re.MULTILINE) is not None


@pytest.mark.parametrize("var", config_docs.DEPLOY_VARIABLES, ids=lambda var: var.name)
def test_each_deploy_variable_is_read_where_the_page_says(var: config_docs.DeployVariable) -> None:
    for path in var.read_in:
        assert _reads((REPO / path).read_text(encoding="utf-8"), var.name), f"{var.name} is not read in {path}"


@pytest.mark.parametrize("path", [config_docs.COMPOSE, config_docs.SWARM, config_docs.DOCKERFILE,
                                  config_docs.BASE_SCRIPT, config_docs.MAKEFILE])
def test_every_variable_a_deploy_file_reads_is_documented(path: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    found = re.findall(r"\$\{([A-Z_][A-Z0-9_]*)|^ARG ([A-Z_][A-Z0-9_]*)|^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)\s*\?=",
                       text, re.MULTILINE)
    assigned = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", text, re.MULTILINE))  # a script's own variables
    read = {name for groups in found for name in groups if name} - assigned
    documented = {var.name for var in config_docs.DEPLOY_VARIABLES if path in var.read_in}
    assert read - documented == set(), f"{path} reads variables config_docs.DEPLOY_VARIABLES does not list"
