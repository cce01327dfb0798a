#!/usr/bin/env bash
# One-time (and idempotent) set-up: the Fashion-MNIST data from Debian where apt exists, a virtual
# environment in .venv, and onceforall with its dependencies installed into it.
#   bash scripts/setup.sh          what the library and `onceforall demo` need
#   bash scripts/setup.sh --dev    also what the tests need (pytest, ruff, and Debian's chromium to
#                                  render the demo report headless)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ ${1:-} == --dev ]] && DEV=1

APT_UPDATED=0
apt_install() {  # apt_install PACKAGE WHY: best effort, where apt exists
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo="sudo"
  echo "setup: installing Debian's $1 ($2)"
  if ((APT_UPDATED == 0)); then $sudo apt-get update -qq || return 1; APT_UPDATED=1; fi
  $sudo apt-get install -y -qq "$1" >/dev/null
}

if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  apt_install dataset-fashion-mnist "the embedded default dataset" ||
    echo "setup: could not install dataset-fashion-mnist; pass data.root=DIR with the IDX files" >&2
fi
if ((DEV)) && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium "renders the demo report in the tests" ||
    echo "setup: could not install chromium; the report-rendering test will be skipped" >&2
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import onceforall, torch, torchvision, onnxruntime, pytest" 2>/dev/null ||
   [[ pyproject.toml -nt .venv/.onceforall-installed ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch .venv/.onceforall-installed
fi
