"""``python -m pipelines.cli``: the same entry point as the ``lrouter`` console script."""

import sys

from pipelines.cli.parser import main

sys.exit(main())
