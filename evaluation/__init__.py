"""Quality measurement: test metrics (``metrics``), reports (``report``), ``python -m evaluation``."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see indexing/__init__.py
