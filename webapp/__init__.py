"""The local web app behind ``serve.py``: pages, JSON API, thumbnails (see webapp/app.py)."""
