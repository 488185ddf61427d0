#!/usr/bin/env bash
# Create .venv and install pinned requirements once; later runs return at once.
# Environment: PYTHON (default python3), VISAGE_VENV (default .venv),
#   TORCH_SPEC (default torch==2.13.0), TORCH_PIP_ARGS (extra pip args for torch, e.g. a CUDA index),
#   VISAGE_TEST_DEPS=1 also installs requirements-test.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VISAGE_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp="$VENV/.visage-installed"
want="$(cat requirements.txt) ${TORCH_SPEC} ${TORCH_PIP_ARGS:-}"
if [ "${VISAGE_TEST_DEPS:-0}" = 1 ]; then want="$want $(cat requirements-test.txt)"; fi
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[visage] setting up $VENV (first run; about a minute)…" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and on its own: an unpinned torch pulled in by another package would fetch CUDA builds
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q "$TORCH_SPEC" ${TORCH_PIP_ARGS:-}
"$VENV/bin/pip" install -q -r requirements.txt
if [ "${VISAGE_TEST_DEPS:-0}" = 1 ]; then "$VENV/bin/pip" install -q -r requirements-test.txt; fi
printf '%s' "$want" > "$stamp"
echo "[visage] $VENV ready" >&2
