# shellcheck shell=bash
# Sourced by scripts/run and scripts/test: the environment both need, installed once.
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
