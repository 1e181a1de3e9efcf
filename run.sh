#!/usr/bin/env bash
# Reticulum's one entry point.
#
#   ./run.sh [twistd reticulum options]   start the server (default: --config reticulum.toml)
#   ./run.sh test [pytest args]           run the test suite (CPython, then PyPy)
#   ./run.sh users ...                    manage accounts (python -m reticulum.users)
#   ./run.sh status|registrations|calls   ask the running server (python -m reticulum.control)
#   ./run.sh --help                       all of this, then twistd reticulum's options
#
# Environment:
#   RETICULUM_PYTHON=pypy3   run on PyPy (virtualenv .venv-pypy, pins in requirements-pypy.txt)
#   RETICULUM_PYPY=0|1       `test`: skip (0) or force (1) the PyPy pass; by default it runs
#                            when no pytest arguments are given
set -euo pipefail
shopt -s inherit_errexit

orig_pwd="$PWD"
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
cd "$here"

say() { printf 'run.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root for: $*"
        return 1
    fi
}

apt_install() {
    say "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2
}

is_pypy_name() {
    case "$(basename "$1")" in
        pypy*) return 0 ;;
        *) return 1 ;;
    esac
}

# prints a hash of everything an environment is built from
env_hash() {
    local interp="$1"
    shift
    {
        "$interp" -c 'import sys; print(sys.version)'
        cat "$@" 2>/dev/null
    } | sha256sum | cut -d' ' -f1
}

# ensure_pypy: makes sure a pypy3 interpreter exists (apt-get when missing)
ensure_pypy() {
    if ! command -v pypy3 >/dev/null 2>&1; then
        apt_install pypy3
    fi
    # Debian splits venv support out in some releases
    if ! pypy3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install pypy3-venv || true
    fi
}

# have_pypy: true when pypy3 is there or could be installed now
have_pypy() {
    command -v pypy3 >/dev/null 2>&1 && return 0
    apt_install pypy3 || return 1
    command -v pypy3 >/dev/null 2>&1
}

# ensure_env KIND [WITH_TESTS] -> prints the venv folder; KIND is "cpython" or "pypy";
# WITH_TESTS=1 adds the test extras
ensure_env() {
    local kind="$1" with_tests="${2:-0}" venv interp stamp want
    if [ "$kind" = pypy ]; then
        ensure_pypy
        venv=.venv-pypy
        interp="$(command -v pypy3)"
        if [ -n "${RETICULUM_PYTHON:-}" ] && is_pypy_name "$RETICULUM_PYTHON" && command -v "$RETICULUM_PYTHON" >/dev/null 2>&1; then
            interp="$(command -v "$RETICULUM_PYTHON")"
        fi
    else
        venv=.venv
        interp="${RETICULUM_PYTHON:-python3}"
        if ! command -v "$interp" >/dev/null 2>&1; then
            say "no interpreter '$interp' found"
            return 1
        fi
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $interp"
        rm -rf "$venv"
        "$interp" -m venv "$venv" >&2
    fi
    # the server's packages, then (for `test`) the test extras, each with its own stamp
    stamp="$venv/.reticulum-stamp"
    if [ "$kind" = pypy ]; then
        want="$(env_hash "$venv/bin/python" setup.cfg pyproject.toml requirements-pypy.txt)"
    else
        want="$(env_hash "$venv/bin/python" setup.cfg pyproject.toml)"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing the server into $venv (first run or changed setup.cfg; about a minute)"
        rm -f "$stamp" "$venv/.reticulum-test-stamp"
        if [ "$kind" = pypy ]; then
            # pinned wheels that still support PyPy 3.9 (the test tools too); never build
            # cryptography (Rust) here
            pip_progress "$venv" --only-binary cryptography -r requirements-pypy.txt
            pip_progress "$venv" --no-deps --config-settings editable_mode=compat -e .
        else
            pip_progress "$venv" --config-settings editable_mode=compat -e .
        fi
        printf '%s\n' "$want" >"$stamp"
    fi
    if [ "$with_tests" = 1 ] && [ "$kind" != pypy ] \
        && [ "$(cat "$venv/.reticulum-test-stamp" 2>/dev/null)" != "$want" ]; then
        say "installing the test tools into $venv"
        pip_progress "$venv" --config-settings editable_mode=compat -e '.[test]'
        printf '%s\n' "$want" >"$venv/.reticulum-test-stamp"
    fi
    printf '%s\n' "$venv"
}

# pip_progress VENV PIP-ARGS...: pip install, saying which package it is at (pip -q is
# silent for the whole download); pip's full output is shown when it fails
pip_progress() {
    local venv="$1" log rc=0
    shift
    log="$(mktemp)"
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" 2>&1 \
        | tee "$log" \
        | sed -un -e 's/^Collecting \([^ ;<>=!~]*\).*/run.sh:   fetching \1/p' \
            -e 's/^Building wheel for \([^ ]*\).*/run.sh:   building \1/p' \
            -e 's/^Installing collected packages: \(.*\)/run.sh:   installing \1/p' >&2 \
        || rc=$?
    if [ "$rc" != 0 ]; then
        cat "$log" >&2
    fi
    rm -f "$log"
    return "$rc"
}

ensure_sipp() {
    if ! command -v sipp >/dev/null 2>&1; then
        apt_install sip-tester
    fi
}

# the cluster tests start their own Redis servers
ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
        apt_install redis-server
    fi
}

# ensure_test_tools: what the TLS phone and browser tests need, on a fresh machine too:
# baresip (SIP over TLS), Debian's chromium, node + npm; then the node packages of
# package-lock.json (playwright-core, jssip, esbuild) and the JsSIP bundle
ensure_test_tools() {
    local want=() stamp lock_hash
    command -v baresip >/dev/null 2>&1 || want+=(baresip-core)
    [ -x /usr/bin/chromium ] || want+=(chromium)
    command -v node >/dev/null 2>&1 || want+=(nodejs)
    command -v npm >/dev/null 2>&1 || want+=(npm)
    command -v unshare >/dev/null 2>&1 || want+=(util-linux)
    command -v ip >/dev/null 2>&1 || want+=(iproute2)
    if [ "${#want[@]}" -gt 0 ]; then
        apt_install "${want[@]}"
    fi
    stamp=node_modules/.reticulum-stamp
    lock_hash="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
        say "installing node packages (npm ci)"
        npm ci --no-audit --no-fund --loglevel=error >&2
        printf '%s\n' "$lock_hash" >"$stamp"
        rm -f tests/browser/build/jssip.js "$webphone_bundle"
    fi
    if [ ! -f tests/browser/build/jssip.js ]; then
        say "bundling JsSIP"
        sh tests/browser/build.sh >&2
    fi
    ensure_webphone
}

# the webphone's JsSIP bundle, built from package-lock.json's jssip (git-ignored)
webphone_bundle=reticulum/webphone/static/jssip.min.js

# ensure_webphone: builds the webphone's bundle when it is missing; without npm the
# server still starts, and says why the page at / cannot phone
ensure_webphone() {
    [ -f "$webphone_bundle" ] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        say "npm is not installed: the webphone at / cannot work without its JsSIP bundle;"
        say "install node and npm (apt-get install npm) and run ./run.sh again"
        return 0
    fi
    if [ ! -x node_modules/.bin/esbuild ] || [ ! -d node_modules/jssip ]; then
        say "installing the webphone's node packages (npm ci)"
        npm ci --no-audit --no-fund --loglevel=error >&2 || { say "npm ci failed: the webphone stays off"; return 0; }
    fi
    say "bundling the webphone (JsSIP) into $webphone_bundle"
    sh reticulum/webphone/build.sh >&2 || say "bundling failed: the webphone at / will not work"
}

want_kind() {
    if [ -n "${RETICULUM_PYTHON:-}" ] && is_pypy_name "$RETICULUM_PYTHON"; then
        echo pypy
    else
        echo cpython
    fi
}

# run_pytest VENV ARGS... ; exit code 5 (no tests collected) counts as success
run_pytest() {
    local venv="$1" rc=0
    shift
    "$venv/bin/python" -m pytest "$@" || rc=$?
    if [ "$rc" = 5 ]; then
        rc=0
    fi
    return "$rc"
}

cmd_test() {
    local kind venv rc=0 pypy_pass
    kind="$(want_kind)"
    venv="$(ensure_env "$kind" 1)"
    ensure_sipp
    ensure_redis
    ensure_test_tools
    if [ "$#" -eq 0 ] && [ "$kind" != pypy ]; then
        say "type check (mypy, settings in setup.cfg)"
        "$venv/bin/python" -m mypy || rc=$?
    fi
    say "tests on $("$venv/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"
    run_pytest "$venv" "$@" || rc=$?

    if [ "$kind" = pypy ]; then
        return "$rc"
    fi
    pypy_pass="${RETICULUM_PYPY:-}"
    if [ -z "$pypy_pass" ]; then
        if [ "$#" -eq 0 ]; then pypy_pass=1; else pypy_pass=0; fi
    fi
    if [ "$pypy_pass" != 1 ]; then
        return "$rc"
    fi
    if ! have_pypy; then
        say "PyPy is neither installed nor installable here: the PyPy pass is skipped"
        return "$rc"
    fi
    local pvenv prc=0
    pvenv="$(ensure_env pypy 1)" || prc=$?
    if [ "$prc" = 0 ]; then
        say "tests on $("$pvenv/bin/python" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"
        if [ "$#" -eq 0 ]; then
            # unit tests, then the integration tests that are kept PyPy-checked
            run_pytest "$pvenv" tests --ignore=tests/integration || prc=$?
            run_pytest "$pvenv" tests/integration/test_options.py || prc=$?
        else
            run_pytest "$pvenv" "$@" || prc=$?
        fi
    fi
    if [ "$prc" != 0 ]; then
        say "PyPy pass failed"
        [ "$rc" != 0 ] || rc="$prc"
    fi
    return "$rc"
}

# absolute_config_args ARGS... -> global array `args`, with a relative
# --config/-c path made absolute against the folder run.sh was started from
absolute_config_args() {
    args=()
    local a expect=0
    for a in "$@"; do
        if [ "$expect" = 1 ]; then
            args+=("$(absolute_path "$a")")
            expect=0
            continue
        fi
        case "$a" in
            --config | -c) args+=("$a"); expect=1 ;;
            --config=*) args+=("--config=$(absolute_path "${a#--config=}")") ;;
            -c?*) args+=("-c$(absolute_path "${a#-c}")") ;;
            *) args+=("$a") ;;
        esac
    done
}

absolute_path() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$orig_pwd/$1" ;;
    esac
}

usage() {
    cat <<'EOF'
usage: ./run.sh [COMMAND] [ARGS...]

Commands:
  (none), or the options below  start the server in the foreground
                                 (default: --config reticulum.toml)
  test [pytest args]             run the tests (installs what they need); without
                                 arguments: the type check, then CPython and PyPy
  types                          the type check alone (mypy on reticulum/)
  users add|passwd|remove|list   manage accounts (./run.sh users --help)
  status [--json]                uptime, counters, listening points of the running server
  registrations [USER] [--json]  current registrations (bindings)
  calls [--json]                 calls in progress
  help, -h, --help               this text, then the server's options

users, status, registrations and calls take --config PATH (default reticulum.toml,
relative to the current folder); status, registrations and calls ask the running
server's admin API ([listen] admin).

Environment: RETICULUM_PYTHON=pypy3 (run on PyPy), RETICULUM_PYPY=0|1 (test: PyPy pass).

The server's options (twistd reticulum):
EOF
}

main() {
    local venv
    case "${1:-}" in
        help | -h | --help)
            usage
            venv="$(ensure_env "$(want_kind)")"
            "$venv/bin/twistd" reticulum --help | sed -n '/^Options:/,$p'
            exit 0
            ;;
        status | registrations | calls)
            venv="$(ensure_env "$(want_kind)")"
            absolute_config_args "$@"
            exec "$venv/bin/python" -m reticulum.control "${args[@]}"
            ;;
        types)
            venv="$(ensure_env "$(want_kind)" 1)"
            exec "$venv/bin/python" -m mypy
            ;;
        test)
            shift
            local rc=0
            cmd_test "$@" || rc=$?
            exit "$rc"
            ;;
        users)
            shift
            venv="$(ensure_env "$(want_kind)")"
            absolute_config_args "$@"
            exec "$venv/bin/python" -m reticulum.users "${args[@]}"
            ;;
        *)
            venv="$(ensure_env "$(want_kind)")"
            ensure_webphone
            if [ "$(want_kind)" = pypy ]; then
                # PyPy sizes its young generation from the L2 cache (1 MB on small VMs) and
                # then collects far too often under load; 32 MB is about an L3 cache.
                export PYPY_GC_NURSERY="${PYPY_GC_NURSERY:-32MB}"
            fi
            if [ "$#" -eq 0 ]; then
                set -- --config reticulum.toml
            fi
            absolute_config_args "$@"
            exec "$venv/bin/twistd" -n --pidfile= reticulum "${args[@]}"
            ;;
    esac
}

main "$@"
