"""The lock protocol between runners (leases, fences), in containers.

The tests of tests.integration.test_lock_protocol, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_lock_protocol import *  # noqa: F403
