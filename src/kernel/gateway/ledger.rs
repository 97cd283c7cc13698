//! Which gateway kernels this machine's servers started, so that a server that could not
//! delete its kernels (SIGKILL, a crash, a power cut) does not leave them running on the
//! gateway forever: the next server against the same gateway deletes the kernels whose owner
//! is gone (`--reap-orphans`, on by default).
//!
//! Each server holds an exclusive lock on an owner file of its own for its whole life
//! (`<data dir>/gateway-kernels/owner-<pid>-<random>.lock`); the OS releases the lock when
//! the process ends, however it ends. One record per kernel (`<kernel id>.json`) names the
//! gateway and the owner file. A record whose owner file someone else can lock belongs to a
//! server that is gone. Gateways do not return a kernel's environment, so the records are
//! kept here rather than as tags on the kernels.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest record read (they are ~200 bytes).
const MAX_RECORD: u64 = 64 << 10;
/// Most records looked at in one scan.
const MAX_SCAN: usize = 10_000;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    /// The gateway's URL as shown (no token, no user info).
    gateway: String,
    id: String,
    /// The owner file's name in the ledger folder.
    owner: String,
}

/// This server's ledger: its owner lock, held until the process ends.
pub struct Ledger {
    dir: PathBuf,
    owner: String,
    _lock: File,
}

impl Ledger {
    /// Opens the ledger in `data`, taking this process's owner lock.
    ///
    /// # Errors
    /// When the folder or the owner file cannot be made, or the lock cannot be taken.
    pub fn open(data: &Path) -> std::io::Result<Ledger> {
        let dir = data.join("gateway-kernels");
        std::fs::create_dir_all(&dir)?;
        let owner = format!(
            "owner-{}-{}.lock",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let lock = File::create(dir.join(&owner))?;
        lock.try_lock().map_err(std::io::Error::other)?;
        Ok(Ledger {
            dir,
            owner,
            _lock: lock,
        })
    }

    fn record_path(&self, id: &str) -> Option<PathBuf> {
        // Ids are UUIDs; anything else is never a file name here.
        let safe = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        safe.then(|| self.dir.join(format!("{id}.json")))
    }

    /// Notes that this server started kernel `id` on `gateway`.
    pub fn record(&self, gateway: &str, id: &str) {
        let Some(path) = self.record_path(id) else {
            return;
        };
        let rec = Record {
            gateway: gateway.to_owned(),
            id: id.to_owned(),
            owner: self.owner.clone(),
        };
        let written = serde_json::to_vec(&rec)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&path, b));
        if let Err(e) = written {
            tracing::warn!(kernel_id = id, error = %e, "could not record the gateway kernel; a crash would leave it for the gateway's idle culling");
        }
    }

    /// Forgets kernel `id` (deleted, or found gone).
    pub fn forget(&self, id: &str) {
        if let Some(path) = self.record_path(id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Kernels on `gateway` whose server is gone. Their owners' lock files stay locked by this
    /// scan until the returned guard is dropped, so two servers never reap the same one twice.
    pub fn orphans(&self, gateway: &str) -> Orphans {
        let mut found = Orphans::default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return found;
        };
        let mut owners: std::collections::HashMap<String, Option<File>> = Default::default();
        // Owners with a kernel on record, whatever the gateway: those on other gateways are
        // left to their own gateway's servers, lock files included.
        let mut with_records = std::collections::HashSet::new();
        for e in entries.flatten().take(MAX_SCAN) {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let Some(rec) = read_record(&path) else {
                continue;
            };
            with_records.insert(rec.owner.clone());
            if rec.gateway != gateway || rec.owner == self.owner || rec.owner.contains(['/', '\\'])
            {
                continue;
            }
            let dead = owners
                .entry(rec.owner.clone())
                .or_insert_with(|| lock_if_gone(&self.dir.join(&rec.owner)))
                .is_some();
            if dead {
                found.ids.push(rec.id);
            }
        }
        // Owner files of servers that ended with no kernel recorded (an orderly exit that
        // did not run destructors) go too, when no live server holds them. Never one with a
        // record on another gateway: holding its lock through this scan would make it look
        // alive to that gateway's server scanning meanwhile, whose orphans would then stay.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten().take(MAX_SCAN) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("owner-")
                    && name.ends_with(".lock")
                    && name != self.owner
                    && !owners.contains_key(&name)
                    && !with_records.contains(&name)
                {
                    if let Some(lock) = lock_if_gone(&e.path()) {
                        owners.insert(name, Some(lock));
                    }
                }
            }
        }
        found.locks = owners
            .into_iter()
            .filter_map(|(name, lock)| lock.map(|l| (self.dir.join(name), l)))
            .collect();
        found
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // An orderly end: kernels were deleted (their records with them); the owner file goes.
        let _ = std::fs::remove_file(self.dir.join(&self.owner));
    }
}

/// Kernels of servers that are gone, with their owners' locks held.
#[derive(Default)]
pub struct Orphans {
    pub ids: Vec<String>,
    locks: Vec<(PathBuf, File)>,
}

impl Orphans {
    /// Removes the owner files once their kernels are dealt with.
    pub fn done(self) {
        for (path, lock) in self.locks {
            drop(lock);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn read_record(path: &Path) -> Option<Record> {
    use std::io::Read;
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The owner file locked by us when its server is gone (a missing file counts as gone: an
/// orderly server removes it only after deleting its kernels).
fn lock_if_gone(path: &Path) -> Option<File> {
    let f = match File::options().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Nothing to hold: a placeholder lock on a fresh file of our own naming.
            let f = File::create(path).ok()?;
            f.try_lock().ok()?;
            return Some(f);
        }
        Err(_) => return None,
    };
    f.try_lock().ok().map(|()| f)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owners_kernels_are_not_orphans_a_gone_ones_are() {
        let data = tempfile::tempdir().unwrap();
        let alive = Ledger::open(data.path()).unwrap();
        alive.record("http://g:1", "aaaa-1");
        let me = Ledger::open(data.path()).unwrap();
        assert!(me.orphans("http://g:1").ids.is_empty());
        // The owner ends without deleting its kernel (a SIGKILL: no Drop runs), and the OS
        // releases its lock; the owner file stays.
        let owner_file = data.path().join("gateway-kernels").join(&alive.owner);
        alive._lock.unlock().unwrap();
        std::mem::forget(alive);
        assert!(owner_file.exists());
        let o = me.orphans("http://g:1");
        assert_eq!(o.ids, vec!["aaaa-1".to_owned()]);
        // Another gateway's kernels are not ours to reap.
        assert!(me.orphans("http://other:2").ids.is_empty());
        o.done();
        me.forget("aaaa-1");
        assert!(me.orphans("http://g:1").ids.is_empty());
    }

    #[test]
    fn ids_that_are_not_file_names_are_not_recorded() {
        let data = tempfile::tempdir().unwrap();
        let l = Ledger::open(data.path()).unwrap();
        for bad in ["", "../x", "a/b", "a\\b", "x.json"] {
            assert!(l.record_path(bad).is_none(), "{bad}");
        }
    }

    /// Two servers of two gateways scan at once: the one that finds nothing of its own must
    /// not hold the lock of a dead server of the other gateway (it would look alive, and its
    /// kernel would stay on the gateway for good).
    #[test]
    fn a_scan_for_one_gateway_does_not_hide_another_gateways_orphans() {
        let data = tempfile::tempdir().unwrap();
        let gone = Ledger::open(data.path()).unwrap();
        gone.record("http://g:1", "kkkk-1");
        gone._lock.unlock().unwrap();
        std::mem::forget(gone);
        let other = Ledger::open(data.path()).unwrap();
        let mine = Ledger::open(data.path()).unwrap();
        // The other gateway's server is still busy with what its scan found...
        let held = other.orphans("http://other:2");
        assert!(held.ids.is_empty());
        // ...while the dead server's gateway's server scans.
        let o = mine.orphans("http://g:1");
        assert_eq!(o.ids, vec!["kkkk-1".to_owned()]);
        held.done();
        o.done();
    }
}
