"""A tiny app deployed read-only: its code comes from rcache's store."""
