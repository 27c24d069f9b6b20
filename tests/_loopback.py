"""HTTP servers on 127.0.0.1 for the download tests (never any other address)."""

from __future__ import annotations

import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(SimpleHTTPRequestHandler):
    """Static-file handler that keeps pytest output clean."""

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(handler):
    """Run ``handler`` on 127.0.0.1 (free port) in a thread; yield the base URL; stop on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_folder(folder: Path):
    """Serve the files under ``folder``; see :func:`serve`."""
    return serve(functools.partial(QuietHandler, directory=str(folder)))
