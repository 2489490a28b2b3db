"""``python -m sparsetrain``: the command line."""

import sys

from sparsetrain.cli import main

sys.exit(main())
