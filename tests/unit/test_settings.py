"""Settings come from the environment once, and a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common import SettingsError, load_settings
from services.cli import build_parser


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert (settings.gateway_port, settings.ingestor_port, settings.mockai_port) == (
        8001,
        8002,
        1573,
    )
    assert settings.data_dir == Path(".ragpoc")
    assert settings.sqlalchemy_url.startswith("sqlite+aiosqlite:///")
    assert settings.sqlalchemy_url.endswith(".ragpoc/ragpoc.db")


def test_environment_values_are_converted_to_their_types() -> None:
    settings = load_settings(
        {"GATEWAY_PORT": "9001", "TEST_HOLD_SECONDS": "1.5", "RAGPOC_DEV": "1"}
    )
    assert (settings.gateway_port, settings.test_hold_seconds, settings.dev) == (9001, 1.5, True)


def test_a_postgres_url_gets_the_async_driver() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u@db:5432/rag"})
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@db:5432/rag"


def test_a_malformed_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_PORT"):
        load_settings({"GATEWAY_PORT": "eighty"})


def test_help_lists_every_subcommand_and_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for word in ("up", "gateway", "runner", "ingestor", "projector", "mockai", "REDIS_URL"):
        assert word in out


def test_every_service_settings_struct_loads_and_fails_the_same_way() -> None:
    from services.ingestor.settings import IngestSettings
    from services.mockai.settings import MockaiSettings

    assert IngestSettings.from_env({"RAGPOC_CHUNK_SIZE": "500"}).chunk_size == 500
    assert MockaiSettings.from_env({}).embedding_dims == 256
    with pytest.raises(SettingsError, match="RAGPOC_CHUNK_SIZE"):
        IngestSettings.from_env({"RAGPOC_CHUNK_SIZE": "ten"})
    with pytest.raises(SettingsError, match="MOCKAI_EMBEDDING_DIMS"):
        MockaiSettings.from_env({"MOCKAI_EMBEDDING_DIMS": "0"})
    with pytest.raises(SettingsError, match="RAGPOC_CHUNK_OVERLAP"):  # a rule across fields
        IngestSettings.from_env({"RAGPOC_CHUNK_SIZE": "100", "RAGPOC_CHUNK_OVERLAP": "100"})


def test_help_lists_the_variables_of_every_settings_struct(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for variable in ("RUNNER_METRICS_PORT", "RAGPOC_CHUNK_SIZE", "MOCKAI_EMBEDDING_DIMS"):
        assert variable in out
