#!/usr/bin/env bash
# Measure LiteLLM's proxy against the gwctl stand-in with wrk (32 connections),
# next to the direct-to-stand-in figure. Creates the venv first if needed.
# Extra arguments go to benchmarks/http_stack.py (e.g. --duration 10 --repeat 3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/setup.sh"
exec python "$here/../http_stack.py" --only litellm "$@"
