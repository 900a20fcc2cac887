# Sourced by the scripts in scripts/: one shared cargo target directory and the system packages
# the project needs, installed only when missing.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# One target directory outside the clone, so a rerun on the same machine is incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/genprm/target}"
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs Debian packages that are not installed yet (as root, or through sudo).
need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Rust toolchain (edition 2024 needs Rust 1.85 or newer; developed on 1.95).
need_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
}

# A software Vulkan driver (lavapipe) so the GPU code path runs on machines without a GPU.
need_vulkan() {
  need_apt mesa-vulkan-drivers libvulkan1
}

# Vulkan's window-system probing complains when there is no runtime dir (headless machines).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/genprm-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

# python3 with sympy and mpmath, for the native code sandbox (GenPRM's code imports sympy).
need_python_sympy() {
  if ! command -v python3 >/dev/null 2>&1; then
    need_apt python3 python3-sympy
    return 0
  fi
  python3 -c "import sympy, mpmath" 2>/dev/null && return 0
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    need_apt python3-sympy
  else
    log "installing sympy for $(command -v python3)"
    python3 -m pip install -q sympy mpmath
  fi
}

# bubblewrap, the kernel sandbox the native executor runs the model's Python in.
need_sandbox() {
  need_apt bubblewrap
}

# The wasm32 target, wasm-bindgen-cli at the version Cargo.lock pins, and wasm-opt (binaryen).
need_wasm_tools() {
  rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$' || {
    log "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  }
  local want
  want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $want\$"; then
    log "cargo install wasm-bindgen-cli $want"
    # Its own target dir, shared across reruns; default features off (no TLS/network needed).
    CARGO_TARGET_DIR="$HOME/.cache/genprm/wasm-bindgen-cli" cargo install wasm-bindgen-cli --version "$want" --no-default-features
  fi
}

# wasm-opt from binaryen 116 or newer (older ones, such as Debian 12's 108, corrupt
# wasm-bindgen's externref table). Prints the command to run. Uses the system's when recent
# enough, else binaryen from npm, installed once under ~/.cache/genprm.
wasm_opt_cmd() {
  local v
  v=$(wasm-opt --version 2>/dev/null | sed -nE 's/.*version ([0-9]+).*/\1/p')
  if [ -n "$v" ] && [ "$v" -ge 116 ]; then
    echo wasm-opt
    return 0
  fi
  local dir="$HOME/.cache/genprm/binaryen"
  if [ ! -x "$dir/node_modules/.bin/wasm-opt" ]; then
    command -v npm >/dev/null 2>&1 || need_apt nodejs npm
    log "installing binaryen $BINARYEN_VERSION (wasm-opt) from npm into $dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "binaryen@$BINARYEN_VERSION" >&2
  fi
  echo "$dir/node_modules/.bin/wasm-opt"
}
BINARYEN_VERSION=132.0.0

# llama-cpp-python's OpenAI-compatible server (llama.cpp built from source by pip: about 13
# minutes on 2 shared cores the first time), for the remote-backend test. It lives in its own
# virtual environment outside the clone; the tests find it through GENPRM_LLAMA_PYTHON.
LLAMA_CPP_PYTHON_VERSION=0.3.36
need_llama_server() {
  local venv="$HOME/.cache/genprm/llama-venv"
  if ! "$venv/bin/python" -c "import llama_cpp.server, llama_cpp; assert llama_cpp.__version__ == '$LLAMA_CPP_PYTHON_VERSION'" 2>/dev/null; then
    need_apt build-essential python3-venv
    log "installing llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION into $venv (builds llama.cpp from source)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
  fi
  export GENPRM_LLAMA_PYTHON="$venv/bin/python"
}
