#!/usr/bin/env bash
# Installs the external checkers the test suite runs against the program, into a folder of
# the project's own (no root needed), once: schemathesis (PyPI), which fuzzes a live
# `swarmd api` against schemas/openapi.json. Safe to run again: what is there is left alone.
set -euo pipefail

TOOLS_DIR="${SWARM_TOOLS_DIR:-$HOME/.cache/swarmdirector}"
SCHEMATHESIS_VERSION=4.32.5
VENV="$TOOLS_DIR/st-venv"

say() { printf '[tools] %s\n' "$*"; }

if [ -x "$VENV/bin/st" ] && "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  exit 0
fi
install_python() {
  say "installing python3 and python3-venv"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
}
command -v python3 >/dev/null 2>&1 || install_python
say "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
mkdir -p "$TOOLS_DIR"
rm -rf "$VENV"
# Debian's python3 makes venvs only with python3-venv installed.
python3 -m venv "$VENV" 2>/dev/null || { install_python; rm -rf "$VENV"; python3 -m venv "$VENV"; }
"$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
"$VENV/bin/st" --version
