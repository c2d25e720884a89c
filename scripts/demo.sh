#!/usr/bin/env bash
# Set everything up, then run the main job (it takes no options; --help describes it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.demo "$@"
