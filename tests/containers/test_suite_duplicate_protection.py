"""Duplicate protection across real gateway and runner processes, in containers.

The tests of tests.e2e.test_duplicate_protection, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.e2e.test_duplicate_protection import *  # noqa: F403
