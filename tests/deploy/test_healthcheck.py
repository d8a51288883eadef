"""deploy/healthcheck.py, the image's HEALTHCHECK: picks the right port per process and tells up from down."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conduit_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    return load()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("cmdline", "environ", "expected"),
    [
        (["/opt/venv/bin/python", "/opt/venv/bin/conduit", "proxy"], {}, "http://127.0.0.1:8080/ready"),
        (["/opt/venv/bin/python", "/opt/venv/bin/conduit"], {}, "http://127.0.0.1:8080/ready"),
        (["python", "conduit", "importer"], {"CONDUIT_IMPORTER_HTTP_PORT": "9001"}, "http://127.0.0.1:9001/ready"),
        (["python", "conduit", "importer"], {}, "http://127.0.0.1:8081/ready"),
        # The deprecated names: the command, and the port variable where the new one is not set.
        (["python", "conduit", "worker"], {"CONDUIT_WORKER_HTTP_PORT": "9001"}, "http://127.0.0.1:9001/ready"),
        (["python", "conduit", "importer"], {"CONDUIT_WORKER_HTTP_PORT": "9001"}, "http://127.0.0.1:9001/ready"),
        (
            ["python", "conduit", "importer"],
            {"CONDUIT_WORKER_HTTP_PORT": "9001", "CONDUIT_IMPORTER_HTTP_PORT": "9002"},
            "http://127.0.0.1:9002/ready",
        ),
        (["python", "arq", "services.importer.worker.WorkerSettings"], {}, "http://127.0.0.1:8081/ready"),
        (["python", "conduit", "scheduler"], {}, "http://127.0.0.1:8082/ready"),
        (["python", "conduit", "demo-api"], {"CONDUIT_DEMO_PORT": "9090"}, "http://127.0.0.1:9090/health_check"),
        (["python", "conduit", "migrate"], {}, None),
    ],
)
def test_target_follows_the_running_command(
    healthcheck: ModuleType, cmdline: list[str], environ: dict[str, str], expected: str | None
) -> None:
    assert healthcheck.target_for(cmdline, environ) == expected


def test_ready_service_is_healthy(healthcheck: ModuleType, server: int) -> None:
    assert healthcheck.main(["healthcheck", f"http://127.0.0.1:{server}/ready"]) == 0
    assert healthcheck.main(["healthcheck", f"tcp://127.0.0.1:{server}"]) == 0


def test_failing_or_absent_service_is_unhealthy(healthcheck: ModuleType, server: int) -> None:
    assert healthcheck.main(["healthcheck", f"http://127.0.0.1:{server}/health_check"]) == 1
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = closed.server_address[1]
    closed.server_close()
    assert healthcheck.main(["healthcheck", f"http://127.0.0.1:{port}/ready"]) == 1
    assert healthcheck.main(["healthcheck", f"tcp://127.0.0.1:{port}"]) == 1


def test_probe_ignores_http_proxy_settings(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert load().probe(f"http://127.0.0.1:{server}/ready")
