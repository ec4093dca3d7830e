"""``python -m gwctl.testing``: run the stand-in upstream as a process until signalled."""

from __future__ import annotations

import argparse
import asyncio
import signal

from gwctl.testing.standin import FEATURES, StandinConfig, new_event_loop, run_standin

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gwctl.testing",
        description="Run the OpenAI/Anthropic-compatible stand-in upstream (for demos, tests, benchmarks).",
        epilog="example: python -m gwctl.testing --port 8000 --models llama-3,qwen/qwen3 --api-key sk-local",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--models", default="standin-small,standin-large", help="comma-separated model ids")
    p.add_argument("--api-key", default=None, help="require this credential")
    p.add_argument("--auth-header", default=None, help="header carrying the raw key (default: Authorization: Bearer)")
    p.add_argument("--prefix", default="/v1", help="base path (default /v1)")
    p.add_argument("--stream-chunks", type=int, default=3)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--chunk-delay-ms", type=float, default=0)
    p.add_argument("--fail-status", type=int, default=None)
    p.add_argument("--strict-models", action="store_true")
    p.add_argument("--no-record", action="store_true", help="do not keep requests (benchmarks)")
    p.add_argument("--refuse", default="", help="comma-separated features to refuse: " + ",".join(sorted(FEATURES)))
    p.add_argument("--tool-arguments", default=None, help="answer a request with tools by calling its first one")
    p.add_argument("--json-text", default=None, help="the answer to a request for JSON output")
    p.add_argument("--cached-prompt", choices=["included", "excluded"], default=None, help="report repeats as cached")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Prints ``gwctl standin listening on URL`` when ready."""
    args = _parser().parse_args(argv)
    config = StandinConfig(
        models=[m for m in args.models.split(",") if m],
        api_key=args.api_key,
        auth_header=args.auth_header,
        prefix=args.prefix,
        stream_chunks=args.stream_chunks,
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        fail_status=args.fail_status,
        strict_models=args.strict_models,
        record=not args.no_record,
        refuse=frozenset(f for f in args.refuse.split(",") if f),
        tool_arguments=args.tool_arguments,
        json_text=args.json_text,
        cached_prompt=args.cached_prompt,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                pass
        standin = await run_standin(config, args.host, args.port)
        print(f"gwctl standin listening on {standin.url}", flush=True)
        try:
            await stop.wait()
        finally:
            await standin.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    return 0
