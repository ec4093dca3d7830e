"""`gwctl proxy`: run the gateway in the foreground."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from gwctl.activity import redact_dsn, resolve_dsn
from gwctl.cli.common import ActivityOpt, fail, store_path
from gwctl.context import current
from gwctl.core.validate import validate
from gwctl.store.file import EXPOSURE_FIX, exposure, load
from gwctl.store.paths import default_activity_path

LOOPBACK = ("127.", "::1", "localhost")


def single_app(name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, rich_markup_mode=None)
    app.command("proxy")(proxy)
    return app


HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option("--port", help="Port to listen on (0 picks a free one).")]
WorkersOpt = Annotated[int, typer.Option("--workers", metavar="N", help="Worker processes sharing the port.")]
NoAuthOpt = Annotated[
    bool, typer.Option("--no-auth", help="Accept requests without a gateway key (loopback hosts only).")
]
BodyLimitOpt = Annotated[
    int, typer.Option("--body-limit", metavar="BYTES", help="Largest request body accepted (413 above).")
]
GraceOpt = Annotated[
    float, typer.Option("--grace", metavar="S", help="Seconds in-flight requests get to finish on SIGTERM.")
]
ReloadIntervalOpt = Annotated[
    float, typer.Option("--reload-interval", metavar="S", help="How often to check the store for changes.")
]
AccessLogOpt = Annotated[bool, typer.Option("--access-log", help="Log one line per request to stderr.")]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        metavar="text|json",
        help="The proxy's own log and the access log: readable text, or one JSON object a line.",
    ),
]
HeadTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--head-timeout",
        metavar="S",
        help="Seconds a client gets to send a request's headers once it began (408 after).",
    ),
]
BodyTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--body-timeout",
        metavar="S",
        help="Seconds a client gets to send a request's body after its headers (408 after).",
    ),
]
MaxConnectionsOpt = Annotated[
    int,
    typer.Option(
        "--max-connections", metavar="N", help="Open client connections per worker; more are refused with 503."
    ),
]
MaxConnectionsPerClientOpt = Annotated[
    int,
    typer.Option(
        "--max-connections-per-client",
        metavar="N",
        help="Open connections per client address, per worker; more are refused with 503.",
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        metavar="PORT",
        help="Serve Prometheus metrics at GET /metrics on this port, a listener of its own (off when not given).",
    ),
]
MetricsHostOpt = Annotated[
    str,
    typer.Option("--metrics-host", help="Address the metrics listener binds (loopback unless told otherwise)."),
]


def proxy(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 4000,
    workers: WorkersOpt = 1,
    activity: ActivityOpt = None,
    no_auth: NoAuthOpt = False,
    body_limit: BodyLimitOpt = 32 * 1024 * 1024,
    grace: GraceOpt = 30.0,
    reload_interval: ReloadIntervalOpt = 1.0,
    access_log: AccessLogOpt = False,
    head_timeout: HeadTimeoutOpt = 10.0,
    body_timeout: BodyTimeoutOpt = 60.0,
    max_connections: MaxConnectionsOpt = 4096,
    max_connections_per_client: MaxConnectionsPerClientOpt = 256,
    log_format: LogFormatOpt = "text",
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
) -> None:
    """Run the gateway: OpenAI- and Anthropic-compatible endpoints that enforce the store.

    POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
    /v1/messages; GET /v1/models; GET /healthz and /readyz (no key needed). Clients authenticate with a
    gateway key (Authorization: Bearer KEY or x-api-key: KEY) and may name
    their agent with X-Gwctl-Agent. The store is reloaded when it changes.
    SIGTERM stops accepting, lets in-flight requests finish, flushes the log.
    Upstreams are reached through HTTPS_PROXY / HTTP_PROXY / ALL_PROXY when set
    (an http:// proxy), except the hosts in NO_PROXY. OpenTelemetry traces are
    exported when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp) is
    set and the otel extra is installed (pip install 'gwctl[otel]').
    It refuses to start on a store with errors (as gwctl validate reports
    them) or one that other users may read or write.

    With --metrics-port, Prometheus metrics (the whole server's, all workers)
    are served at GET /metrics on --metrics-host (127.0.0.1 by default), never
    on the proxy's port.

    Example: gwctl proxy --port 4000 --activity sqlite:///var/lib/gwctl/activity.db
    """
    # the server stack (asyncio server, upstream client, activity writers) loads only when the proxy starts
    from gwctl.proxy.server import ProxyConfig, run

    _check_options(port, workers, body_limit, head_timeout, body_timeout, max_connections, max_connections_per_client)
    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, not '{log_format}'")
    if metrics_port is not None and not (0 <= metrics_port <= 65535):
        fail(f"--metrics-port must be between 0 and 65535, got {metrics_port}")
    env = current()
    path = store_path()
    snapshot, problems = _checked_store(path, env.environ)
    _check_auth(no_auth, host, snapshot)
    dsn = _activity_dsn(activity, env.environ)
    traces = _traces(env.environ)
    _start_logging(env, problems, path, dsn, log_format)
    if traces:
        if log_format == "json":
            logging.getLogger("gwctl.proxy").info("%s", traces)
        else:
            env.stderr.write(traces + "\n")
    config = ProxyConfig(
        store_path=path,
        activity_dsn=dsn,
        no_auth=no_auth,
        body_limit=body_limit,
        reload_interval=reload_interval,
        grace_period=grace,
        access_log=access_log,
        log_format=log_format,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
    )
    metrics = None if metrics_port is None else (metrics_host, metrics_port)
    raise typer.Exit(run(config, snapshot, host, port, workers, metrics))


def _check_options(
    port, workers, body_limit, head_timeout, body_timeout, max_connections, max_connections_per_client
) -> None:
    if workers < 1:
        fail("--workers must be at least 1")
    if body_limit < 1:
        fail("--body-limit must be a positive number of bytes")
    if not (head_timeout > 0 and body_timeout > 0):
        fail("--head-timeout and --body-timeout must be positive numbers of seconds")
    if max_connections < 1 or max_connections_per_client < 1:
        fail("--max-connections and --max-connections-per-client must be at least 1")
    if not (0 <= port <= 65535):
        fail(f"--port must be between 0 and 65535, got {port}")


def _check_auth(no_auth: bool, host: str, snapshot) -> None:
    """--no-auth only on a loopback host; without it, at least one gateway key."""
    if no_auth and not host.startswith(LOOPBACK):
        fail(
            f"--no-auth is refused on a non-loopback host ({host})",
            "create a key with gwctl key create NAME, or listen on 127.0.0.1",
        )
    if not no_auth and not snapshot.keys:
        fail(
            "no gateway keys exist, so every request would be refused",
            "create one with: gwctl key create NAME (or pass --no-auth on a loopback host for local testing)",
        )


def _activity_dsn(activity: str | None, environ) -> str:
    """--activity, else $GWCTL_ACTIVITY, else the user data dir's log."""
    try:
        return resolve_dsn(activity, environ, default_activity_path())
    except ValueError as exc:
        fail(str(exc))


def _traces(environ) -> str | None:
    """The line saying where traces go, when the OTEL_* variables ask for them; a clear error when they cannot
    be exported (the otel extra is missing, an exporter or protocol the gateway does not speak)."""
    from gwctl.proxy.tracing import check_installed, wanted

    setting = wanted(environ)
    if setting is None:
        return None
    check_installed()
    return setting.describe()


def _start_logging(env, problems, path, dsn: str, log_format: str = "text") -> None:
    """Log to stderr (text or JSON lines); say which store and log are used, and the warnings about credentials."""
    from gwctl.logs import setup

    setup(log_format, env.stderr)
    log = logging.getLogger("gwctl.proxy")
    for problem in problems:  # warnings never stop the proxy; the ones about credentials are worth a line
        if "credential" in problem.message:
            if log_format == "json":
                log.warning("%s: %s", problem.where, problem.message)
            else:
                env.stderr.write(f"{problem.level}: {problem.where}: {problem.message}\n")
    if log_format == "json":
        log.info("store %s; activity log %s", path, redact_dsn(dsn))
    else:
        env.stderr.write(f"store {path}; activity log {redact_dsn(dsn)}\n")


def _checked_store(path, environ):
    """The store's snapshot and its validate problems; refuses one others may read or write, or one with errors."""
    exposed = exposure(path)
    if exposed:
        fail(f"{exposed}; it holds credentials, so the proxy will not start", EXPOSURE_FIX.format(path=path))
    snapshot = load(path).snapshot
    # the same check as `gwctl validate` (its errors are the store's; messages never hold a secret)
    problems = validate(snapshot, frozenset(environ))
    errors = [p for p in problems if p.level == "error"]
    if errors:
        listed = "".join(f"\n  {p.where}: {p.message}" for p in errors)
        fail(
            f"the store {path} has {len(errors)} error{'s' if len(errors) != 1 else ''} that gwctl validate reports, "
            f"so the proxy will not start:{listed}",
            "fix them, run gwctl validate until it says ok, then start the proxy again",
        )
    return snapshot, problems
