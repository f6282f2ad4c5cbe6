#!/usr/bin/env bash
# Run the TUF conformance suite (theupdateframework/tuf-conformance) against
# bsi's TUF client, `python -m bsi.trust.conformance_client` (`bsi tuf-client`).
#
# Usage:
#   tests/trust/conformance.sh SUITE_DIR [extra pytest args...]
#   TUF_CONFORMANCE_DIR=SUITE_DIR tests/trust/conformance.sh [extra pytest args...]
#
# SUITE_DIR is a checkout of tuf-conformance (a git clone or a bare git dir:
# HEAD is checked out to a temporary directory; the suite is never modified).
# The suite is not on PyPI and nothing of it is committed here, so the checkout
# must be provided. Everything else works offline except `pip install` of the
# suite's own pinned dependencies from PyPI (into a separate venv, because the
# suite pins older tuf/securesystemslib than bsi uses) and, if missing,
# `apt-get install faketime` (the suite runs clients under faketime).
#
# Environment:
#   BSI_PYTHON            python that has bsi installed (default: .venv/bin/python)
#   TUF_CONFORMANCE_VENV  venv for the suite (default: $TMPDIR/bsi-tuf-conformance-venv, reused)
#   TUF_CONFORMANCE_OPTIONAL=1  exit 0 with a notice when no suite checkout is given
#
# Expected failures are listed in tests/trust/conformance.xfails (the suite reads
# "<entrypoint>.xfails"); at most python-tuf's own list. Exit status is
# pytest's: 0 when every test passed or failed as expected.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
project="$(cd "$here/../.." && pwd)"
suite="${1:-${TUF_CONFORMANCE_DIR:-}}"
if [ $# -gt 0 ]; then shift; fi

if [ -z "$suite" ] || [ ! -e "$suite" ]; then
    echo "conformance.sh: no tuf-conformance checkout given (argument or TUF_CONFORMANCE_DIR)" >&2
    if [ "${TUF_CONFORMANCE_OPTIONAL:-0}" = 1 ]; then
        echo "conformance.sh: skipped"
        exit 0
    fi
    exit 2
fi

bsi_python="${BSI_PYTHON:-$project/.venv/bin/python}"
"$bsi_python" -c "import bsi.trust.conformance_client" || {
    echo "conformance.sh: $bsi_python cannot import bsi.trust.conformance_client" >&2
    exit 2
}

if ! command -v faketime >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get install -y -qq --no-install-recommends faketime >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime >/dev/null; }
    fi
    command -v faketime >/dev/null 2>&1 || { echo "conformance.sh: needs faketime" >&2; exit 2; }
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/bsi-tuf-conformance.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# A private copy of the suite (a bare git dir or a work tree, at its HEAD).
if git -C "$suite" rev-parse --git-dir >/dev/null 2>&1; then
    git clone -q "$suite" "$work/suite"
else
    cp -R "$suite" "$work/suite"
fi
echo "conformance.sh: tuf-conformance $(git -C "$work/suite" log -1 --format='%h %cs' 2>/dev/null || echo '(no git)')"

# The suite's pinned dependencies, in their own venv.
venv="${TUF_CONFORMANCE_VENV:-${TMPDIR:-/tmp}/bsi-tuf-conformance-venv}"
deps="$(python3 - "$work/suite/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)"
stamp="$venv/.bsi-deps"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$deps" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q $deps
    printf '%s' "$deps" > "$stamp"
fi

# The client under test: a wrapper executable, with its .xfails beside it.
entry="$work/bsi-tuf-client"
printf '#!/bin/sh\nexec "%s" -m bsi.trust.conformance_client "$@"\n' "$bsi_python" > "$entry"
chmod +x "$entry"
{ grep -v '^[[:space:]]*$' "$here/conformance.xfails" || true; } > "$entry.xfails"

cd "$work/suite"
PYTHONPATH="$work/suite" "$venv/bin/python" -m pytest tuf_conformance \
    -p no:cacheprovider -q -rfE \
    --entrypoint "$entry" "$@"
