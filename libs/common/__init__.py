"""Settings, logging and database plumbing shared by every service."""

from libs.common.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
