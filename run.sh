#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh        install into .venv, then the main job: the shipped student against the HR teacher on LFW
#                   (16 and 12 px, LR-LR and HR-LR, all 6,000 pairs), side by side
#   ./run.sh test   install into .venv (with test extras), then run the test suite
# Any other arguments go to the aird command, e.g. ./run.sh eval --res 12 --pairs hr-lr
set -euo pipefail
cd "$(dirname "$0")"
VENV=${AIRD_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Install once per version of the requirements: the stamp holds the hash of pyproject.toml and of this
# script, so a changed pin installs again and every other call starts at once (and without pip's noise).
STAMP="$VENV/.aird-installed"
WANT=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)  # the cd above: both are here
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  # torch first, pinned to the CPU wheel: the package's own "torch>=" is then already met and pip
  # never pulls a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  echo "$WANT" > "$STAMP"
fi

case "${1:-main}" in
  test)
    shift
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  main)
    exec "$VENV/bin/aird" compare
    ;;
  *)
    exec "$VENV/bin/aird" "$@"
    ;;
esac
