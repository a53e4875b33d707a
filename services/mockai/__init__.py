"""mockai: an OpenAI-compatible mock server (see :mod:`services.mockai.app`)."""

from services.mockai.app import create_app

__all__ = ["create_app"]
