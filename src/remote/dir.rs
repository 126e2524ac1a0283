//! `file://` remotes: objects at `<dir>/ac/<key>` on a mount every machine
//! sees (NFS, a CI runner's shared volume). Each object is written to a
//! temporary file in the same directory and renamed over its name, so a
//! reader on another machine sees a whole object or none.

use std::io::Write as _;
use std::path::PathBuf;

use super::Backend;
use crate::key::Key;

pub struct Dir {
    objects: PathBuf,
}

impl Dir {
    pub fn new(dir: &std::path::Path) -> Self {
        Self {
            objects: dir.join("ac"),
        }
    }
}

impl Backend for Dir {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.objects.join(key.to_hex())) {
            Ok(object) => Ok(Some(object)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(format!("read: {err}")),
        }
    }

    fn put(&self, key: &Key, object: &[u8]) -> Result<(), String> {
        let written = (|| {
            std::fs::create_dir_all(&self.objects)?;
            let mut file = tempfile::Builder::new()
                .prefix(".rcache-put-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .tempfile_in(&self.objects)?;
            file.write_all(object)?;
            file.persist(self.objects.join(key.to_hex()))?;
            Ok::<(), std::io::Error>(())
        })();
        written.map_err(|err| format!("write: {err}"))
    }

    fn has(&self, key: &Key) -> Result<bool, String> {
        self.objects
            .join(key.to_hex())
            .try_exists()
            .map_err(|err| format!("stat: {err}"))
    }
}
