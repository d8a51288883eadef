"""`conduit console` as a process: refuses to start open, serves, logs JSON lines, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
from pydantic import SecretStr

from tests.importer.conftest import Database, write_tenants

CONDUIT = str(Path(sys.executable).with_name("conduit"))


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    return env | extra


def test_the_console_will_not_start_without_a_way_to_sign_in(tmp_path: Path) -> None:
    done = subprocess.run([CONDUIT, "console"], env=environment(), capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "CONDUIT_CONSOLE_TOKEN" in done.stderr and "Traceback" not in done.stderr


def test_a_short_sign_in_token_is_refused_without_repeating_it() -> None:
    short = "guess-me-quick"
    env = environment(CONDUIT_CONSOLE_TOKEN=short)
    done = subprocess.run([CONDUIT, "console"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "CONDUIT_CONSOLE_TOKEN must be at least 16 characters" in done.stderr
    assert short not in done.stderr + done.stdout


def test_serves_and_stops_cleanly_on_sigterm(
    db: Database, redis_url: str, token_key: SecretStr, tmp_path: Path, unused_tcp_port: int
) -> None:
    env = environment(
        CONDUIT_REDIS_URL=redis_url, CONDUIT_DATABASE_URL=db.url, CONDUIT_TENANTS_FILE=str(write_tenants(tmp_path)),
        CONDUIT_TOKEN_KEY=token_key.get_secret_value(), CONDUIT_CONSOLE_TOKEN="process-test-token-1",
        CONDUIT_CONSOLE_PORT=str(unused_tcp_port), CONDUIT_CONSOLE_HOST="127.0.0.1",
    )  # fmt: skip
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CONDUIT, "console"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{unused_tcp_port}/ready", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [orjson.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in lines if e["event"].startswith("console ")][-1] == "console stopped"
    assert "process-test-token-1" not in log.read_text()
