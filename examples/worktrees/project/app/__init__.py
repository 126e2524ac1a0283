"""A tiny application: two worktrees of its repository share one rcache store."""
