#!/usr/bin/env bash
# Create .venv and install what the project needs. Idempotent and quick when nothing changed.
#   scripts/setup.sh          runtime: Fashion-MNIST (Debian package) + requirements.txt
#   scripts/setup.sh --dev    also Chromium and requirements-dev.txt, for the tests
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

# --- system packages: the embedded dataset, and a browser for the end-to-end tests
apt_pkgs=()
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || apt_pkgs+=(dataset-fashion-mnist)
[ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ] && apt_pkgs+=(chromium)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${apt_pkgs[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    echo "setup: WARNING: missing Debian packages: ${apt_pkgs[*]}"
    echo "setup:          install them as root: apt-get install -y ${apt_pkgs[*]}"
    echo "setup:          (without dataset-fashion-mnist the app falls back to scikit-learn's digits)"
  fi
fi

# --- Python virtualenv
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do command -v "$c" >/dev/null && PY=$c && break; done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements.txt
[ "$dev" = 1 ] && req=requirements-dev.txt
stamp=.venv/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing $req into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$req"
  touch "$stamp"
fi
