"""`conduit imports list|show|rerun|run|ddl`, run as the console script against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from arq.worker import Worker, func

from shared.job_json import CODEC
from shared.jobs import IMPORT_EXPORT, import_job_id
from tests.importer.conftest import Importer
from tests.importer.support import Exports, export_body

CONDUIT = str(Path(sys.executable).with_name("conduit"))
GOOD = export_body("users", "user_id,login\n" + "".join(f"{i},u{i}\n" for i in range(1, 201)))
ONE_BAD = export_body("users", "user_id,login\n" + "".join(f"{i},u{i}\n" for i in range(1, 200)) + "x,bad\n")


async def cli(importer: Importer, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {"CONDUIT_DATABASE_URL": importer.db.url, "CONDUIT_REDIS_URL": importer.settings.redis_url}
    proc = await asyncio.create_subprocess_exec(
        CONDUIT, "imports", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli_json(importer: Importer, *args: str) -> Any:
    code, out, err = await cli(importer, *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


async def test_list_filters_and_show_names_the_first_rejects(importer: Importer, exports: Exports) -> None:
    exports.set("users", ONE_BAD)
    exports.set("currencies", export_body("currencies", "code,name,decimals\nEUR,Euro,2\n"))
    await importer.run("acme", "users", "2024-05-01")
    await importer.run("globex", "currencies", "2024-05-03")

    everything = await cli_json(importer, "list")
    rejected = await cli_json(importer, "list", "--status", "partially_rejected")
    by_date = await cli_json(importer, "list", "--from", "2024-05-02", "--to", "2024-05-31")
    by_tenant_module = await cli_json(importer, "list", "--tenant", "acme", "--module", "users")
    code, table, _ = await cli(importer, "list")
    run_id = rejected[0]["id"]
    shown = await cli_json(importer, "show", str(run_id))
    code_text, text, _ = await cli(importer, "show", str(run_id))
    missing, _, missing_err = await cli(importer, "show", "999999")

    assert [r["module"] for r in everything] == ["currencies", "users"]
    assert [(r["tenant_id"], r["status"]) for r in rejected] == [("acme", "partially_rejected")]
    assert [r["module"] for r in by_date] == ["currencies"] and len(by_tenant_module) == 1
    assert code == 0 and "partially_rejected" in table and "tenant" in table.splitlines()[0]
    assert shown["rows_rejected"] == 1 and shown["rejects"][0]["line"] == 201
    assert 'invalid input syntax for type bigint: "x"' in shown["rejects"][0]["reason"]
    assert code_text == 0 and "first rejected rows" in text and "x,bad" in text
    assert missing == 1 and "no import run 999999" in missing_err


async def test_rerun_one_run_never_twice_and_a_worker_takes_the_queued_row_over(
    importer: Importer, exports: Exports
) -> None:
    exports.set("users", b'{"error": "nope"}', status=404)
    await importer.run("acme", "users")
    failed = (await importer.last_run())["id"]
    exports.set("users", GOOD)

    code, out, err = await cli(importer, "rerun", str(failed))
    again, again_out, _ = await cli(importer, "rerun", str(failed))

    assert code == 0, err
    assert "enqueued acme/users/2024-05-01 as job import:acme:users:2024-05-01:rerun:" in out
    assert "enqueued 1, skipped 0" in out
    assert again == 1 and "skipped acme/users/2024-05-01: run" in again_out and "is queued" in again_out
    queued = await importer.last_run()
    assert (queued["status"], queued["attempt"]) == ("queued", 2)

    await importer.drain()

    runs = await importer.db.runs()
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "failed"), (2, "succeeded")]
    assert runs[1]["job_id"] == queued["job_id"]
    assert await importer.db.value("SELECT count(*) FROM users") == 200


async def test_rerun_failed_picks_the_latest_failed_matching_the_filters(importer: Importer, exports: Exports) -> None:
    exports.set("users", b'{"error": "nope"}', status=404)
    exports.set("currencies", b'{"error": "nope"}', status=404)
    await importer.run("acme", "users", "2024-05-01")
    await importer.run("acme", "currencies", "2024-05-01")
    await importer.run("globex", "users", "2024-05-01")
    exports.set("users", GOOD, tenant="acme")
    await importer.run("acme", "users", "2024-05-01", job_id="manual")  # now succeeded: not failed any more

    code, out, err = await cli(importer, "rerun", "--failed", "--since", "2024-05-01", "--tenant", "acme")

    assert code == 0, err
    assert out.splitlines()[0].startswith("enqueued acme/currencies/2024-05-01 as job")
    assert "enqueued 1, skipped 0" in out


async def test_rerun_refuses_while_the_scheduled_job_is_queued(importer: Importer, exports: Exports) -> None:
    exports.set("users", b'{"error": "nope"}', status=404)
    await importer.run("acme", "users")
    failed = (await importer.last_run())["id"]
    await importer.arq.enqueue_job(
        IMPORT_EXPORT, "acme", "users", "2024-05-01", _job_id=import_job_id("acme", "users", "2024-05-02")
    )
    scheduled = import_job_id("acme", "users", "2024-05-01")
    await importer.redis.delete(f"arq:result:{scheduled}")  # as if the earlier result had expired
    await importer.arq.enqueue_job(IMPORT_EXPORT, "acme", "users", "2024-05-01", _job_id=scheduled)

    code, out, _ = await cli(importer, "rerun", str(failed))

    assert code == 1 and f"skipped acme/users/2024-05-01: job {scheduled} is already queued" in out


async def test_run_now_enqueues_and_waits_for_the_outcome(importer: Importer, exports: Exports) -> None:
    exports.set("users", GOOD)
    cli_done = asyncio.create_task(cli(importer, "run", "acme", "users", "--date", "2024-05-09"))
    while not await importer.redis.zcard("arq:queue"):  # the CLI has enqueued
        await asyncio.sleep(0.05)

    await importer.drain()
    code, out, err = await cli_done

    assert code == 0, err
    assert "enqueued acme/users/2024-05-09" in err
    assert out.strip() == "succeeded: 200 rows imported, 0 rejected"


async def test_run_now_says_which_job_failed_and_why(importer: Importer) -> None:
    cli_done = asyncio.create_task(cli(importer, "run", "acme", "users", "--date", "2024-05-09"))
    while not await importer.redis.zcard("arq:queue"):  # the CLI has enqueued
        await asyncio.sleep(0.05)

    async def import_export(ctx: dict[str, Any], *args: str) -> None:
        raise ValueError("missing column 'amount'")

    worker = Worker([func(import_export, name=IMPORT_EXPORT, max_tries=1)], redis_pool=importer.arq, burst=True,
                    poll_delay=0, handle_signals=False, **CODEC)  # fmt: skip
    await worker.main()
    code, _, err = await cli_done

    assert code == 1
    assert "failed: ValueError: missing column 'amount'" in err and "Traceback" not in err


async def test_ddl_and_modules(importer: Importer) -> None:
    code, ddl, _ = await cli(importer, "ddl", "users")
    unknown, _, err = await cli(importer, "ddl", "unicorns")
    listed, modules, _ = await cli(importer, "modules")
    assert code == 0 and ddl.startswith('CREATE TABLE "users"') and 'PRIMARY KEY (tenant_id, "user_id")' in ddl
    assert unknown == 1 and "unknown module 'unicorns'" in err
    assert listed == 0 and len(modules.splitlines()) >= 52 and "legacy_customers" in modules


async def test_failed_means_the_latest_attempt_failed_and_queue_status_agrees(
    importer: Importer, exports: Exports
) -> None:
    exports.set("users", b'{"error": "nope"}', status=404)
    exports.set("currencies", b'{"error": "nope"}', status=404)
    await importer.run("acme", "users", "2024-05-01")
    await importer.run("acme", "currencies", "2024-05-01")
    await importer.run("globex", "users", "2024-05-01")
    exports.set("users", GOOD, tenant="acme")
    await importer.run("acme", "users", "2024-05-01", job_id="manual")  # superseded: acme/users is fine now

    failed = await cli_json(importer, "list", "--status", "failed")
    every = await cli_json(importer, "list", "--status", "failed", "--all-attempts")
    contradiction, _, usage = await cli(importer, "list", "--latest", "--all-attempts")
    queue = await _queue_status(importer)

    assert sorted((r["tenant_id"], r["module"]) for r in failed) == [("acme", "currencies"), ("globex", "users")]
    assert sorted((r["tenant_id"], r["module"], r["attempt"]) for r in every) == [
        ("acme", "currencies", 1),
        ("acme", "users", 1),
        ("globex", "users", 1),
    ]
    assert contradiction == 2 and "--all-attempts" in usage
    assert queue[IMPORT_EXPORT]["failed"] == len(failed) == 2


async def _queue_status(importer: Importer) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    env |= {"CONDUIT_DATABASE_URL": importer.db.url, "CONDUIT_REDIS_URL": importer.settings.redis_url}
    proc = await asyncio.create_subprocess_exec(
        CONDUIT, "queue", "status", "--json", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err
    return {row["kind"]: row for row in orjson.loads(out)}
