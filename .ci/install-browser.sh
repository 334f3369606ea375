#!/usr/bin/env bash
# Installs what the browser tests (end-to-end tier) need on a fresh Debian machine: Debian's
# chromium (/usr/bin/chromium) and the playwright package in the project's virtual environment.
# Playwright drives that system Chromium; it never downloads a browser of its own.
# Run it after the venv exists (the README's test command makes it, and '.[test]' already
# brings playwright, so nothing is installed twice). It never touches the system Python.
# Idempotent and quiet; run as root (or with sudo).
set -euo pipefail

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x .venv/bin/python ]]; then
        PYTHON=.venv/bin/python
    else
        echo "install-browser: no virtual environment: run the README's test command first (it creates .venv)," \
             "or set PYTHON to a venv's python" >&2
        exit 1
    fi
fi

SUDO=""
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

if [[ ! -x /usr/bin/chromium ]]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the package alone, never a bundled browser.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PYTHON" -m pip install --quiet --disable-pip-version-check "playwright>=1.40"
fi

/usr/bin/chromium --version >/dev/null 2>&1 || { echo "install-browser: /usr/bin/chromium does not run" >&2; exit 1; }
"$PYTHON" -c "import playwright.sync_api" || { echo "install-browser: playwright does not import" >&2; exit 1; }
