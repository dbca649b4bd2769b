#!/usr/bin/env bash
# Installs what the dashboard's browser test needs, once: Debian's Chromium and
# playwright-core from npm (pinned, into ~/.cache/swarmdirector/ui-node; it drives the
# installed browser, nothing is downloaded besides the package). Exits 3 — "skip the browser
# test" — when either cannot be had here (no apt, no npm registry, no Node).
set -euo pipefail

TOOLS_DIR="${SWARM_TOOLS_DIR:-$HOME/.cache/swarmdirector}"
PLAYWRIGHT_VERSION=1.65.1
NODE_DIR="$TOOLS_DIR/ui-node"

say() { printf '[ui-tools] %s\n' "$*"; }
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

if ! command -v chromium >/dev/null 2>&1; then
  say "installing Chromium (Debian package chromium)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || {
      say "Chromium cannot be installed here"; exit 3; }
  }
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js and npm (Debian packages nodejs, npm)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null 2>&1 || {
    say "Node.js cannot be installed here"; exit 3; }
fi
if [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ] \
   || ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_DIR/node_modules/playwright-core/package.json"; then
  say "installing playwright-core $PLAYWRIGHT_VERSION (npm) into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  (cd "$NODE_DIR" && [ -f package.json ] || echo '{"private": true}' > "$NODE_DIR/package.json")
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null 2>&1) || {
    say "playwright-core cannot be installed here"; exit 3; }
fi
say "ready: $(command -v chromium), playwright-core $PLAYWRIGHT_VERSION"
