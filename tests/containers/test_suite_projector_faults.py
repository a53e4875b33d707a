"""Projection on PostgreSQL: bad log entries never stop the projector, in containers.

The tests of tests.integration.test_projector_faults, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_projector_faults import *  # noqa: F403
