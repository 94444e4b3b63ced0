#!/usr/bin/env bash
# Screenshots of the API's /docs (Swagger UI) and /redoc pages by headless Chromium, with the API on a
# throwaway SQLite home: the pages' scripts and styles come from the package (fastapi-offline), so this
# works with no network. Needs Debian's chromium. Usage: bash scripts/screenshot_docs.sh [OUT_DIR]
set -euo pipefail
out=${1:-docs/screenshots}
mkdir -p "$out"
home=$(mktemp -d)
port=8765
export PROMPTEHR_HOME=$home
promptehr db upgrade >/dev/null
promptehr serve --host 127.0.0.1 --port "$port" >"$home/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$home"' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
for page in docs redoc; do
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1600 \
    --virtual-time-budget=8000 --screenshot="$out/$page.png" "http://127.0.0.1:$port/$page" >/dev/null 2>&1
done
echo "$out/docs.png $out/redoc.png"
