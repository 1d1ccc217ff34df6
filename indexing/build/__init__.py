"""Building an image index, one pipeline for both backends.

``files`` (the photos under the inputs) -> ``plan`` (new, changed, renamed, deleted) -> ``driver`` (one
process or every torchrun rank, ``shards``; embedding in chunks, ``embedding``) -> a writer
(``bundle_writer``: an Annoy bundle; ``postgres_writer``: a PostgreSQL collection) -> ``report``.
"""
