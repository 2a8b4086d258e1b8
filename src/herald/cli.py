"""``herald``: serve the gateway, mint tokens, publish and tail events."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from herald.config import Settings, load_settings

app = typer.Typer(
    name="herald",
    help="Herald: a real-time event gateway (domain events in, Server-Sent Events out).",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file (HERALD_* env wins)")]
UrlOption = Annotated[str, typer.Option("--url", envvar="HERALD_URL", help="The gateway's base URL")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"herald: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one)")] = None,
    config: ConfigOption = None,
    demo: Annotated[bool, typer.Option("--demo", help="Simulate AI tasks for the demo page")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=0, help="Worker processes on the same port (default: one per core; 0: the same)"
        ),
    ] = None,
) -> None:
    """Run the gateway."""
    from herald.obs.logs import configure_logging
    from herald.server.runner import demo_extras, run
    from herald.server.supervisor import available_cpus, run_workers
    from herald.server.workers import WorkersRefused, plan_workers

    overrides: dict[str, Any] = {"host": host, "port": port, "workers": workers}
    if demo:
        overrides["demo"] = True
    settings = _settings(config, **overrides)
    generated = settings.jwt_secret is None
    if generated:
        # Nothing configured: a secret for this run only, printed so that
        # ``herald token`` / ``herald publish`` in another shell can share it
        # (and shared by every worker).
        settings = settings.model_copy(update={"jwt_secret": secrets.token_urlsafe(32)})
    from herald.server.embedded_redis import find_redis_server

    try:
        plan = plan_workers(
            settings.workers,
            cpus=available_cpus(),
            bus=settings.bus,
            redis_server_found=find_redis_server(settings.embedded_redis_server) is not None,
        )
    except WorkersRefused as exc:
        typer.echo(f"herald: {exc}", err=True)
        raise typer.Exit(2) from None
    if plan.workers > 1:
        configure_logging(settings.log_level, settings.log_format, {"role": "supervisor"})
        code = run_workers(settings, plan, on_ready=lambda url: _banner(settings, url, generated))
        raise typer.Exit(code)
    configure_logging(settings.log_level, settings.log_format)
    if plan.note:
        import structlog

        # The embedded default: one process is a whole Herald, nothing is wrong (issue 13).
        structlog.get_logger("herald.server").info("herald_workers_reduced", reason=plan.note)
    from herald.adapter import MappingInvalid
    from herald.errors import BusUnavailable

    try:
        run(settings, extras=demo_extras(settings), on_ready=lambda url: _banner(settings, url, generated))
    except BusUnavailable as exc:  # a node does not come up without its log
        typer.echo(f"herald: {exc.message} (check HERALD_REDIS_URL)", err=True)
        raise typer.Exit(1) from None
    except MappingInvalid as exc:  # the mapping is checked before anything is consumed
        for problem in exc.problems:
            typer.echo(f"herald: invalid mapping: {problem}", err=True)
        raise typer.Exit(2) from None


def _banner(settings: Settings, url: str, generated_secret: bool) -> None:
    from herald.api.paths import STREAM
    from herald.auth.minting import mint_token

    assert settings.jwt_secret is not None
    out = sys.stderr
    print(f"\nHerald is listening on {url}", file=out)
    if settings.demo_page:
        print(f"  demo page:  {url}/", file=out)
    if generated_secret:
        print("  no HERALD_JWT_SECRET was set; this run's secret (for herald token/publish):", file=out)
        print(f"    export HERALD_JWT_SECRET={settings.jwt_secret}", file=out)
    if not (generated_secret or settings.demo):
        # A configured secret means a real deployment: never put a live token in its logs.
        out.flush()
        return
    user_token = mint_token(settings.jwt_secret, sub="alice", resources=["novel:*"], ttl_seconds=3600)
    print("  a token for user 'alice' (1 hour), and her stream:", file=out)
    print(f"    export TOKEN={user_token}", file=out)
    print(f'    curl -N -H "Authorization: Bearer $TOKEN" {url}{STREAM}\n', file=out)
    out.flush()


@app.command()
def token(
    sub: Annotated[str, typer.Option("--sub", help="User id")],
    sid: Annotated[str | None, typer.Option("--sid", help="Session id")] = None,
    resource: Annotated[
        list[str] | None, typer.Option("--resource", help="Resource key it may subscribe to (repeatable)")
    ] = None,
    publisher: Annotated[bool, typer.Option("--publisher", help="May publish events")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="May use the admin API (revocations)")] = False,
    ttl: Annotated[float, typer.Option("--ttl", help="Lifetime in seconds")] = 3600,
    config: ConfigOption = None,
) -> None:
    """Print a signed JWT (HS256, HERALD_JWT_SECRET)."""
    from herald.auth.minting import mint_token

    settings = _settings(config)
    if not settings.jwt_secret:
        typer.echo("herald: set HERALD_JWT_SECRET (the key herald serve verifies with)", err=True)
        raise typer.Exit(2)
    typer.echo(
        mint_token(
            settings.jwt_secret,
            sub=sub,
            sid=sid,
            resources=resource or [],
            publisher=publisher,
            admin=admin,
            ttl_seconds=ttl,
        )
    )


def _post(url: str, path: str, body: dict[str, Any], token: str, expected: int) -> Any:
    """POST ``body`` to a running gateway; the response when it answers ``expected``, else
    the reason on stderr and exit 1."""
    import httpx

    headers = {"authorization": f"Bearer {token}"}
    try:
        response = httpx.post(f"{url.rstrip('/')}{path}", json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"herald: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != expected:
        typer.echo(f"herald: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)
    return response


def _cli_token(explicit: str | None, config: Path | None, *, admin: bool = False) -> str:
    """``explicit``, or a short-lived token minted with ``HERALD_JWT_SECRET`` (publisher,
    or admin)."""
    if explicit:
        return explicit
    from herald.auth.minting import mint_token

    settings = _settings(config)
    if not settings.jwt_secret:
        typer.echo("herald: pass --token or set HERALD_JWT_SECRET", err=True)
        raise typer.Exit(2)
    return mint_token(
        settings.jwt_secret, sub="herald-cli", publisher=not admin, admin=admin, ttl_seconds=300
    )


@app.command()
def drain(
    url: UrlOption = DEFAULT_URL,
    window: Annotated[
        float | None, typer.Option(help="Seconds to move the streams off over (default: the node's)")
    ] = None,
    token_: Annotated[str | None, typer.Option("--token", help="Admin JWT (default: minted)")] = None,
    config: ConfigOption = None,
) -> None:
    """Drain the node at URL: it turns unready, refuses new streams and moves its open ones
    to the other nodes over the window (POST /api/v1/admin/drain; SIGUSR1 does the same)."""
    body = {"window_seconds": window} if window is not None else {}
    token = _cli_token(token_, config, admin=True)
    typer.echo(_post(url, "/api/v1/admin/drain", body, token, 202).text)


@app.command()
def health(
    url: UrlOption = DEFAULT_URL,
    ready: Annotated[
        bool, typer.Option("--ready", help="Ask readiness (may it take streams?) instead of liveness")
    ] = False,
) -> None:
    """Exit 0 when the node at URL is alive (or, with --ready, ready), else 1: for a
    container's HEALTHCHECK, where there is no curl. A draining node is alive, not ready."""
    import httpx

    path = "/api/v1/events/health/ready" if ready else "/api/v1/events/health/live"
    try:
        response = httpx.get(f"{url.rstrip('/')}{path}", timeout=3)
    except httpx.HTTPError as exc:
        typer.echo(f"herald: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        typer.echo(f"herald: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)


@app.command()
def publish(
    event: Annotated[
        str | None,
        typer.Argument(help="Event name, e.g. task.progress-updated; omit (or -) to read NDJSON from stdin"),
    ] = None,
    scope: Annotated[str | None, typer.Option(help="user, session, global or a resource type")] = None,
    data: Annotated[str, typer.Option(help="JSON object")] = "{}",
    key: Annotated[str | None, typer.Option(help="User, session or resource id")] = None,
    priority: Annotated[str, typer.Option(help="high, normal or low")] = "normal",
    coalesce: Annotated[str | None, typer.Option(help="Coalesce key")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Publish once per key")] = None,
    url: UrlOption = DEFAULT_URL,
    token_: Annotated[str | None, typer.Option("--token", help="Publisher JWT (default: minted)")] = None,
    config: ConfigOption = None,
) -> None:
    """Publish an event through a running gateway's HTTP API; prints its id.

    With no event named, reads one event per line from standard input (the body
    `POST /api/v1/events` takes, as JSON), sends them in batches, and prints one JSON
    result per line, in order; exits 1 if any failed."""
    if event is None or event == "-":
        _publish_stdin(url, _cli_token(token_, config))
        return
    if scope is None:
        typer.echo("herald: --scope is required with an event name", err=True)
        raise typer.Exit(2)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        typer.echo(f"herald: --data is not JSON: {exc}", err=True)
        raise typer.Exit(2) from None
    body = {"event": event, "scope": scope, "key": key, "data": payload, "priority": priority}
    if coalesce:
        body["coalesce"] = coalesce
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    response = _post(url, "/api/v1/events", body, _cli_token(token_, config), 202)
    typer.echo(response.json()["id"])


def _publish_stdin(url: str, token: str) -> None:
    import httpx

    from herald.cli_bulk import BulkPublisher, Refused

    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as client:
        publisher = BulkPublisher(client, token, sys.stdout)
        try:
            outcome = publisher.publish(sys.stdin)
        except Refused as exc:
            typer.echo(f"herald: the gateway refused the token: {exc}", err=True)
            raise typer.Exit(2) from None
    typer.echo(
        f"herald: {outcome.accepted} accepted, {outcome.failed} failed, {outcome.retries} retries", err=True
    )
    if outcome.failed:
        raise typer.Exit(1)


@app.command()
def tail(
    sub: Annotated[str | None, typer.Option("--sub", help="User id (token minted with the secret)")] = None,
    sid: Annotated[str | None, typer.Option("--sid", help="Session id")] = None,
    subscribe: Annotated[str | None, typer.Option(help="Resources, e.g. novel:42,novel:7")] = None,
    last_event_id: Annotated[str | None, typer.Option(help="Resume after this cursor")] = None,
    url: UrlOption = DEFAULT_URL,
    token_: Annotated[str | None, typer.Option("--token", help="User JWT")] = None,
    config: ConfigOption = None,
) -> None:
    """Print a user's live stream, one event per line, until interrupted."""
    import httpx
    from httpx_sse import connect_sse

    if token_ is None:
        if sub is None:
            typer.echo("herald: pass --token or --sub", err=True)
            raise typer.Exit(2)
        from herald.auth.minting import mint_token

        settings = _settings(config)
        if not settings.jwt_secret:
            typer.echo("herald: set HERALD_JWT_SECRET to mint a token, or pass --token", err=True)
            raise typer.Exit(2)
        resources = [s for s in (subscribe or "").split(",") if s]
        token_ = mint_token(settings.jwt_secret, sub=sub, sid=sid, resources=resources)
    headers = {"authorization": f"Bearer {token_}"}
    if last_event_id:
        headers["last-event-id"] = last_event_id
    params = {"subscribe": subscribe} if subscribe else {}
    timeout = httpx.Timeout(10.0, read=None)
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            connect_sse(
                client, "GET", f"{url.rstrip('/')}/api/v1/events/stream", headers=headers, params=params
            ) as source,
        ):
            if source.response.status_code != 200:
                source.response.read()
                typer.echo(f"herald: {source.response.status_code} {source.response.text}", err=True)
                raise typer.Exit(1)
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # a heartbeat that moves the cursor
                typer.echo(f"{sse.id or '-'}\t{sse.event}\t{sse.data}")
                sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except httpx.HTTPError as exc:
        typer.echo(f"herald: stream ended: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def openapi() -> None:
    """Print the control API's OpenAPI document (JSON)."""
    from herald.api.app import create_app
    from herald.gateway import Gateway

    settings = Settings(jwt_secret="openapi-" + "x" * 32)
    document = create_app(Gateway(settings), manage_gateway=False).openapi()
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


@app.command()
def schema(
    typescript: Annotated[
        bool, typer.Option("--typescript", help="TypeScript declarations instead of JSON Schema")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only compare with --output; exit 1 if it is out of date")
    ] = False,
) -> None:
    """The event payloads as JSON Schema, or as the TypeScript client's types."""
    from herald.events.schema import events_json_schema
    from herald.events.typescript import render_typescript

    document = events_json_schema()
    text = render_typescript(document) if typescript else json.dumps(document, indent=2) + "\n"
    if output is None:
        if check:
            typer.echo("herald schema: --check needs --output FILE", err=True)
            raise typer.Exit(2)
        typer.echo(text, nl=False)
        return
    if check:
        current = output.read_text() if output.is_file() else None
        if current != text:
            typer.echo(
                f"herald schema: {output} is out of date with the payload models; "
                f"regenerate with `herald schema{' --typescript' if typescript else ''} --output {output}`",
                err=True,
            )
            raise typer.Exit(1)
        return
    output.write_text(text)


mapping_app = typer.Typer(help="Check a mapping file, or see what a record becomes.", no_args_is_help=True)
app.add_typer(mapping_app, name="mapping")
MappingFile = Annotated[
    str, typer.Argument(help="A mapping file (TOML), or 'default' for the built-in catalogue")
]


def _load_mapping(file: str) -> Any:
    from herald.adapter import MappingInvalid, default_mapping, load_mapping

    try:
        return default_mapping() if file == "default" else load_mapping(Path(file))
    except MappingInvalid as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(1) from None


@mapping_app.command("check")
def mapping_check(file: MappingFile) -> None:
    """Validate a mapping file; list its rules, or name the line and rule of every mistake."""
    from herald.adapter.loading import describe

    table = _load_mapping(file)
    typer.echo(f"{file}: {len(table)} rules, type field {table.type_field!r}")
    for line in describe(table.rules.values()):
        typer.echo(f"  {line}")


@mapping_app.command("try")
def mapping_try(
    file: MappingFile,
    record: Annotated[str, typer.Argument(help="A JSON file holding one record, or '-' for stdin")],
) -> None:
    """Show the browser event a record becomes (exit 1 for a poison record)."""
    from herald.adapter import Adapter, PoisonRecord

    adapter = Adapter(_load_mapping(file))
    raw = sys.stdin.buffer.read() if record == "-" else Path(record).read_bytes()
    try:
        message = adapter.map_raw(raw, source="herald-mapping-try")
    except PoisonRecord as exc:
        typer.echo(f"poison record: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if message is None:
        typer.echo(json.dumps({"ignored": True, "reason": "no rule for this event type"}))
        return
    shown = {
        "event": message.event,
        "scope": message.scope,
        "key": message.key,
        "priority": message.priority.name.lower(),
        "coalesce": message.coalesce,
        "data": message.data,
    }
    typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))


outbox_app = typer.Typer(help="The PostgreSQL outbox table.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("init")
def outbox_init(
    dsn: Annotated[
        str | None, typer.Option("--dsn", help="PostgreSQL URL (default: HERALD_OUTBOX_DSN)")
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="Table name (default: HERALD_OUTBOX_TABLE)")
    ] = None,
    print_sql: Annotated[
        bool, typer.Option("--print-sql", help="Print the DDL instead of running it")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create the outbox table, its indexes and its notify trigger (safe to run again)."""
    import asyncio

    from herald.sources.outbox import init_outbox, schema_sql

    settings = _settings(config)
    table = table or settings.outbox_table
    try:
        sql = schema_sql(table)
    except ValueError as exc:
        typer.echo(f"herald: {exc}", err=True)
        raise typer.Exit(2) from None
    if print_sql:
        typer.echo(sql)
        return
    dsn = dsn or settings.outbox_dsn
    if not dsn:
        typer.echo("herald: pass --dsn or set HERALD_OUTBOX_DSN", err=True)
        raise typer.Exit(2)

    try:
        asyncio.run(init_outbox(dsn, table))
    except Exception as exc:
        typer.echo(f"herald: cannot create {table}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"outbox table {table} is ready")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
