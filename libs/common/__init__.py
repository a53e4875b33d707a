"""Settings, errors, logging, shutdown and the SQL database plumbing every service shares."""

from libs.common.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
