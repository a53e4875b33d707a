"""`python -m services.cli ...` is `ragpoc ...` (how `ragpoc up` starts its children)."""

import sys

from services.cli.main import main

sys.exit(main())
