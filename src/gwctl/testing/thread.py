"""A stand-in upstream in a background thread, for tests and in-process callers.

:func:`start_standin` runs a :class:`~gwctl.testing.standin.Standin` on its
own event loop in a daemon thread and returns a :class:`StandinHandle` to
address, reconfigure, inspect and stop it from synchronous code.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from gwctl.testing.standin import ReceivedRequest, Standin, StandinConfig, new_event_loop

__all__ = ["StandinConfig", "StandinHandle", "start_standin"]  # StandinConfig: what start_standin takes


class StandinHandle:
    """A stand-in running in a background thread with its own event loop."""

    def __init__(self, standin: Standin, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.standin = standin
        self._loop = loop
        self._thread = thread

    @property
    def url(self) -> str:
        """Base URL including the prefix, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.standin.url

    @property
    def base(self) -> str:
        """Scheme, host and port only, e.g. ``http://127.0.0.1:PORT``."""
        return self.standin.base

    @property
    def port(self) -> int:
        return self.standin.port

    @property
    def config(self) -> StandinConfig:
        return self.standin.config

    @property
    def received(self) -> list[ReceivedRequest]:
        return self.standin.received

    def clear(self) -> None:
        self.standin.clear()

    def configure(self, **changes: Any) -> StandinConfig:
        return self._call(lambda: self.standin.configure(**changes))

    def _call(self, fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # pragma: no cover - passed back to caller
                box.append((False, exc))
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):  # pragma: no cover
            raise TimeoutError("stand-in loop did not respond")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.standin.close(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "StandinHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_standin(config: StandinConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> StandinHandle:
    """Run a stand-in in a daemon thread; returns once it accepts connections."""
    standin = Standin(config)
    loop = new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(standin.start(host, port))
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            # as asyncio.run ends: a request still being answered (a delayed one a client gave up on)
            # is cancelled and finished, not destroyed pending when the loop closes
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="gwctl-standin", daemon=True)
    thread.start()
    if not ready.wait(10):  # pragma: no cover
        raise TimeoutError("stand-in did not start within 10 s")
    if failure:
        raise failure[0]
    return StandinHandle(standin, loop, thread)
