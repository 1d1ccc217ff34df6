"""Running the web app: open the indexes, bind the socket, serve with uvicorn until Ctrl-C.

The socket is bound here, before uvicorn starts, so a port already in use is one line and exit 2 (like
every other mistake a user can fix), and ``--port 0`` can pick a free port and still print the real URL.
"""

from __future__ import annotations

import logging
import socket
import sys

import cli.options
import cli.output
from foundation.errors import EXIT_OK, UsageError
from webapp.app import create_app
from webapp.library import Library
from webapp.thumbnails import ThumbnailCache, default_cache_dir
from webapp.uploads import share_malloc_arenas

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; UsageError naming the fix if that is not possible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UsageError(f"cannot listen on --host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = "pass another --port (0 picks a free one)" if port else "check --host"
        raise UsageError(f"cannot listen on {host}:{port} ({err.strerror}): {hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def load_embedder(spec: str | None):
    from models.embedder import load_embedder  # torch: only once a photo is uploaded

    return load_embedder(spec)


def build(args, load_embedder=load_embedder):
    """The app for serve.py's arguments (indexes opened now: a bad one stops here with its fix)."""
    library = Library.open(args.index, args.words_index, load_embedder, args.checkpoint)
    thumbnails = ThumbnailCache(args.thumbnail_cache or default_cache_dir())
    network = args.host not in LOOPBACK
    return create_app(
        library,
        thumbnails,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        allowed_hosts=["*"] if network else None,
    )


def serve(args) -> int:
    """serve.py's body: serve until Ctrl-C (SIGINT) or SIGTERM, finishing the requests under way."""
    import uvicorn  # only once the arguments and indexes are known to be good

    logging.basicConfig(level=logging.WARNING, format="serve.py: %(message)s", stream=sys.stderr)
    share_malloc_arenas()
    app = build(args)
    if args.host not in LOOPBACK:
        cli.output.log(
            f"serve.py: warning: --host {args.host} makes your photos, their tags and their file paths "
            "visible to every machine that can reach this one on the network; the default 127.0.0.1 keeps "
            "them on this machine"
        )
    sock = bind(args.host, args.port)
    names = ", ".join(app.state.library.indexes)
    cli.output.log(f"serve.py: serving {names} at {url_of(sock)} (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down first, then hands the signal back
        pass
    finally:
        sock.close()
    cli.output.log("serve.py: stopped")
    return EXIT_OK
