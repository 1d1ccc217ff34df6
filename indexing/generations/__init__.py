"""Generations of a bundle folder (``current`` -> ``gen-<id>/``, swapped by one rename) and its build lock."""
