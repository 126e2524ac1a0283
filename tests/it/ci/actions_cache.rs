//! A local stand-in for `actions/cache/restore@v4` and `actions/cache/save@v4`:
//! entries in a directory, each the key, the `path` input it was saved with
//! (actions/cache only restores an entry saved with the same paths) and a tar
//! of those paths. Restore tries the exact key, then each restore key in
//! order as a prefix, newest entry first, and sets `cache-hit`,
//! `cache-primary-key` and `cache-matched-key` as actions/cache does; save
//! skips a key that already exists (caches are immutable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct ActionsCache {
    root: PathBuf,
}

/// One saved entry.
struct Entry {
    dir: PathBuf,
    key: String,
    paths: String,
}

impl ActionsCache {
    pub fn new(root: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        Self {
            root: root.to_owned(),
        }
    }

    /// Entries, newest first.
    fn entries(&self) -> Vec<Entry> {
        let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let seq = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
                (seq, path)
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .rev()
            .map(|(_, dir)| Entry {
                key: std::fs::read_to_string(dir.join("key")).unwrap(),
                paths: std::fs::read_to_string(dir.join("paths")).unwrap(),
                dir,
            })
            .collect()
    }

    /// `actions/cache/restore@v4` with `with` (already evaluated).
    pub fn restore(
        &self,
        with: &BTreeMap<String, String>,
        workspace: &Path,
    ) -> BTreeMap<String, String> {
        check_inputs(with, &["path", "key", "restore-keys"]);
        let key = checked_key(&with["key"]);
        let paths = with["path"].trim().to_owned();
        let restore_keys: Vec<&str> = with
            .get("restore-keys")
            .map(|keys| {
                keys.lines()
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let entries: Vec<Entry> = self
            .entries()
            .into_iter()
            .filter(|entry| entry.paths == paths)
            .collect();
        let exact = entries.iter().find(|entry| entry.key == key);
        let matched = exact.or_else(|| {
            restore_keys.iter().find_map(|prefix| {
                entries
                    .iter()
                    .find(|entry| entry.key.starts_with(&checked_key(prefix)))
            })
        });
        let mut outputs = BTreeMap::from([
            ("cache-hit".to_owned(), exact.is_some().to_string()),
            ("cache-primary-key".to_owned(), key.clone()),
        ]);
        if let Some(entry) = matched {
            tar(
                workspace,
                &["-xf", entry.dir.join("files.tar").to_str().unwrap()],
                &[],
            );
            outputs.insert("cache-matched-key".to_owned(), entry.key.clone());
        }
        outputs
    }

    /// `actions/cache/save@v4`; returns whether an entry was written.
    pub fn save(&self, with: &BTreeMap<String, String>, workspace: &Path) -> bool {
        check_inputs(with, &["path", "key"]);
        let key = checked_key(&with["key"]);
        let paths = with["path"].trim().to_owned();
        if self
            .entries()
            .iter()
            .any(|entry| entry.key == key && entry.paths == paths)
        {
            return false;
        }
        let seq = std::fs::read_dir(&self.root).unwrap().count();
        let dir = self.root.join(format!("{seq:06}"));
        std::fs::create_dir(&dir).unwrap();
        let listed: Vec<&str> = paths
            .lines()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        for path in &listed {
            assert!(
                workspace.join(path).exists(),
                "actions/cache/save: path {path} does not exist"
            );
        }
        tar(
            workspace,
            &["-cf", dir.join("files.tar").to_str().unwrap(), "--"],
            &listed,
        );
        std::fs::write(dir.join("paths"), &paths).unwrap();
        std::fs::write(dir.join("key"), &key).unwrap();
        true
    }
}

/// Keys as actions/cache accepts them: at most 512 characters, no comma.
fn checked_key(key: &str) -> String {
    let key = key.trim();
    assert!(
        !key.is_empty() && key.len() <= 512 && !key.contains(','),
        "actions/cache refuses the key {key:?}"
    );
    key.to_owned()
}

fn check_inputs(with: &BTreeMap<String, String>, known: &[&str]) {
    for name in with.keys() {
        assert!(
            known.contains(&name.as_str()),
            "the actions/cache stand-in does not implement input `{name}`"
        );
    }
    assert!(with.contains_key("path") && with.contains_key("key"));
}

/// Runs `tar -P` (absolute paths kept, as actions/cache restores them) in
/// `workspace`.
fn tar(workspace: &Path, args: &[&str], paths: &[&str]) {
    let status = Command::new("tar")
        .arg("-P")
        .args(args)
        .args(paths)
        .current_dir(workspace)
        .status()
        .unwrap();
    assert!(status.success(), "tar {args:?} {paths:?}");
}
