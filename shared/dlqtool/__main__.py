"""``python -m shared.dlqtool`` (in any service image) = ``./pipeline dlq`` (in the repository)."""

import logging
import sys

from shared.dlqtool.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
