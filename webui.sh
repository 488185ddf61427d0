#!/usr/bin/env bash
# Start Visage. First run: creates .venv and installs the pinned requirements (CPU torch by default).
#   bash webui.sh [webui.py flags]     e.g. bash webui.sh --models-dir ~/stable-diffusion-webui/models
#   bash webui.sh --tests [pytest args] runs the test suite (same as bash scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--tests" ]; then shift; exec bash scripts/test.sh "$@"; fi
bash scripts/setup.sh
exec "${VISAGE_VENV:-.venv}/bin/python" webui.py "$@"
