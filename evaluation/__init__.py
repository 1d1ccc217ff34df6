"""Quality measurement: test metrics (``metrics``), reports (``report``), ``python -m evaluation``."""
