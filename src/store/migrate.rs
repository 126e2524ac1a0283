//! Schema migrations: the numbered files in `schema/`, applied in order.
//!
//! `PRAGMA user_version` counts the migrations a store has had, so a store
//! is brought up to date by running the ones after it, inside one IMMEDIATE
//! transaction so that concurrent first runs apply each migration once.

use rusqlite::{Connection, TransactionBehavior};

/// Marks a SQLite file as an rcache store (`PRAGMA application_id`): "rcch".
pub const APPLICATION_ID: i32 = 0x7263_6368;

/// The schema migrations, in order. Never reorder or remove entries, never
/// edit a released one: add a new file instead.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/0001_initial.sql"),
    include_str!("../../schema/0002_written_pycs.sql"),
    include_str!("../../schema/0003_sources.sql"),
    include_str!("../../schema/0004_import_sequences.sql"),
];

/// The schema version this binary writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every migration `conn` has not had yet.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    // Up to date, as almost always: no write lock (every `rcache exec`
    // connection opens the store).
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == current_version() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let start = usize::try_from(applied).unwrap_or(usize::MAX);
    for migration in MIGRATIONS.iter().skip(start) {
        tx.execute_batch(migration)?;
    }
    if applied < current_version() {
        tx.execute_batch(&format!(
            "PRAGMA user_version = {}; PRAGMA application_id = {APPLICATION_ID};",
            current_version()
        ))?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store left at every earlier schema version upgrades to the current
    /// one, keeping its rows.
    #[test]
    fn upgrades_from_every_earlier_version() {
        for version in 1..MIGRATIONS.len() {
            let mut conn = Connection::open_in_memory().unwrap();
            for migration in &MIGRATIONS[..version] {
                conn.execute_batch(migration).unwrap();
            }
            conn.execute_batch(&format!(
                "PRAGMA user_version = {version}; PRAGMA application_id = {APPLICATION_ID};
                 INSERT INTO counters (name, value) VALUES ('hits', 7);"
            ))
            .unwrap();
            migrate(&mut conn).unwrap();
            let (upgraded, hits): (i64, i64) = conn
                .query_row(
                    "SELECT (SELECT user_version FROM pragma_user_version),
                            (SELECT value FROM counters WHERE name = 'hits')",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            assert_eq!((upgraded, hits), (current_version(), 7), "from {version}");
        }
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, current_version());
        let id: i32 = conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
    }
}
