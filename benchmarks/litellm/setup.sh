#!/usr/bin/env bash
# Create benchmarks/.venv-litellm (git-ignored) with LiteLLM's proxy, idempotently.
# LiteLLM is only a comparison point for benchmarks: never a gwctl dependency.
# 1.100.5 is pinned because newer releases need a certifi the registry lacks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.venv-litellm"
version="${LITELLM_VERSION:-1.100.5}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import litellm, importlib.metadata as m; assert m.version('litellm') == '$version'" 2>/dev/null; then
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "litellm[proxy]==$version"
fi
"$venv/bin/python" -c "import importlib.metadata as m; print('litellm', m.version('litellm'), 'in', '$venv')"
