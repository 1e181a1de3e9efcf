#!/bin/sh
# Bundles JsSIP (npm ships CommonJS only) into one browser script with esbuild:
#   tests/browser/build/jssip.js  defines window.JsSIP
# Run from anywhere after `npm ci`; ./run.sh test does both.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
mkdir -p "$here/build"
exec node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js \
    --bundle --format=iife --global-name=JsSIP --platform=browser \
    --log-level=warning --outfile="$here/build/jssip.js"
