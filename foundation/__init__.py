"""The ground floor: image I/O, word vectors, atomic writes, errors, hashing and sharding.

Every feature room (datamodules, models, indexing, evaluation) imports from here; nothing here imports
a feature room, so these foundations can never pull a feature (or torch) into a caller that does not need it.
"""
