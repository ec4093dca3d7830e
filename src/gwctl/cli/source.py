"""`gwctl source …`: the custom providers (OpenAI-compatible upstreams)."""

from __future__ import annotations

import getpass
from dataclasses import replace
from types import MappingProxyType
from typing import Annotated, Optional

import typer

from gwctl.cli import complete
from gwctl.cli.common import NAME_RE, JsonOpt, YesOpt, check_seconds, confirm, edit, fail, load, need_source
from gwctl.cli.refresh import masked, run_refresh
from gwctl.context import current
from gwctl.core.config import SOURCE_APIS, Secret, Source
from gwctl.core.headers import parse_header_option, parse_headers_json, validate_header_name, validate_static_headers
from gwctl.core.validate import auth_header_problem, base_url_problem, env_name_problem, shown_env
from gwctl.render import error, mask, message, print_fields, print_json, print_table, stdout_is_tty, url, warn

app = typer.Typer(
    help="Add, edit, test and refresh upstream sources.\n\nExample: gwctl source add local --base-url http://127.0.0.1:8000/v1 --auth-env VLLM_KEY --test",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SourceArg = Annotated[str, typer.Argument(metavar="NAME", help="The source.", autocompletion=complete.sources)]
BaseUrlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--base-url", metavar="URL", help="Base URL of the OpenAI-compatible API, e.g. https://gateway.example/v1."
    ),
]
AuthHeaderOpt = Annotated[
    Optional[str],
    typer.Option(
        "--auth-header",
        metavar="H",
        help="Header carrying the credential; blank means 'Authorization: Bearer <value>'.",
    ),
]
AuthValueOpt = Annotated[
    Optional[str],
    typer.Option(
        "--auth-value",
        metavar="V",
        help="The credential. '-' reads it from stdin (or a hidden prompt). Prefer --auth-env.",
    ),
]
AuthEnvOpt = Annotated[
    Optional[str],
    typer.Option(
        "--auth-env",
        metavar="VAR",
        help="Read the credential from this environment variable when used (the store keeps only the name).",
    ),
]
PassOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--passthrough/--no-passthrough", help="Route this source's requests directly, skipping catalog checks."
    ),
]
HeaderOpt = Annotated[
    Optional[list[str]], typer.Option("--header", metavar="'K: V'", help="A static non-auth header (repeatable).")
]
HeadersJsonOpt = Annotated[
    Optional[str],
    typer.Option(
        "--headers-json", metavar="JSON", help='Static non-auth headers as a JSON object, e.g. \'{"X-Team": "ml"}\'.'
    ),
]
CatalogOnlyOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--catalog-only/--no-catalog-only", help="Refuse requests for this source's models that have no catalog entry."
    ),
]
TestOpt = Annotated[bool, typer.Option("--test", help="Test the connection first; save nothing if it fails.")]
ConnectTimeoutOpt = Annotated[
    Optional[float], typer.Option("--connect-timeout", metavar="S", help="Connect timeout in seconds (proxy and test).")
]
ReadTimeoutOpt = Annotated[
    Optional[float], typer.Option("--read-timeout", metavar="S", help="Read timeout in seconds (proxy and test).")
]
RespHeaderOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--response-header",
        metavar="NAME",
        help="An upstream response header to pass on to clients beyond the default set (repeatable; on edit the list given replaces the old one, '' clears it).",
    ),
]
CaFileOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ca-file",
        metavar="PATH",
        help="PEM file of CA certificates to trust for this https source, in addition to the system store (proxy and test); '' removes it.",
    ),
]

ApiOpt = Annotated[
    Optional[str],
    typer.Option(
        "--api",
        metavar="API",
        autocompletion=lambda: list(SOURCE_APIS),
        help="The API the upstream speaks: openai, anthropic or both (the default: requests go in the client's API). "
        "With one API the proxy translates requests made in the other (Messages <-> Chat Completions).",
    ),
]


def _api(value: str | None) -> str | None:
    """--api checked against the values the proxy acts on (None: not given)."""
    if value is not None and value not in SOURCE_APIS:
        fail(f"--api must be one of {', '.join(SOURCE_APIS)}, not '{value}'")
    return value


def _read_secret(value: str | None) -> str | None:
    if value != "-":
        return value
    env = current()
    if env.stdin_is_tty():
        secret = getpass.getpass("Auth value (hidden): ")
    else:
        secret = env.stdin.readline().rstrip("\r\n")
    if not secret:
        fail(
            "no auth value was given on stdin", 'pipe it in, e.g. printf %s "$KEY" | gwctl source add … --auth-value -'
        )
    return secret


def _check_env_name(var: str) -> None:

    problem = env_name_problem(var, "--auth-env", cli=True)
    if problem:
        fail(problem, "e.g. --auth-env VLLM_KEY")


def _headers(
    header: list[str] | None, headers_json: str | None, base: dict[str, str] | None = None
) -> dict[str, str] | None:
    """Static headers from the options, or None when neither was given."""
    if header is None and headers_json is None:
        return None
    result = dict(base or {})
    try:
        if headers_json is not None:
            result = parse_headers_json(headers_json)
        for item in header or []:
            k, v = parse_header_option(item)
            for existing in [e for e in result if e.lower() == k.lower()]:
                del result[existing]
            result[k] = v
    except ValueError as exc:
        fail(str(exc))
    return result


def _validated(name, base_url, auth_header, headers, connect_timeout, read_timeout, header_label="--auth-header"):
    problem = base_url_problem(base_url) or (auth_header and auth_header_problem(auth_header, header_label, cli=True))
    if problem:
        fail(problem)
    try:
        validate_static_headers(headers, auth_header or "")
    except ValueError as exc:
        fail(str(exc))
    for label, t in (("--connect-timeout", connect_timeout), ("--read-timeout", read_timeout)):
        check_seconds(label, t)


def _ca_file(text: str | None, base_url: str) -> str | None:
    """The stored form of --ca-file: an absolute path to a readable PEM file ('' means none)."""
    from gwctl.tls import ca_file_problem, expand_ca_path  # ssl (~10 ms): only for --ca-file

    if not text or not text.strip():
        return None
    path = expand_ca_path(text)
    problem = ca_file_problem(path)
    if problem:
        fail(problem, "give a PEM file with the CA certificate(s) that signed the upstream's certificate")
    if not base_url.strip().lower().startswith("https://"):
        warn(f"the CA file is only used for https:// base URLs; {base_url.strip()} is not one")
    return path


def _fields(src) -> dict:
    """The TOML keys of a source (None deletes)."""
    from gwctl.store.document import inline  # tomlkit (~10 ms): only commands that write the store load it

    return {
        "base_url": src.base_url,
        "auth_header": src.auth_header or None,
        "auth_value": src.auth.value,
        "auth_env": src.auth.env,
        "passthrough": src.passthrough,
        "catalog_only": src.catalog_only,
        "headers": inline(src.headers) if src.headers else None,
        "connect_timeout": src.connect_timeout,
        "read_timeout": src.read_timeout,
        "ca_file": src.ca_file,
        "response_headers": list(src.response_headers) or None,
        "api": None if src.api == "both" else src.api,
    }


def _response_headers(names: list[str] | None) -> tuple[str, ...] | None:
    """--response-header values as stored: lower-case header names ('' alone clears the list)."""
    if names is None:
        return None
    out = []
    for n in names:
        if not n.strip():
            continue
        try:
            out.append(validate_header_name(n.strip()).lower())
        except ValueError as exc:
            fail(f"--response-header: {exc}")
    return tuple(dict.fromkeys(out))


def _run_test(src) -> None:
    from gwctl.discovery import test_source  # httpx (~80 ms): only when a source is contacted

    result = masked(test_source(src, current().environ), src)
    if not result.ok:
        error(f"connection test failed: {result.message}", result.hint)
        message("nothing was saved")
        raise typer.Exit(1)
    message(f"connection ok: {result.message}")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A short name, used in references like NAME/MODEL_ID.")],
    base_url: BaseUrlOpt = None,
    auth_header: AuthHeaderOpt = None,
    auth_value: AuthValueOpt = None,
    auth_env: AuthEnvOpt = None,
    passthrough: PassOpt = None,
    header: HeaderOpt = None,
    headers_json: HeadersJsonOpt = None,
    catalog_only: CatalogOnlyOpt = None,
    test: TestOpt = False,
    connect_timeout: ConnectTimeoutOpt = None,
    read_timeout: ReadTimeoutOpt = None,
    ca_file: CaFileOpt = None,
    response_header: RespHeaderOpt = None,
    api: ApiOpt = None,
) -> None:
    """Add a source.

    Example: gwctl source add local --base-url http://127.0.0.1:8000/v1 --auth-env VLLM_KEY --test
    """
    if not NAME_RE.match(name):
        fail(f"'{name}' is not a valid source name", "use letters, digits, '.', '_' and '-' (no '/'), e.g. local-vllm")
    if not base_url:
        fail("--base-url is required", "e.g. --base-url https://gateway.example/v1")
    _check_auth_options(auth_value, auth_env, no_auth=False)
    headers = _headers(header, headers_json) or {}
    _validated(name, base_url, auth_header, headers, connect_timeout, read_timeout)
    ca_path = _ca_file(ca_file, base_url)
    if name in load().sources:
        fail(f"a source named '{name}' already exists", f"change it with: gwctl source edit {name} …")
    secret = _read_secret(auth_value)
    src = Source(
        name=name,
        base_url=base_url.strip(),
        auth_header=auth_header or "",
        auth=Secret(value=secret, env=auth_env),
        passthrough=bool(passthrough),
        catalog_only=bool(catalog_only),
        headers=MappingProxyType(headers),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        ca_file=ca_path,
        response_headers=_response_headers(response_header) or (),
        api=_api(api) or "both",
    )
    if test:
        _run_test(src)
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    with edit() as (doc, snap):
        if name in snap.sources:
            fail(f"a source named '{name}' already exists", f"change it with: gwctl source edit {name} …")
        document.put_source(doc, name, _fields(src))
    message(
        f"added source {name}" + ("" if test else f"; next: gwctl source test {name} && gwctl source refresh {name}")
    )


RemoveHeaderOpt = Annotated[
    Optional[list[str]], typer.Option("--remove-header", metavar="K", help="Drop a static header (repeatable).")
]
NoAuthOpt = Annotated[bool, typer.Option("--no-auth", help="Remove the stored credential.")]


@app.command("edit")
def edit_cmd(
    name: Annotated[str, typer.Argument(help="The source to change.", autocompletion=complete.sources)],
    base_url: BaseUrlOpt = None,
    auth_header: AuthHeaderOpt = None,
    auth_value: AuthValueOpt = None,
    auth_env: AuthEnvOpt = None,
    passthrough: PassOpt = None,
    header: HeaderOpt = None,
    headers_json: HeadersJsonOpt = None,
    catalog_only: CatalogOnlyOpt = None,
    test: TestOpt = False,
    connect_timeout: ConnectTimeoutOpt = None,
    read_timeout: ReadTimeoutOpt = None,
    ca_file: CaFileOpt = None,
    response_header: RespHeaderOpt = None,
    remove_header: RemoveHeaderOpt = None,
    no_auth: NoAuthOpt = False,
    api: ApiOpt = None,
) -> None:
    """Change a source: rotate credentials, change the URL or static headers.

    Only the options given change. --header adds or replaces one header;
    --headers-json replaces them all; --ca-file '' removes the CA file.

    Example: gwctl source edit local --auth-env NEW_VLLM_KEY --header 'X-Team: ml'
    """
    _check_auth_options(auth_value, auth_env, no_auth)
    _api(api)
    existing = need_source(load(), name)
    ca_path = None if ca_file is None else _ca_file(ca_file, base_url if base_url is not None else existing.base_url)
    secret = _read_secret(auth_value)

    def changed(src):
        headers = _edited_headers(name, src, header, headers_json, remove_header)
        new = replace(
            src,
            base_url=base_url.strip() if base_url is not None else src.base_url,
            auth_header=src.auth_header if auth_header is None else auth_header,
            auth=_edited_auth(src, no_auth, secret, auth_env),
            passthrough=src.passthrough if passthrough is None else passthrough,
            catalog_only=src.catalog_only if catalog_only is None else catalog_only,
            headers=MappingProxyType(headers),
            connect_timeout=src.connect_timeout if connect_timeout is None else connect_timeout,
            read_timeout=src.read_timeout if read_timeout is None else read_timeout,
            ca_file=src.ca_file if ca_file is None else ca_path,
            response_headers=src.response_headers if response_header is None else _response_headers(response_header),
            api=src.api if api is None else api,
        )
        _validated_edit(name, new, auth_header is not None)
        return new

    if test:
        _run_test(changed(existing))
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    with edit() as (doc, snap):
        new = changed(need_source(snap, name))
        document.put_source(doc, name, _fields(new))
    message(f"updated source {name}")


def _validated_edit(name: str, new, auth_header_given: bool) -> None:
    """`_validated` on an edited source; its own auth header is named by where it came from."""
    _validated(
        name,
        new.base_url,
        new.auth_header,
        dict(new.headers),
        new.connect_timeout,
        new.read_timeout,
        "--auth-header" if auth_header_given else f"sources.{name}.auth_header",
    )


def _check_auth_options(auth_value: str | None, auth_env: str | None, no_auth: bool) -> None:
    if auth_value is not None and auth_env is not None:
        fail("give either --auth-value or --auth-env, not both")
    if no_auth and (auth_value is not None or auth_env is not None):
        fail("--no-auth cannot be combined with --auth-value or --auth-env")
    if auth_env is not None:
        _check_env_name(auth_env)


def _edited_headers(name: str, src, header, headers_json, remove_header) -> dict[str, str]:
    """The source's static headers after --header, --headers-json and --remove-header."""
    headers = _headers(header, headers_json, dict(src.headers))
    headers = dict(src.headers) if headers is None else headers
    for k in remove_header or []:
        match = [e for e in headers if e.lower() == k.lower()]
        if not match:
            fail(f"source {name} has no static header '{k}'")
        for e in match:
            del headers[e]
    return headers


def _edited_auth(src, no_auth: bool, secret: str | None, auth_env: str | None) -> Secret:
    if no_auth:
        return Secret()
    if secret is not None:
        return Secret(value=secret)
    if auth_env is not None:
        return Secret(env=auth_env)
    return src.auth


def _auth_json(src, reveal: bool) -> dict:

    if src.auth.env:
        kind = "env"
    elif src.auth.value:
        kind = "value"
    else:
        kind = "none"
    return {
        "kind": kind,
        "header": src.effective_auth_header,
        "scheme": "Bearer" if not src.auth_header else None,
        "env": (src.auth.env if reveal else shown_env(src.auth.env)[1:]) if src.auth.env else None,
        "value": mask(src.auth.value, reveal) if src.auth.value else None,
    }


def source_json(src, snap, reveal: bool = False, models: bool = False) -> dict:

    enabled = sum(1 for v in src.models.values() if v)
    out = {
        "name": src.name,
        "base_url": url(src.base_url, reveal),
        "auth": _auth_json(src, reveal),
        "passthrough": src.passthrough,
        "catalog_only": src.catalog_only,
        "headers": dict(src.headers),
        "connect_timeout": src.connect_timeout,
        "read_timeout": src.read_timeout,
        "ca_file": src.ca_file,
        "response_headers": list(src.response_headers),
        "api": src.api,
        "model_count": len(src.models),
        "enabled_model_count": enabled,
        "catalog_entries": sum(1 for e in snap.catalog.values() if e.source == src.name),
        "failover": None if src.failover is None else _policy_json(src.failover),
    }
    if models:
        out["models"] = [{"id": m, "enabled": e} for m, e in src.models.items()]
    return out


def _policy_json(policy) -> dict:
    """A source's own failover policy ([sources.NAME.failover]), as JSON."""
    from gwctl.core.config import FAILURE_CLASSES

    known = [c for c in FAILURE_CLASSES if c in policy.on]
    return {
        "on": known + sorted(c for c in policy.on if c not in FAILURE_CLASSES),
        "max_attempts": policy.max_attempts,
        "max_seconds": policy.max_seconds,
        "cooldown_after": policy.cooldown_after,
        "cooldown_seconds": policy.cooldown_seconds,
        "retry_after": policy.retry_after,
    }


def _auth_display(src, reveal: bool) -> str:

    header = src.effective_auth_header
    if src.auth.env:
        return f"{header}: " + (f"${src.auth.env}" if reveal else shown_env(src.auth.env))
    if src.auth.value:
        scheme = "Bearer " if not src.auth_header else ""
        return f"{header}: {scheme}{mask(src.auth.value, reveal)}"
    return "(none)"


@app.command("list")
def list_cmd(json_: JsonOpt = False) -> None:
    """List sources.

    Example: gwctl source list --json
    """
    snap = load()
    if json_:
        print_json([source_json(s, snap) for s in snap.sources.values()])
        return
    rows = []
    for s in snap.sources.values():
        enabled = sum(1 for v in s.models.values() if v)
        flags = ",".join(f for f, on in (("passthrough", s.passthrough), ("catalog-only", s.catalog_only)) if on)
        rows.append([s.name, url(s.base_url), _auth_display(s, False), flags or "-", f"{enabled}/{len(s.models)}"])
    print_table(
        ["NAME", "BASE URL", "AUTH", "FLAGS", "MODELS"],
        rows,
        empty="no sources yet; add one with: gwctl source add NAME --base-url URL",
    )


@app.command("show")
def show(
    name: SourceArg,
    json_: JsonOpt = False,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Print the stored credential (and any user info in the base URL) unmasked.")
    ] = False,
) -> None:
    """Show one source, its credential masked (unless --reveal) and its models.

    A base URL's user info (user:secret@, which gwctl validate refuses) is a
    credential too: it shows as ***@ unless --reveal.

    Example: gwctl source show local --json
    """
    snap = load()
    src = need_source(snap, name)
    if json_:
        print_json(source_json(src, snap, reveal, models=True))
        return
    pairs = [
        ("name", src.name),
        ("base_url", url(src.base_url, reveal)),
        ("auth", _auth_display(src, reveal)),
        ("passthrough", src.passthrough),
        ("catalog_only", src.catalog_only),
        ("api", src.api),
    ]
    for k, v in src.headers.items():
        pairs.append(("header", f"{k}: {v}"))
    if src.connect_timeout:
        pairs.append(("connect_timeout", f"{src.connect_timeout:g}s"))
    if src.read_timeout:
        pairs.append(("read_timeout", f"{src.read_timeout:g}s"))
    if src.ca_file:
        pairs.append(("ca_file", src.ca_file))
    if src.response_headers:
        pairs.append(("response_headers", ", ".join(src.response_headers)))
    if src.failover is not None:
        p = _policy_json(src.failover)
        pairs.append(
            (
                "failover",
                f"up to {p['max_attempts']} attempts in {p['max_seconds']:g}s on {', '.join(p['on'])}; "
                f"cooldown after {p['cooldown_after']} failures for {p['cooldown_seconds']:g}s",
            )
        )
    enabled = sum(1 for v in src.models.values() if v)
    pairs.append(("models", f"{enabled} enabled of {len(src.models)}"))
    for m, e in src.models.items():
        pairs.append(("model", f"{name}/{m}" + ("" if e else " (disabled)")))
    print_fields(pairs)


@app.command("remove")
def remove(name: SourceArg, yes: YesOpt = False) -> None:
    """Remove a source and its discovered models (catalog entries are kept).

    Example: gwctl source remove local --yes
    """
    from gwctl.store import document  # tomlkit (~10 ms): only commands that write the store load it

    snap = load()
    need_source(snap, name)
    confirm(f"Remove source {name}?", yes)
    with edit() as (doc, snap):
        need_source(snap, name)
        users = [f"{r.agent} -> {r.model_name}" for r in snap.routes if r.provider == name]
        if users:
            fail(
                f"source {name} is used by routes: {', '.join(users)}",
                "remove or change those routes first (gwctl route remove …)",
            )
        if snap.settings.fallback_source == name:
            fail(f"source {name} is the fallback source", "unset it first: gwctl route fallback --unset")
        document.remove_source(doc, name)
        if snap.settings.default_model and snap.settings.default_model.startswith(name + "/"):
            document.set_setting(doc, "default_model", None)
            warn(f"the organisation default model {snap.settings.default_model} was unset")
        kept = sum(1 for e in snap.catalog.values() if e.source == name)
    message(f"removed source {name}")
    if kept:
        warn(f"{kept} catalog entries for {name} were kept (remove them with gwctl catalog remove)")


@app.command("test")
def test_cmd(
    name: SourceArg,
    json_: JsonOpt = False,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", metavar="S", help="Seconds to wait (default 10 or the source's timeouts)."),
    ] = None,
) -> None:
    """Test a source: GET {base_url}/models with its credential and headers.

    Exit 1 when the test fails; the message says why (DNS, refused, TLS,
    timeout, credential, wrong base URL, not JSON, not a model list).

    Example: gwctl source test local
    """
    from gwctl.discovery import test_source  # httpx (~80 ms): only when a source is contacted

    check_seconds("--timeout", timeout)
    src = need_source(load(), name)
    result = masked(test_source(src, current().environ, timeout=timeout), src)
    if json_:
        print_json(result.to_json())
    elif result.ok:
        current().stdout.write(
            f"ok\t{name}\t{result.status}\t{result.latency_ms:.0f} ms\t{len(result.models)} models\n"
            if not stdout_is_tty()
            else f"✓ {name}: {result.message} ({result.url})\n"
        )
    if not result.ok:
        if not json_:
            error(f"{name}: {result.message}", result.hint)
        raise typer.Exit(1)


@app.command("probe")
def probe_cmd(
    name: Annotated[str, typer.Argument(help="The source to probe.", autocompletion=complete.sources)],
    model: Annotated[
        Optional[str],
        typer.Argument(
            help="The upstream model id (default: the source's only listed model).",
            autocompletion=complete.source_models,
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the results as catalog capability flags and the source's --api.")
    ] = False,
    yes: YesOpt = False,
    json_: JsonOpt = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="S", help="Seconds each probe may take.")] = 20.0,
) -> None:
    """Find out what an upstream model really supports, with a few tiny requests.

    Probes plain chat, streaming, usage in streams, whether prompt_tokens
    counts cached tokens, tools, images, JSON output and /v1/messages
    (max_tokens 1-16 each). Prints what it will send and the most it can
    cost, then asks (--yes skips). --apply writes the known results as the
    catalog entry's capability flags and the source's api; unknown results
    (timeouts, 5xx) are never written.

    Example: gwctl source probe local llama-3.1-8b --apply
    """
    from gwctl.cli.probe import run

    run(name, model, apply, yes, json_, timeout)


@app.command("refresh")
def refresh(
    name: Annotated[
        Optional[str], typer.Argument(help="The source to refresh (or --all).", autocompletion=complete.sources)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Refresh every source, concurrently.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Discover models: add new ids, drop ids the upstream no longer lists.

    New models are enabled when settings.auto_enable_models is true (the
    default). With --all, sources are refreshed concurrently; a failing source
    does not stop the others and the exit code is 3 when some failed (1 when
    all failed).

    Example: gwctl source refresh --all
    """
    if bool(name) == bool(all_):
        fail("name one source or give --all", "e.g. gwctl source refresh local")
    raise typer.Exit(run_refresh(None if all_ else name, json_))
