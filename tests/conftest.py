"""Session-wide test settings."""

from __future__ import annotations

import torch

# The test problems are tiny: on a busy 2-core machine a second intra-op thread only adds
# scheduler stalls, so every test runs torch on one thread.
torch.set_num_threads(1)
