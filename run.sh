#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh        install into .venv, then run the main job (LFW verification of the HR teacher at 16 px)
#   ./run.sh test   install into .venv (with test extras), then run the test suite
# Extra arguments after the first go to the command, e.g. ./run.sh eval --res 12 --pairs hr-lr
set -euo pipefail
cd "$(dirname "$0")"
VENV=${AIRD_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# torch first, pinned to the CPU wheel: the package's own "torch>=" is then already met and pip
# never pulls a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[test]"

case "${1:-main}" in
  test)
    shift
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  main)
    exec "$VENV/bin/aird" eval --benchmark lfw --res 16 --pairs lr-lr --plots aird-results/plots
    ;;
  *)
    exec "$VENV/bin/aird" "$@"
    ;;
esac
