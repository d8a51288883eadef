"""`conduit tokens ...`: inspect and refresh tenants' tokens."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click
import orjson
from tabulate import tabulate

from conduit.cli_support import guard, reaching_redis


@click.group()
def tokens() -> None:
    """Inspect and refresh tenants' tokens."""


@tokens.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token instead of a table.")
def tokens_status(as_json: bool) -> None:
    """Show every tenant's tokens: expiry, last refresh, last error."""
    rows = guard(lambda: asyncio.run(_token_rows()))
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    headers = ["tenant", "provider", "expires in", "last refresh", "how", "last error"]
    table = [
        [
            r["tenant"],
            r["provider"],
            _duration(r["expires_in"]),
            _ago(r["last_refresh_at"]),
            r["last_refresh_how"] or "-",
            r["last_error"] or "-",
        ]
        for r in rows
    ]
    click.echo(tabulate(table, headers=headers))


@tokens.command("refresh")
@click.argument("tenant")
@click.option("--provider", help="Provider name; default: every provider of the tenant.")
def tokens_refresh(tenant: str, provider: str | None) -> None:
    """Refresh a tenant's token now (single-flight with every other process)."""
    ok = guard(lambda: asyncio.run(_refresh(tenant, provider)))
    sys.exit(0 if ok else 1)


@tokens.command("new-key")
def tokens_new_key() -> None:
    """Print a new CONDUIT_TOKEN_KEY."""
    from shared.crypto import new_key

    click.echo(new_key())


async def _token_rows() -> list[dict[str, Any]]:
    from shared.crypto import Sealer
    from shared.redis_client import create_redis
    from shared.settings import CommonSettings
    from shared.tenants import load_tenants
    from shared.token_store import TokenStore

    settings = CommonSettings()
    tenants = load_tenants(settings.tenants_file, resolve_secrets=False)
    redis = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    store = TokenStore(redis, Sealer(settings.token_key, settings.token_key_old))
    now = time.time()
    rows = []
    with reaching_redis(settings.redis_url):
        try:
            for tenant, provider in tenants.pairs():
                record = await store.get(tenant, provider)
                has_token = record is not None and record.access_token is not None
                rows.append(
                    {
                        "tenant": tenant,
                        "provider": provider,
                        "generation": record.generation if record else 0,
                        "expires_in": round(record.expires_at - now, 1) if record and has_token else None,
                        "last_refresh_at": record.last_refresh_at if record else None,
                        "last_refresh_how": record.last_refresh_how if record else None,
                        "last_error": record.last_error if record else None,
                        "error_kind": record.error_kind if record else None,
                        "next_attempt_at": record.next_attempt_at if record else None,
                    }
                )
        finally:
            await redis.aclose()
    return rows


async def _refresh(tenant: str, provider: str | None) -> bool:
    from shared.crypto import Sealer
    from shared.redis_client import create_redis
    from shared.refresh import Refresher, RefreshFailed
    from shared.settings import TokenSettings
    from shared.tenants import load_tenants
    from shared.token_store import TokenStore

    settings = TokenSettings()
    tenants = load_tenants(settings.tenants_file)
    if tenant not in tenants.tenants:
        raise click.ClickException(f"unknown tenant {tenant!r} (known: {', '.join(tenants.tenants)})")
    names = [provider] if provider else list(tenants.tenants[tenant].providers)
    redis = create_redis(settings.redis_url, settings.redis_timeout, settings.redis_location())
    refresher = Refresher(TokenStore(redis, Sealer(settings.token_key, settings.token_key_old)), tenants)
    ok = True
    with reaching_redis(settings.redis_url):
        try:
            for name in names:
                if not tenants.has(tenant, name):
                    raise click.ClickException(f"tenant {tenant!r} has no provider {name!r}")
                try:
                    record = await refresher.refresh(tenant, name, trigger="operator", force=True)
                    expires = _duration(record.expires_at - time.time()) if record else "-"
                    generation = record.generation if record else 0
                    click.echo(f"{tenant}/{name}: refreshed, generation {generation}, expires in {expires}")
                except RefreshFailed as exc:
                    ok = False
                    click.echo(f"{tenant}/{name}: {exc}", err=True)
        finally:
            await redis.aclose()
    return ok


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "expired"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _ago(at: float | None) -> str:
    if at is None:
        return "never"
    return f"{_duration(time.time() - at)} ago"
