#!/usr/bin/env bash
# Renders a booklet the way an editor first sees it: LibreOffice (headless) opens it and
# converts it to PDF, as the editor's LibreOffice lays it out on opening (reference fields such
# as the table of contents' page numbers are filled in then); pdftoppm turns pages into PNG
# files (OUTDIR/page-N.png).
#
# Also reports, from the PDF text (pdftotext): the page count, and the sparse pages, those
# holding fewer than RENDER_SPARSE lines (default 8), the last page excepted.
#
# With RENDER_UPDATE_INDEX=1 it then opens the file again through LibreOffice's Python bridge,
# updates every index as Tools > Update > Update All does, exports OUTDIR/NAME-updated.pdf and
# compares the two PDFs' text (runs of leader dots and spaces read as one): "index update: no
# change" means the table of contents the file opens with is the one LibreOffice builds
# itself, page numbers included. A difference is printed and fails the script.
#
# Installs libreoffice-writer-nogui, poppler-utils, fonts-liberation2 (metric twins of Arial)
# and, for RENDER_UPDATE_INDEX, python3-uno with apt-get when missing.
# Usage: scripts/booklet-render.sh IN.odt OUTDIR
#   RENDER_DPI    resolution of the PNG files (default 60)
#   RENDER_PAGES  pages to turn into PNG: N-M, N, or all (default 1-2)
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: $0 IN.odt OUTDIR" >&2
  exit 2
fi
in=$1
out=$2
dpi=${RENDER_DPI:-60}
pages=${RENDER_PAGES:-1-2}
sparse=${RENDER_SPARSE:-8}
update=${RENDER_UPDATE_INDEX:-0}

missing=()
command -v libreoffice >/dev/null 2>&1 || missing+=(libreoffice-writer-nogui)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
[ -f /usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf ] || missing+=(fonts-liberation2)
if [ "$update" = 1 ] && ! /usr/bin/python3 -c 'import uno' >/dev/null 2>&1; then
  missing+=(python3-uno)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
# A private profile, so a running LibreOffice or a stale lock does not interfere.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
libreoffice -env:UserInstallation="file://$profile" --headless --convert-to pdf --outdir "$out" "$in" >/dev/null 2>&1
name=$(basename "${in%.*}")
pdf="$out/$name.pdf"
[ -f "$pdf" ] || { echo "no PDF produced for $in" >&2; exit 1; }

count=$(pdfinfo "$pdf" | awk '/^Pages:/ {print $2}')
# One pdftotext run; pages end with a form feed. Counts non-blank lines per page, the last
# page left out.
thin=$(pdftotext -layout "$pdf" - | awk -v min="$sparse" -v count="$count" '
  BEGIN { page = 1; lines = 0; out = "" }
  {
    n = split($0, parts, "\f")
    for (i = 1; i <= n; i++) {
      if (i > 1) {
        if (page < count && lines < min) out = out " " page ":" lines
        page++; lines = 0
      }
      if (parts[i] ~ /[^[:space:]]/) lines++
    }
  }
  END { sub(/^ /, "", out); print (out == "" ? "none" : out) }')
echo "pages=$count sparse(<$sparse lines, page:lines)=$thin"

case $pages in
  all) first=1 last=$count ;;
  *-*) first=${pages%-*} last=${pages#*-} ;;
  *) first=$pages last=$pages ;;
esac
rm -f "$out"/page-*.png
pdftoppm -png -r "$dpi" -f "$first" -l "$last" "$pdf" "$out/page"
# pdftoppm pads page numbers to the width of the page count (page-01.png); drop the padding.
for png in "$out"/page-*.png; do
  n=$(basename "$png" .png)
  n=${n#page-}
  n=$((10#$n))
  [ "$png" = "$out/page-$n.png" ] || mv "$png" "$out/page-$n.png"
done
ls "$out"/page-*.png

if [ "$update" = 1 ]; then
  updated="$out/$name-updated.pdf"
  # LibreOffice listens on a named pipe; the bridge opens the file hidden, updates every
  # index, exports the PDF and ends LibreOffice.
  /usr/bin/python3 - "$in" "$updated" "$profile/update" <<'PY'
import os, subprocess, sys, time
import uno
from com.sun.star.beans import PropertyValue

def prop(name, value):
    p = PropertyValue()
    p.Name, p.Value = name, value
    return p

source, target, profile = (os.path.abspath(a) for a in sys.argv[1:4])
pipe = "taskwire_render_%d" % os.getpid()
office = subprocess.Popen(["soffice", "-env:UserInstallation=file://" + profile, "--headless",
                           "--invisible", "--norestore", "--accept=pipe,name=%s;urp;" % pipe],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.monotonic() + 60
    while True:  # poll until LibreOffice accepts, with a deadline
        try:
            ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(source), "_blank", 0,
                                       (prop("Hidden", True),))
    indexes = doc.getDocumentIndexes()
    for i in range(indexes.getCount()):
        indexes.getByIndex(i).update()
    doc.storeToURL(uno.systemPathToFileUrl(target), (prop("FilterName", "writer_pdf_Export"),))
    doc.close(True)
    try:
        desktop.terminate()
    except Exception:
        pass  # the bridge drops as LibreOffice quits
    office.wait(30)
finally:
    if office.poll() is None:
        office.kill()
PY
  # Leader dots and the spaces around them are layout, not content: a run of them reads as one
  # " ... ", so an entry's text and page number are what is compared.
  text() { pdftotext -layout "$1" - | sed -E 's/[. ]{3,}/ ... /g; s/[[:space:]]+$//'; }
  if diff <(text "$pdf") <(text "$updated") >"$out/index-update.diff"; then
    echo "index update: no change ($updated)"
  else
    echo "index update: the text changed ($out/index-update.diff):"
    head -20 "$out/index-update.diff"
    exit 1
  fi
fi
