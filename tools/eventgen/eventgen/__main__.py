import sys

from eventgen.cli import main

sys.exit(main())
