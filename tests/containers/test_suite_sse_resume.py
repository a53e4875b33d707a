"""SSE resume with Last-Event-ID, also after a trim, in containers.

The tests of tests.integration.test_sse_resume, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_sse_resume import *  # noqa: F403
