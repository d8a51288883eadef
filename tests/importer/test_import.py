"""Importing exports end to end through a real arq worker: exact values, idempotence, tenants, merge policies."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
from decimal import Decimal

from demo.exports import rows, write_csv
from shared.modules import catalogue
from tests.importer.conftest import Importer
from tests.importer.support import Exports, export_body


def demo_csv(module: str, count: int, client: str = "acme", date: str = "2024-05-01") -> bytes:
    out = io.BytesIO()
    write_csv(catalogue().get(module), client, date, count, out)
    return out.getvalue()


async def test_an_export_lands_exactly_and_the_ledger_says_so(importer: Importer, exports: Exports) -> None:
    data = demo_csv("transactions", 1000)
    exports.set("transactions", export_body("transactions", data))

    result = await importer.run("acme", "transactions")

    assert result.startswith("succeeded: 1000 rows imported")
    expected = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    got = await importer.db.rows("SELECT * FROM transactions WHERE tenant_id = 'acme' ORDER BY transaction_id")
    assert len(got) == 1000
    for want, have in zip(expected, got, strict=True):
        assert str(have["transaction_id"]) == want[0]
        assert have["description"] == (want[2] or None)
        assert have["amount"] == Decimal(want[4])
        assert have["reconciled"] == ({"true": True, "false": False}.get(want[6]))
        assert have["value_date"] == dt.date.fromisoformat(want[7])
        assert have["booked_at"] == (dt.datetime.fromisoformat(want[8]) if want[8] else None)
    run = await importer.last_run()
    assert (run["status"], run["attempt"], run["rows_read"], run["rows_imported"], run["rows_rejected"]) == (
        "succeeded", 1, 1000, 1000, 0
    )  # fmt: skip
    assert run["rows_changed"] == 1000 and run["bytes_csv"] == len(data) and run["bytes_received"] > 0
    assert {"download", "unzip", "copy", "total"} <= run["stage_seconds"].keys()
    assert run["parse_path"] == "first load"
    assert run["error_class"] is None and run["worker_id"] and run["finished_at"] >= run["started_at"]
    assert [(c.tenant, c.module, c.date) for c in exports.calls] == [("acme", "transactions", "2024-05-01")]


async def test_text_survives_commas_quotes_newlines_crlf_and_unicode(importer: Importer, exports: Exports) -> None:
    values = ['said "hi", left', "line one\r\nline two", "naïve 🚀 日本", ",", '"', "  padded  "]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["code", "name", "decimals", "symbol"])
    writer.writerows([[f"C{i}", v, i, v] for i, v in enumerate(values)])
    exports.set("currencies", export_body("currencies", out.getvalue()))

    assert (await importer.run("acme", "currencies")).startswith("succeeded")

    got = await importer.db.rows("SELECT code, name, symbol FROM currencies ORDER BY code")
    assert [(r["name"], r["symbol"]) for r in got] == [(v, v) for v in values]


async def test_running_twice_leaves_one_runs_rows_and_rewrites_nothing(importer: Importer, exports: Exports) -> None:
    exports.set("transactions", export_body("transactions", demo_csv("transactions", 300)))
    await importer.run("acme", "transactions", job_id="first")
    before = await importer.db.rows("SELECT *, xmin::text AS version FROM transactions ORDER BY transaction_id")

    await importer.run("acme", "transactions", job_id="second")

    after = await importer.db.rows("SELECT *, xmin::text AS version FROM transactions ORDER BY transaction_id")
    assert after == before  # same rows, and not one rewritten (same xmin)
    runs = await importer.db.runs()
    assert [(r["attempt"], r["status"], r["rows_imported"], r["rows_changed"]) for r in runs] == [
        (1, "succeeded", 300, 300),
        (2, "succeeded", 300, 0),
    ]


async def test_a_newer_export_updates_rows_in_place(importer: Importer, exports: Exports) -> None:
    exports.set("transactions", export_body("transactions", demo_csv("transactions", 50, date="2024-05-01")))
    await importer.run("acme", "transactions", "2024-05-01")
    exports.set("transactions", export_body("transactions", demo_csv("transactions", 60, date="2024-05-02")))
    await importer.run("acme", "transactions", "2024-05-02")

    expected = {int(r[0]): r[4] for r in rows(catalogue().get("transactions"), "acme", "2024-05-02", 60)}
    got = await importer.db.rows("SELECT transaction_id, amount FROM transactions")
    assert {r["transaction_id"]: str(r["amount"]) for r in got} == expected


async def test_one_tenants_import_never_touches_anothers_rows(importer: Importer, exports: Exports) -> None:
    head = "code,name,decimals,symbol\n"
    exports.set("currencies", export_body("currencies", head + "EUR,Euro,2,€\nUSD,Dollar,2,$\n"), tenant="acme")
    exports.set("currencies", export_body("currencies", head + "EUR,Euro (globex),3,E\n"), tenant="globex")
    await importer.run("acme", "currencies")
    await importer.run("globex", "currencies")
    # currencies deletes rows missing from a full export: acme's smaller export must not reach globex's rows.
    exports.set("currencies", export_body("currencies", head + "USD,Dollar,2,$\n"), tenant="acme")
    await importer.run("acme", "currencies", "2024-05-02")

    got = await importer.db.rows("SELECT tenant_id, code, name, decimals FROM currencies ORDER BY 1, 2")
    assert got == [
        {"tenant_id": "acme", "code": "USD", "name": "Dollar", "decimals": 2},
        {"tenant_id": "globex", "code": "EUR", "name": "Euro (globex)", "decimals": 3},
    ]
    assert (await importer.last_run())["rows_deleted"] == 1


async def test_rows_missing_from_an_export_are_kept_by_default(importer: Importer, exports: Exports) -> None:
    head = "user_id,login\n"
    exports.set("users", export_body("users", head + "1,ann\n2,bob\n"))
    await importer.run("acme", "users", "2024-05-01")
    exports.set("users", export_body("users", head + "2,bobby\n"))
    await importer.run("acme", "users", "2024-05-02")

    got = await importer.db.rows("SELECT user_id, login FROM users ORDER BY 1")
    assert got == [{"user_id": 1, "login": "ann"}, {"user_id": 2, "login": "bobby"}]
    assert (await importer.last_run())["rows_deleted"] == 0


async def test_reordered_and_extra_columns_work_and_the_extras_are_reported(
    importer: Importer, exports: Exports
) -> None:
    text = "symbol,Colour,decimals,code,name,notes\n€,blue,2,EUR,Euro,x\n$,red,2,USD,Dollar,y\n"
    exports.set("currencies", export_body("currencies", text))

    assert (await importer.run("acme", "currencies")).startswith("succeeded")

    got = await importer.db.rows("SELECT code, name, decimals, symbol FROM currencies ORDER BY code")
    assert got == [
        {"code": "EUR", "name": "Euro", "decimals": 2, "symbol": "€"},
        {"code": "USD", "name": "Dollar", "decimals": 2, "symbol": "$"},
    ]
    assert (await importer.last_run())["ignored_columns"] == ["Colour", "notes"]


async def test_csv_header_names_are_mapped_to_columns(importer: Importer, exports: Exports) -> None:
    text = 'Contact ID,last_name,E-mail,custom_fields,birthday\n7,Doe,doe@example.com,"{""vip"": true}",1990-02-03\n'
    exports.set("contacts", export_body("contacts", text))

    assert (await importer.run("acme", "contacts")).startswith("succeeded")

    got = await importer.db.rows("SELECT contact_id, last_name, email, custom_fields, birthday FROM contacts")
    assert got == [
        {
            "contact_id": 7,
            "last_name": "Doe",
            "email": "doe@example.com",
            "custom_fields": {"vip": True},
            "birthday": dt.date(1990, 2, 3),
        }
    ]


async def test_duplicate_keys_in_one_file_last_one_wins_and_are_counted(importer: Importer, exports: Exports) -> None:
    text = "user_id,login\n1,first\n2,bob\n1,second\n1,third\n"
    exports.set("users", export_body("users", text))

    assert (await importer.run("acme", "users")).startswith("succeeded")

    assert await importer.db.rows("SELECT user_id, login FROM users ORDER BY 1") == [
        {"user_id": 1, "login": "third"},
        {"user_id": 2, "login": "bob"},
    ]
    run = await importer.last_run()
    assert (run["rows_read"], run["rows_imported"], run["rows_duplicate"]) == (4, 2, 2)
    assert run["parse_path"].startswith("careful: COPY: duplicate key value violates unique constraint")


async def test_a_utf8_bom_and_a_windows_1252_module_are_read_right(importer: Importer, exports: Exports) -> None:
    exports.set("users", export_body("users", "\ufeffuser_id,login\n1,zoë\n"))
    legacy = "Kundennummer,Name,Ort,Straße,Saldo\n1,Müller,Köln,Hauptstraße 1,-12.50\n"
    exports.set("legacy_customers", export_body("legacy_customers", legacy, encoding="cp1252"))

    await importer.run("acme", "users")
    await importer.run("acme", "legacy_customers")

    assert await importer.db.value("SELECT login FROM users") == "zoë"
    assert [r["parse_path"] for r in await importer.db.runs()] == ["first load"] * 2  # COPY reads WIN1252 itself
    got = await importer.db.rows("SELECT name, city, street, balance FROM legacy_customers")
    assert got == [{"name": "Müller", "city": "Köln", "street": "Hauptstraße 1", "balance": Decimal("-12.50")}]


async def test_progress_events_are_published_on_redis(importer: Importer, exports: Exports) -> None:
    import orjson

    from shared import redis_keys

    exports.set("transactions", export_body("transactions", demo_csv("transactions", 1000)))
    pubsub = importer.redis.pubsub()
    await pubsub.subscribe(redis_keys.events(importer.redis))
    await pubsub.get_message(timeout=1)  # the subscription confirmation

    await importer.with_settings(importer_progress_rows=200).run("acme", "transactions")

    events: list[dict[str, object]] = []
    async with asyncio.timeout(10):
        while not events or events[-1]["event"] != "finished":
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            event = orjson.loads(message["data"]) if message else {"worker": ""}
            if str(event["worker"]).endswith(f":{os.getpid()}"):  # other suites may import on this Redis too
                events.append(event)
    await pubsub.aclose()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("progress") >= 1
    # A first load: straight to COPY, no merge.
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["download", "copy", "swap", "record"]
    # The fast path counts lines as they stream to COPY (a quoted field may span several).
    progress = [e["rows"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress) and 200 <= progress[-1] <= len(demo_csv("transactions", 1000).splitlines())
    assert events[-1]["status"] == "succeeded" and events[-1]["rows_imported"] == 1000
    assert {e["tenant"] for e in events} == {"acme"} and {e["module"] for e in events} == {"transactions"}


async def test_first_load_fast_merge_and_careful_path_agree_on_empty_values(
    importer: Importer, exports: Exports
) -> None:
    text = 'user_id,login,email,full_name\n1,ann,"",\n2,bob,,""\n'
    exports.set("users", export_body("users", text))
    await importer.run("acme", "users", "2024-05-01")  # first load: COPY into the table
    first = await importer.db.rows("SELECT user_id, email, full_name FROM users ORDER BY 1")
    exports.set("users", export_body("users", text.replace("ann", "anne")))
    await importer.run("acme", "users", "2024-05-02")  # staging and MERGE
    exports.set(
        "users",
        export_body("users", text.replace("ann", "annie") + "3\n" + "".join(f"{i},u{i},,\n" for i in range(4, 200))),
    )
    await importer.run("acme", "users", "2024-05-03")  # a ragged row: the careful path

    got = await importer.db.rows("SELECT user_id, email, full_name FROM users WHERE user_id < 3 ORDER BY 1")
    assert (
        first
        == got
        == [
            {"user_id": 1, "email": None, "full_name": None},
            {"user_id": 2, "email": None, "full_name": None},
        ]
    )
    assert [r["parse_path"][:14] for r in await importer.db.runs()] == ["first load", "fast", "careful: COPY:"]
    assert await importer.db.value("SELECT login FROM users WHERE user_id = 1") == "annie"
