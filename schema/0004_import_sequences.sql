-- rcache store, schema version 4: what `rcache exec` was asked, in order.
--
-- One row per (first module asked, interpreter, optimization level): the
-- paths of every source the same kind of process asked for last time, in
-- the order it asked (each as a 4-byte little-endian length, then the path
-- as OS bytes). The next run that starts with the same module prepares
-- that code on another core before it is asked for. A hint only: what is
-- served is still checked against the file as it is now.
CREATE TABLE import_sequences (
    first_path BLOB NOT NULL,
    cache_tag TEXT NOT NULL,
    optimize INTEGER NOT NULL,
    paths BLOB NOT NULL,
    PRIMARY KEY (first_path, cache_tag, optimize)
);
