"""Word and image indexes, by concern:

- ``ann/``: vector maths (unit vectors, exact top-k), the Annoy forest, the one recall tuner;
- ``bundle/``: the bundle format and its verification; ``generations/``: generations and the build lock;
- ``postgres/``: the PostgreSQL + pgvector backend; ``build/``: the one image-index build for both backends;
- ``word_index``: the tag vocabulary; ``collection``: one interface over both backends; ``queries``: what the
  doors share to answer a query; ``errors``: the index errors; ``__main__``: ``python -m indexing``.
"""

import os

# Before torch loads OpenMP (tag.py, index building): idle OpenMP threads sleep instead of spinning, which
# kept inference ~10x faster when another process was busy on the same cores (see the Makefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
