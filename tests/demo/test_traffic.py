"""Demo traffic helpers against a stand-in server that answers with a version header."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from loopml.demo.traffic import VERSION_HEADER, replay, wait_for_version
from loopml.errors import ServeError


@pytest.fixture
def server():
    """Answers /invocations with prediction [0]; version "1" for the first 3 requests, then "2"."""
    seen = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen["n"] += 1
            body = json.dumps({"predictions": [0]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header(VERSION_HEADER, "1" if seen["n"] <= 3 else "2")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_wait_for_version_returns_the_version_not_a_prediction(server):
    rows = pd.DataFrame({"amount": [12.5] * 5})
    # the prediction [0] must not be reported as if it were a count of answers
    assert wait_for_version(server, rows.head(1), "2") == "2"
    assert replay(server, rows, ["amount"], workers=1) == {"2": 5}  # then: 5 answers, all by v2


def test_wait_for_version_gives_up_with_a_clear_error(server):
    with pytest.raises(ServeError, match="expected 7"):
        wait_for_version(server, pd.DataFrame({"amount": [1.0]}), "7", timeout=1.0)
