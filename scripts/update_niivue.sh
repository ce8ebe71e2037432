#!/usr/bin/env bash
# Update the vendored NiiVue (https://github.com/niivue/niivue, BSD-2-Clause) used by `unipet view`.
#
#   scripts/update_niivue.sh [VERSION]     # default: the npm registry's latest
#
# Fetches the published @niivue/niivue package with `npm pack`, checks that its licence is still BSD-2-Clause,
# and copies its single-file UMD build (dist/niivue.umd.js: one <script>, defines window.niivue, works from a
# file:// page) to src/unipet/resources/niivue/ with VERSION and the SHA-256 of the file. LICENSE (the BSD-2
# text of the NiiVue authors) is kept; the npm package does not carry it.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-$(npm view @niivue/niivue version)}"
dest=src/unipet/resources/niivue
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@niivue/niivue@${version}" >/dev/null)
tar -xzf "$work"/niivue-niivue-"${version}".tgz -C "$work"
licence="$(node -p "require('$work/package/package.json').license")"
if [ "$licence" != "BSD-2-Clause" ]; then
  echo "@niivue/niivue ${version} is licensed ${licence}, not BSD-2-Clause: review before vendoring" >&2
  exit 1
fi
test -s "$work/package/dist/niivue.umd.js" || { echo "no dist/niivue.umd.js in @niivue/niivue ${version}" >&2; exit 1; }
cp "$work/package/dist/niivue.umd.js" "$dest/niivue.umd.js"
printf '%s\n' "$version" > "$dest/VERSION"
(cd "$dest" && sha256sum niivue.umd.js > SHA256SUMS)
echo "vendored @niivue/niivue ${version} into ${dest} ($(du -h "$dest/niivue.umd.js" | cut -f1))"
