"""Test-time scoring shared by ``train.py test`` (the LightningModule) and ``python -m evaluation``.

Pure functions over predictions and label spaces: no models, data modules or files, so both callers
import the same code and neither imports the other.
"""
