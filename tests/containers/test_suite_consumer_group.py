"""Consumer groups (ack, reclaim, keep-claim, dead-letter, stop), in containers.

The tests of tests.integration.test_consumer_group, unchanged: this folder's fixtures give them
the suite's Valkey and PostgreSQL containers.
"""

from tests.integration.test_consumer_group import *  # noqa: F403
