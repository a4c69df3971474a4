"""Training tells no one what it trains: the hub's telemetry is off unless the user opts in.

Each case runs in a fresh Python process whose hub endpoint is a real HTTP server on
loopback that counts the requests it gets; TRL's trainers send their telemetry through
`huggingface_hub.utils.send_telemetry`, which is what the child calls (building its
headers also fetches the hub's agent-harness registry: a second request, gone with it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CHILD = r"""
import sys, time
if sys.argv[1] == "import-training-late":
    import huggingface_hub.utils  # the hub is loaded first, as a notebook might have it
    import training  # noqa: F401
elif sys.argv[1] == "import-training":
    import training  # noqa: F401
from huggingface_hub.utils import send_telemetry
send_telemetry(topic="trl/SFTTrainer", library_name="trl", library_version="0")
time.sleep(1.0)  # the ping goes out from a daemon thread
"""


@pytest.fixture
def hub():
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def run_child(mode: str, endpoint: str, **env: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "SATSANG_HF_TELEMETRY")}
    environment.update(HF_ENDPOINT=endpoint, NO_PROXY="127.0.0.1", **env)
    subprocess.run([sys.executable, "-c", CHILD, mode], env=environment, check=True, timeout=120)


@pytest.mark.parametrize("mode", ["import-training", "import-training-late"])
def test_training_sends_no_telemetry(hub, mode):
    endpoint, hits = hub
    run_child(mode, endpoint)
    assert hits == []


def test_telemetry_is_sent_when_the_user_opts_in(hub):
    endpoint, hits = hub  # also shows that the probe would see a ping: without training the hub gets it
    run_child("import-training", endpoint, SATSANG_HF_TELEMETRY="1")
    assert any(hit.startswith("/api/telemetry/trl") for hit in hits), hits
