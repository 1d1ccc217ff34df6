"""What every door asks: tag photos (``service.tagger.Tagger``) and search an index (``service.searcher.Searcher``).

tag.py, search.py, serve.py's web app and the Python API (``wordsight``) all call these, so one photo or
one query gives the same answer through each. Results are ``service.records`` (one JSON shape each).
Importing this package imports nothing heavy: the modules below load models only when asked to.
"""
