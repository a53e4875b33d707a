"""Rebuilding the read models on PostgreSQL matches the live projector, in containers.

The tests of tests.integration.test_rebuild, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_rebuild import *  # noqa: F403
