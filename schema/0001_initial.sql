-- rcache store, schema version 1.
--
-- Never edit this file once released: schema changes are new numbered files.
-- The store's `PRAGMA application_id` marks it as an rcache store and
-- `PRAGMA user_version` counts the migrations applied (src/store/migrate.rs).

-- What the store knows of one Python: everything that changes the bytecode
-- (cache tag, magic number) or the pyc header (source_hash algorithm).
CREATE TABLE profiles (
    id INTEGER PRIMARY KEY,
    implementation TEXT NOT NULL,
    version TEXT NOT NULL,
    cache_tag TEXT NOT NULL,
    magic BLOB NOT NULL,
    source_hash TEXT NOT NULL,
    UNIQUE (implementation, version, cache_tag, magic, source_hash)
);

-- Interpreter executables already probed, by the identity of the file, so a
-- run whose files all hit starts no Python. Any change of the file (an
-- upgrade in place) changes size, mtime, ctime or inode and forces a probe.
CREATE TABLE interpreters (
    path TEXT PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    profile_id INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    probed_at INTEGER NOT NULL
);

-- Compiled code by key (src/key.rs): the zstd-compressed marshal bytes of
-- the module code object, compiled under a placeholder filename derived from
-- the key. `checksum` is blake3 of the uncompressed bytes, checked on every
-- read. `warnings` holds what compile() warned, one per line, or NULL.
-- Times are Unix seconds.
CREATE TABLE entries (
    key BLOB PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    optimize INTEGER NOT NULL,
    raw_size INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    data BLOB NOT NULL,
    warnings TEXT,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);

-- Deterministic compile failures by key, so a broken file is reported from
-- the store instead of being compiled again. Crashes, timeouts, MemoryError
-- and RecursionError are never stored. `line` and `col` are 1-based, NULL
-- when CPython gives none.
CREATE TABLE failures (
    key BLOB PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    optimize INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    line INTEGER,
    col INTEGER,
    created INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);

-- Lifetime counters shown by `rcache stats` (hits, misses, ...).
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
