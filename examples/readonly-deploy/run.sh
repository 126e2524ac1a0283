#!/bin/sh
# A read-only deployment run with `rcache exec`.
#
# 1. Deploy: warm a store with the code of every module the app imports (its
#    own and the standard library's). Nothing is written beside the sources.
# 2. Run: the app directory, the store and the rest of the file system are
#    mounted read-only (bubblewrap, as `docker run --read-only` would); the
#    only writable place is rcache's private directory (XDG_RUNTIME_DIR, a
#    tmpfs in a container). `rcache exec` serves every import from the store,
#    which it opens read-only.
# 3. Show that nothing was written: no pycs, the store unchanged.
#
# Needs `rcache` and `bwrap` (Debian/Ubuntu: apt-get install bubblewrap).
# PYTHON picks the interpreter (default python3); WORK where the store and the
# runtime directory go (default: a new temp dir).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
work=${WORK:-$(mktemp -d)}
export RCACHE_PYTHON="$python"
export RCACHE_STORE="$work/store/store.sqlite3"
command -v bwrap >/dev/null || {
    echo "run.sh: needs bwrap (Debian/Ubuntu: apt-get install bubblewrap)" >&2
    exit 2
}
cd "$here"

echo "== deploy: warm $RCACHE_STORE"
# The app, and every other source file that importing it loads (runpy: what
# `python -m` uses to run it).
{
    find app -name '*.py'
    PYTHONDONTWRITEBYTECODE=1 "$python" -c '
import runpy, sys
import app.greeting
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if path.endswith(".py"):
        print(path)
'
} | tr '\n' '\0' | xargs -0 rcache warm

listing() {
    find "$here" "$work/store" -printf '%p %s %T@\n' | sort
}
before=$(listing)

echo "== run, read-only: rcache exec -m app"
mkdir -p -m 0700 "$work/run"
bwrap --ro-bind / / --dev /dev --proc /proc \
    --bind "$work/run" "$work/run" --setenv XDG_RUNTIME_DIR "$work/run" \
    --chdir "$here" \
    rcache -q exec -m app

echo "== written"
# rcache's server ends just after the program; then its directory is final.
while ls "$work"/run/rcache/*.sock >/dev/null 2>&1; do sleep 0.1; done
if [ "$before" = "$(listing)" ] && [ -z "$(find "$here" -name __pycache__)" ]; then
    echo "nothing: no pycs beside the sources, the store unchanged"
else
    echo "run.sh: the run wrote beside the sources or into the store" >&2
    exit 1
fi
echo "only rcache's private directory (the container's tmpfs):"
find "$work/run" -type f | sed "s|^$work/run/||" | sort
