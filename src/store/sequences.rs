//! The order in which `rcache exec` was asked for sources (schema
//! `0004_import_sequences.sql`): a hint to prepare code before it is asked.

use rusqlite::{OptionalExtension, params};

use super::{Error, Store};

/// The sources one process asked for, in order, after its first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSequence {
    /// The first source asked for (OS path bytes): the sequence's name.
    pub first_path: Vec<u8>,
    pub cache_tag: String,
    pub optimize: u8,
    /// Every path asked for, the first included, in order.
    pub paths: Vec<Vec<u8>>,
}

impl Store {
    /// The paths asked for last time by a process that first asked for
    /// `first_path`, as the given interpreter and level.
    pub fn import_sequence(
        &self,
        first_path: &[u8],
        cache_tag: &str,
        optimize: u8,
    ) -> Result<Option<Vec<Vec<u8>>>, Error> {
        let packed: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT paths FROM import_sequences
                 WHERE first_path = ?1 AND cache_tag = ?2 AND optimize = ?3",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![first_path, cache_tag, optimize], |row| row.get(0))
                    .optional()
            })
            .map_err(|source| self.sqlite_error(source))?;
        Ok(packed.map(|packed| unpack(&packed)))
    }

    /// Replaces the recorded sequences with these, in one transaction.
    pub fn record_import_sequences(&mut self, sequences: &[ImportSequence]) -> Result<(), Error> {
        if sequences.is_empty() {
            return Ok(());
        }
        self.write_transaction(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO import_sequences (first_path, cache_tag, optimize, paths)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for sequence in sequences {
                insert.execute(params![
                    sequence.first_path,
                    sequence.cache_tag,
                    sequence.optimize,
                    pack(&sequence.paths)
                ])?;
            }
            Ok(())
        })
    }
}

fn pack(paths: &[Vec<u8>]) -> Vec<u8> {
    let mut packed = Vec::new();
    for path in paths {
        packed.extend_from_slice(&(path.len() as u32).to_le_bytes());
        packed.extend_from_slice(path);
    }
    packed
}

/// The paths of a packed list; a damaged tail is dropped (it is a hint).
fn unpack(mut packed: &[u8]) -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    while let Some((length, rest)) = packed.split_first_chunk::<4>() {
        let length = u32::from_le_bytes(*length) as usize;
        let Some((path, rest)) = rest.split_at_checked(length) else {
            break;
        };
        paths.push(path.to_vec());
        packed = rest;
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_round_trip_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.sqlite3")).unwrap();
        assert_eq!(
            store.import_sequence(b"/a.py", "cpython-312", 0).unwrap(),
            None
        );
        let mut sequence = ImportSequence {
            first_path: b"/a.py".to_vec(),
            cache_tag: "cpython-312".into(),
            optimize: 0,
            paths: vec![b"/a.py".to_vec(), b"/b\xff.py".to_vec(), Vec::new()],
        };
        store.record_import_sequences(&[sequence.clone()]).unwrap();
        let found = store.import_sequence(b"/a.py", "cpython-312", 0).unwrap();
        assert_eq!(found, Some(sequence.paths.clone()));
        assert_eq!(
            store.import_sequence(b"/a.py", "cpython-312", 1).unwrap(),
            None
        );
        sequence.paths.truncate(1);
        store.record_import_sequences(&[sequence.clone()]).unwrap();
        let found = store.import_sequence(b"/a.py", "cpython-312", 0).unwrap();
        assert_eq!(found, Some(sequence.paths));
    }

    #[test]
    fn a_damaged_list_keeps_its_whole_paths() {
        let mut packed = pack(&[b"/a.py".to_vec(), b"/b.py".to_vec()]);
        packed.truncate(packed.len() - 2);
        assert_eq!(unpack(&packed), vec![b"/a.py".to_vec()]);
    }
}
