#!/usr/bin/env bash
# Installs the external programs the test suite runs the project's files against, once:
# - schemathesis, nats-py and redis-py (PyPI), into a folder of the project's own (no root needed):
#   schemathesis fuzzes a live `swarmd api` against schemas/openapi.json, nats-py runs the
#   Python producer example of schemas/README.md, redis-py the seed's own queue class;
# - nginx and Prometheus's promtool (Debian packages): they load the shipped
#   deploy/nginx/nginx.conf and deploy/prometheus/*.yml for real;
# - Go with nats.go and google/uuid (Debian packages, built in GOPATH mode: no module proxy
#   is needed): the Go producer example of schemas/README.md runs against the fleet;
# - curl, jq and openssl (Debian packages): the documentation's shell examples use them.
# Safe to run again: what is there is left alone.
set -euo pipefail

TOOLS_DIR="${SWARM_TOOLS_DIR:-$HOME/.cache/swarmdirector}"
SCHEMATHESIS_VERSION=4.32.5
NATS_PY_VERSION=2.16.0
REDIS_PY_VERSION=5.2.1
VENV="$TOOLS_DIR/st-venv"

say() { printf '[tools] %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] || ! command -v promtool >/dev/null 2>&1; then
  say "installing nginx and promtool (Debian packages nginx-light, prometheus)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light prometheus >/dev/null 2>&1 || {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light prometheus >/dev/null
  }
fi
if ! command -v curl >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1 \
   || ! command -v openssl >/dev/null 2>&1; then
  say "installing curl, jq and openssl (Debian packages)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl jq openssl >/dev/null 2>&1 || {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl jq openssl >/dev/null
  }
fi
GO_PACKAGES="golang-go golang-github-nats-io-go-nats-dev golang-github-google-uuid-dev"
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/github.com/nats-io/nats.go ] \
   || [ ! -d /usr/share/gocode/src/github.com/google/uuid ]; then
  say "installing Go, nats.go and uuid (Debian packages $GO_PACKAGES)"
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $GO_PACKAGES >/dev/null 2>&1 || {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $GO_PACKAGES >/dev/null
  }
fi
ensure_nats_py() {
  # The README's Python producer example and the seed's own queue class (a legacy consumer
  # beside the fleet) are run by the test suite with these clients.
  "$VENV/bin/python" -c "import nats, redis" 2>/dev/null && return 0
  say "installing nats-py $NATS_PY_VERSION and redis-py $REDIS_PY_VERSION into $VENV"
  "$VENV/bin/pip" install -q "nats-py==$NATS_PY_VERSION" "redis==$REDIS_PY_VERSION"
}
if [ -x "$VENV/bin/st" ] && "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  ensure_nats_py
  exit 0
fi
install_python() {
  say "installing python3 and python3-venv"
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
ensure_nats_py
