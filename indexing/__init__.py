"""Word vectors and Annoy index bundles."""

import os

# Before torch loads OpenMP (tag.py, index building): idle OpenMP threads sleep instead of spinning, which
# kept inference ~10x faster when another process was busy on the same cores (see the Makefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
