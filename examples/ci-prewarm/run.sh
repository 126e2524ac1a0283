#!/usr/bin/env bash
# A CI pre-warm, played on one machine: job 1 compiles a project and exports what it uses to the CI
# cache; job 2, a fresh checkout on a fresh runner (empty store), imports that archive and
# materializes every pyc without compiling anything, then runs the tests.
#
#   ./run.sh [PROJECT]        (default: ./project; needs `rcache` and PYTHON, default python3)
#
# Exits 1 if job 2 compiled anything.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "${1:-$here/project}" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cache="$work/ci-cache"                 # what the CI system keeps between jobs
mkdir -p "$cache"

# The number NAME from the JSON summary in FILE.
field() { "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$2" "$1"; }
# Wall seconds COMMAND... took, with its stdout in $work/out.json.
timed() {
    local start end
    start=$("$python" -c 'import time; print(time.time())')
    "$@" > "$work/out.json" || [ $? -eq 1 ]   # 1: some files do not compile (reported)
    end=$("$python" -c 'import time; print(time.time())')
    "$python" -c "print('%.2f' % ($end - $start))"
}

echo "== job 1: checkout, materialize (compiles), export to the CI cache"
cp -R "$project" "$work/job1"
export RCACHE_STORE="$work/job1-runner/store.sqlite3" RCACHE_PYTHON="$python"
seconds=$(cd "$work/job1" && timed rcache --json materialize .)
echo "materialized $(field files "$work/out.json") files in ${seconds}s: $(field compiled "$work/out.json") compiled"
(cd "$work/job1" && rcache export "$cache/rcache.rcx" --for . 2>&1)

echo "== job 2: fresh checkout, fresh runner: import, materialize"
cp -R "$project" "$work/job2"
export RCACHE_STORE="$work/job2-runner/store.sqlite3"
(cd "$work/job2" && rcache import "$cache/rcache.rcx" 2>&1)
seconds=$(cd "$work/job2" && timed rcache --json materialize .)
compiled=$(field compiled "$work/out.json")
echo "materialized $(field files "$work/out.json") files in ${seconds}s: $compiled compiled, $(field hits "$work/out.json") from the store"
if [ -f "$work/job2/tests/__init__.py" ]; then
    (cd "$work/job2" && "$python" -m unittest discover -s tests -t . 2>&1 | grep -E '^(Ran|OK|FAILED)')
fi
echo "job 2 compiled: $compiled"
[ "$compiled" -eq 0 ]
