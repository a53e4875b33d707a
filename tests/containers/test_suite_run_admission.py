"""Run admission (POST /run-agents) and its duplicate protection, in containers.

The tests of tests.integration.test_run_admission, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_run_admission import *  # noqa: F403
