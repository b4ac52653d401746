#!/usr/bin/env bash
# Renders a booklet the way an editor first sees it: LibreOffice (headless) converts it to
# PDF, then pdftoppm turns pages 1 and 2 into PNG files (OUTDIR/page-1.png, page-2.png).
# Installs libreoffice-writer-nogui and poppler-utils with apt-get when missing.
# Usage: scripts/booklet-render.sh IN.odt OUTDIR   (RENDER_DPI sets the resolution, default 60)
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 IN.odt OUTDIR" >&2
  exit 2
fi
in=$1
out=$2
dpi=${RENDER_DPI:-60}

missing=()
command -v libreoffice >/dev/null 2>&1 || missing+=(libreoffice-writer-nogui)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
# A private profile, so a running LibreOffice or a stale lock does not interfere.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
libreoffice -env:UserInstallation="file://$profile" --headless --convert-to pdf --outdir "$out" "$in" >/dev/null
pdf="$out/$(basename "${in%.*}").pdf"
[ -f "$pdf" ] || { echo "no PDF produced for $in" >&2; exit 1; }

rm -f "$out"/page-*.png
pdftoppm -png -r "$dpi" -f 1 -l 2 "$pdf" "$out/page"
# pdftoppm pads page numbers to the width of the page count (page-01.png); drop the padding.
for png in "$out"/page-*.png; do
  n=$(basename "$png" .png)
  n=${n#page-}
  n=$((10#$n))
  [ "$png" = "$out/page-$n.png" ] || mv "$png" "$out/page-$n.png"
done
ls "$out"/page-*.png
