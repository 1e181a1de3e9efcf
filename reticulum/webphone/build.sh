#!/bin/sh
# Bundles JsSIP (npm ships CommonJS only) into the webphone's one browser script:
#   reticulum/webphone/static/jssip.min.js  defines window.JsSIP
# Needs `npm ci` first (node_modules/jssip, node_modules/esbuild); ./run.sh does both
# when the bundle is missing. The bundle is built, not committed.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
exec node_modules/.bin/esbuild node_modules/jssip/lib/JsSIP.js \
    --bundle --minify --format=iife --global-name=JsSIP --platform=browser \
    --legal-comments=inline --log-level=warning --outfile="$here/static/jssip.min.js"
