#!/usr/bin/env bash
# Create .venv and install pinned requirements once; later runs return at once.
# Environment: PYTHON (default python3), VISAGE_VENV (default .venv),
#   TORCH_SPEC (default torch==2.13.0), TORCH_PIP_ARGS (extra pip args for torch, e.g. a CUDA index),
#   VISAGE_TEST_DEPS=1 also installs requirements-test.txt and, for the browser tests, Debian's chromium
#   (apt-get, when /usr/bin/chromium is missing; `playwright install` is never run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium (+ a CJK and an emoji font, so screenshots are legible) for tests/test_browser.py.
# Quiet; without root/sudo or apt the browser tests skip and say why.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  local sudo=""
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[visage] /usr/bin/chromium is missing and apt-get is not available: the browser tests will be skipped" >&2
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "[visage] /usr/bin/chromium is missing (install it with: sudo apt-get install chromium): the browser tests will be skipped" >&2
      return 0
    fi
  fi
  echo "[visage] installing Debian's chromium for the browser tests…" >&2
  if $sudo apt-get update -qq >/dev/null 2>&1 \
     && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-wqy-microhei fonts-noto-color-emoji \
        >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
    echo "[visage] chromium ready" >&2
  else
    echo "[visage] could not install chromium with apt-get: the browser tests will be skipped" >&2
  fi
}
if [ "${VISAGE_TEST_DEPS:-0}" = 1 ]; then ensure_chromium; fi
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
