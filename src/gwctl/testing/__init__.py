"""A fast OpenAI/Anthropic-compatible stand-in upstream for the demo, the tests and the benchmarks.

Not part of the gateway: nothing in the product imports it except ``gwctl demo``.

* :mod:`gwctl.testing.responses`  the JSON and SSE bodies and the deterministic usage (pure)
* :mod:`gwctl.testing.standin`    the aiohttp server and its :class:`StandinConfig`
* :mod:`gwctl.testing.thread`     :func:`start_standin`: a stand-in in a background thread
* :mod:`gwctl.testing.cli`        ``python -m gwctl.testing``: a stand-in as a process
* :mod:`gwctl.testing.proxyproc`  `gwctl proxy` as a child process, started until ready and stopped (the demo, the tests)
"""
