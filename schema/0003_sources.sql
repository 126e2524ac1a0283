-- rcache store, schema version 3: what each source file held when read.
--
-- Keys now take a source through its blake3 hash (key version 2,
-- src/key.rs), so code keyed by version 1 can never be found again: drop it
-- and what was written from it.
DELETE FROM entries;
DELETE FROM failures;
DELETE FROM written_pycs;

-- The source file at `path` (as walked, absolute) had this identity when it
-- was read, and its bytes hashed to `content_hash`. A file whose identity is
-- unchanged still holds those bytes: any write or replacement changes size,
-- mtime, ctime or inode, and ctime cannot be set back. Only files whose
-- mtime and ctime were already older than the read by a safety margin are
-- recorded: a timestamp is coarse, and an edit in the same tick as the read
-- could otherwise keep the identity (git's "racy clean" problem).
CREATE TABLE sources (
    path BLOB PRIMARY KEY,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    content_hash BLOB NOT NULL
);
