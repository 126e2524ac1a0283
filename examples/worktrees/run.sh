#!/bin/sh
# Two worktrees of one repository sharing one rcache store: the first is
# materialized (compiling everything), the second gets the same pycs with
# nothing compiled, since rcache keys bytecode by content, not by path.
# Then rcache's git hooks are installed and a third worktree is added: its
# post-checkout hook materializes it, again with nothing compiled.
#
#   sh examples/worktrees/run.sh        # rcache and git on PATH
#
# WORK: where to make the repository (default: a new temp dir);
# RCACHE_STORE: the store (default: $WORK/store.sqlite3, not your own);
# RCACHE_PYTHON: the Python (default: as rcache finds one).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-$(mktemp -d)}
export RCACHE_STORE="${RCACHE_STORE:-$work/store.sqlite3}"
mkdir -p "$work"

# `compiled`/`written`: one figure from rcache's --json summary (one line).
figure() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

git init -q -b main "$work/worktree-1"
cp -R "$here/project/." "$work/worktree-1/"
cd "$work/worktree-1"
git add -A
git -c user.name=example -c user.email=example@example.invalid commit -qm "The project"

summary=$(rcache --json materialize)
echo "worktree 1: $(echo "$summary" | figure compiled) compiled," \
    "$(echo "$summary" | figure written) pyc written"

git worktree add -q "$work/worktree-2" -b feature
cd "$work/worktree-2"
summary=$(rcache --json materialize)
echo "worktree 2: $(echo "$summary" | figure compiled) compiled," \
    "$(echo "$summary" | figure written) pyc written"

"${RCACHE_PYTHON:-python3}" main.py

rcache -q hook install
hook_said=$(git worktree add -q "$work/worktree-3" -b review 2>&1)
echo "worktree 3, by the post-checkout hook: $hook_said"
rcache stats
