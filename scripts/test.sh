#!/usr/bin/env bash
# Set up (once) and run the test suite. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m slow        # the slow, full-size checks
#   bash scripts/test.sh tests/test_infotext.py -q
set -euo pipefail
cd "$(dirname "$0")/.."
VISAGE_TEST_DEPS=1 bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
export PYTHONDONTWRITEBYTECODE=1
exec "${VISAGE_VENV:-.venv}/bin/python" -m pytest "$@"
