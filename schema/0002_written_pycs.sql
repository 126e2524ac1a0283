-- rcache store, schema version 2: what `materialize` wrote.
--
-- A pyc is up to date only when its bytes are what rcache would write now;
-- its header alone never proves that (a same-second, same-size edit keeps
-- mtime and size). Reading and comparing every pyc on a no-op run is slow,
-- so each write is recorded: the pyc at `pyc_path` holds the code of `key`
-- with a `mode` header made for a source of `source_size` bytes modified at
-- `source_mtime_ns`, and right after writing the pyc file had this identity.
-- A pyc whose identity, key, mode and source stamp all still match is the
-- file rcache wrote, untouched since.
CREATE TABLE written_pycs (
    pyc_path BLOB PRIMARY KEY,
    key BLOB NOT NULL,
    mode TEXT NOT NULL,
    source_size INTEGER NOT NULL,
    source_mtime_ns INTEGER NOT NULL,
    pyc_device INTEGER NOT NULL,
    pyc_inode INTEGER NOT NULL,
    pyc_size INTEGER NOT NULL,
    pyc_mtime_ns INTEGER NOT NULL,
    pyc_ctime_ns INTEGER NOT NULL
);
