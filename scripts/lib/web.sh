# Sourced by scripts (after scripts/lib/common.sh): Node dependencies, the web app's build and
# system Chromium for the browser tests. Installs only what is missing.

# Node.js 20.19+ and npm (Vite 8 needs 20.19 or 22.12+; Debian 13 ships 20.19).
need_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    need_apt nodejs npm
  fi
  local v
  v="$(node -p 'process.versions.node')"
  if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit((a===20&&b>=19)||(a===22&&b>=12)||a>22?0:1)'; then
    echo "Node.js $v is too old for the web build: it needs 20.19+ or 22.12+ (Debian 13's nodejs, or https://nodejs.org)" >&2
    exit 1
  fi
}

# web/node_modules from web/package-lock.json (npm ci), redone when the lock file changes.
need_web_deps() {
  need_node
  local stamp="$ROOT/web/node_modules/.genprm-lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$ROOT/web/package-lock.json" "$stamp"; then
    log "installing the web app's node dependencies (npm ci)"
    npm ci --prefix "$ROOT/web" --no-audit --no-fund --loglevel=error
    cp "$ROOT/web/package-lock.json" "$stamp"
  fi
}

# Builds the web app into web/dist: fetches the sympy/mpmath wheels from PyPI (pinned, sha256
# checked), compiles them to bytecode with Pyodide, copies Pyodide and the tiny model, builds the
# npm package into pkg/dist (pkg/scripts/build.mjs, which ends by checking that dist/ is complete;
# `npm pack --prefix pkg` then packs it), type-checks and bundles (with pkg/wasm when
# scripts/build-wasm has made it).
build_web() {
  need_web_deps
  log "building the web app (web/dist)"
  npm run --prefix "$ROOT/web" --silent build
}

# System Chromium for the browser tests (playwright-core drives it; no browser is downloaded).
need_chromium() {
  if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then return 0; fi
  command -v chromium >/dev/null 2>&1 || need_apt chromium
}

# The browser tests against web/dist (build_web first). Extra arguments pick suites.
run_browser_tests() {
  need_chromium
  log "browser tests (system Chromium, WebGPU on SwiftShader when there is no GPU)"
  node "$ROOT/tests/browser/run.mjs" "$@"
}
