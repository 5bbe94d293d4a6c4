#!/bin/sh
# The size limits of strata's product code: no source file (.c, .h) over 500 lines and no
# function over 60. A function runs from the line holding its body's `{` at column 0 to the line
# holding the `}` at column 0, both counted (the tree is clang-formatted: only function bodies
# open at column 0). A file whose first 5 lines say "check_limits: generated" (a generated table)
# is left out. Prints each offender and exits 1 when there is one.
#
#   tools/check_limits.sh [--top] [FILE_OR_FOLDER...]
#
# Without arguments it checks the product folders (common kernels proto worker coordinator
# cluster) from the repository root. --top also prints the five largest files and functions.
set -eu

max_file=500
max_func=60
top=0
if [ "${1:-}" = "--top" ]; then
  top=1
  shift
fi
if [ $# -eq 0 ]; then
  cd "$(dirname "$0")/.."
  set -- common kernels proto worker coordinator cluster
fi

files=$(find "$@" -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
[ -n "$files" ] || { echo "check_limits: no .c or .h files in: $*" >&2; exit 2; }

# One line per file ("file N") and per function ("func N file:line name"), generated files aside.
# shellcheck disable=SC2086 # the file names are split on purpose (no spaces in the tree)
sizes=$(awk '
  function flush_file() {
    if (file != "" && !generated) print "file", lines, file
  }
  FNR == 1 { flush_file(); file = FILENAME; generated = 0; start = 0; sig = "" }
  FNR <= 5 && /check_limits: generated/ { generated = 1 }
  { lines = FNR }
  # the line that starts a declaration at column 0: where the function name is read from
  /^[A-Za-z_]/ && !/^(#|\/\/|\/\*)/ { sig = $0 }
  /^\{/ && start == 0 {
    start = FNR; name = sig
    gsub(/__attribute__\(\([^)]*\)\) */, "", name); sub(/\(.*/, "", name); sub(/.*[ *]/, "", name)
  }
  /^\}/ && start > 0 {
    if (!generated) print "func", FNR - start + 1, file ":" start, name
    start = 0
  }
  END { flush_file() }
' $files)

status=0
echo "$sizes" | awk -v mf="$max_file" -v mfn="$max_func" '
  $1 == "file" && $2 > mf { printf "%s: %d lines (limit %d)\n", $3, $2, mf; bad = 1 }
  $1 == "func" && $2 > mfn { printf "%s: %s: %d lines (limit %d)\n", $3, $4, $2, mfn; bad = 1 }
  END { exit bad }
' || status=1

if [ "$top" = 1 ]; then
  echo "largest files:"
  echo "$sizes" | awk '$1 == "file" { printf "  %5d  %s\n", $2, $3 }' | sort -rn | head -5
  echo "largest functions:"
  echo "$sizes" | awk '$1 == "func" { printf "  %5d  %s %s\n", $2, $3, $4 }' | sort -rn | head -5
fi
[ "$status" = 0 ] || echo "check_limits: over the limits above (files $max_file lines, functions $max_func)" >&2
exit "$status"
