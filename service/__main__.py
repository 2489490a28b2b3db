"""``python -m sparsetrain.service serve``."""

import sys

from sparsetrain.service.server import main

sys.exit(main())
