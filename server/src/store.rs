//! Embedded key store: SQLite (WAL, `synchronous = FULL`) for metadata,
//! content-addressed key blobs on disk.
//!
//! Layout under the data directory:
//! * `blindfold.db` — table `keys(identity, key_id, parameter_set, bytes,
//!   registered_at)`, one row per identity that registered a key;
//! * `keys/<key_id>.key` — the compressed evaluation key, named by the hex
//!   SHA-256 of its bytes (shared by identities that registered the same
//!   bytes);
//! * `uploads/` — keys being received; emptied at start;
//! * `reserve` — [`RESERVE_BYTES`] of zeros held back so that a key can be
//!   deleted on a full disk (SQLite needs room to record even a deletion):
//!   a deletion that fails for want of space frees it and retries, and it
//!   is written again once space allows;
//! * `LOCK` — held (`flock`, exclusive) by the one server using the
//!   directory, with its process id inside: a second server refuses to
//!   start instead of running crash recovery on a live server's files.
//!
//! Durability: an upload is written to `uploads/`, fsynced, renamed into
//! `keys/` (directory fsynced), and only then is the row committed. A crash
//! at any point leaves either no row (the key was never visible; the file is
//! removed at the next start) or a row whose blob is on disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::error::{Fault, StoreError};

const SCHEMA_VERSION: i64 = 1;

/// Space kept in `<data_dir>/reserve` for deletions on a full disk.
pub const RESERVE_BYTES: usize = 8 << 20;

/// One registered key as seen by its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub parameter_set: String,
    pub bytes: u64,
    pub registered_at: i64,
}

/// Outcome of [`KeyStore::commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    Registered,
    AlreadyRegistered,
    /// The identity holds this many keys already.
    QuotaExceeded(usize),
}

pub struct KeyStore {
    dir: PathBuf,
    conn: Mutex<Connection>,
    /// The directory lock, held as long as the store lives.
    _lock: DirLock,
}

/// An exclusive advisory lock on a data directory (`LOCK`, `flock`): the
/// kernel releases it when the process exits, however it exits.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("LOCK");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        #[cfg(unix)]
        {
            use std::io::{Read, Seek};
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(StoreError::Locked(format!(
                        "data directory {} is in use by another server{}; stop it or use another data_dir",
                        dir.display(),
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {holder})")
                        }
                    )));
                }
                return Err(StoreError::io(&path, err));
            }
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| writeln!(file, "{}", std::process::id()))
                .and_then(|_| file.sync_all())
                .map_err(|e| StoreError::io(&path, e))?;
        }
        Ok(Self { _file: file })
    }
}

/// Whether `id` looks like a key id (64 lowercase hex digits); anything
/// else is refused before it can reach a path.
pub fn valid_key_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl KeyStore {
    /// Opens (creating if needed) the store and cleans up after a crash.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        // before anything else: recovery must never run on a live server's files
        let lock = DirLock::acquire(dir)?;
        for sub in ["keys", "uploads"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| StoreError::io(&d, e))?;
        }
        let db = dir.join("blindfold.db");
        let conn = Connection::open(&db)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS keys (
                 identity TEXT NOT NULL,
                 key_id TEXT NOT NULL,
                 parameter_set TEXT NOT NULL,
                 bytes INTEGER NOT NULL,
                 registered_at INTEGER NOT NULL,
                 PRIMARY KEY (identity, key_id)
             );",
        )?;
        let version: Option<i64> = conn
            .query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0))
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta (k, v) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {v}, this server reads {SCHEMA_VERSION}"
                )))
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
            _lock: lock,
        };
        store.recover()?;
        store.ensure_reserve();
        Ok(store)
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join("reserve")
    }

    /// Writes the reserve if it is missing; best effort (on a full disk it
    /// waits for the next deletion).
    fn ensure_reserve(&self) {
        let path = self.reserve_path();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() as usize == RESERVE_BYTES) {
            return;
        }
        let tmp = self.dir.join("reserve.tmp");
        let written = File::create(&tmp)
            .and_then(|mut f| {
                // real blocks, not a sparse file
                f.write_all(&vec![0u8; RESERVE_BYTES])?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(
                error = %e,
                dir = %self.dir.display(),
                "cannot write the space reserve for deletions on a full disk"
            );
        }
    }

    /// Frees the reserve; false if there was none.
    fn release_reserve(&self) -> bool {
        let released = std::fs::remove_file(self.reserve_path()).is_ok();
        if released {
            tracing::warn!(
                dir = %self.dir.display(),
                "disk full: released the space reserve to record a deletion"
            );
        }
        released
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Corrupt("key store lock poisoned".into()))
    }

    /// Removes partial uploads and blobs no row refers to (a crash between
    /// rename and commit, or between commit and unlink on delete).
    fn recover(&self) -> Result<(), StoreError> {
        let uploads = self.dir.join("uploads");
        for entry in std::fs::read_dir(&uploads).map_err(|e| StoreError::io(&uploads, e))? {
            let path = entry.map_err(|e| StoreError::io(&uploads, e))?.path();
            tracing::info!(path = %path.display(), "removing a partial upload left by a crash");
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
        let conn = self.conn()?;
        let keys = self.dir.join("keys");
        for entry in std::fs::read_dir(&keys).map_err(|e| StoreError::io(&keys, e))? {
            let path = entry.map_err(|e| StoreError::io(&keys, e))?.path();
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let referenced: i64 =
                conn.query_row("SELECT COUNT(*) FROM keys WHERE key_id = ?1", [&id], |r| {
                    r.get(0)
                })?;
            if referenced == 0 {
                tracing::info!(path = %path.display(), "removing an unreferenced key blob");
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
        }
        let mut stmt = conn.prepare("SELECT DISTINCT key_id FROM keys")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            if !self.blob_path(&id).exists() {
                return Err(StoreError::Corrupt(format!(
                    "key {id} is registered but its blob is missing from {}",
                    keys.display()
                )));
            }
        }
        Ok(())
    }

    pub fn blob_path(&self, key_id: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{key_id}.key"))
    }

    /// Starts receiving a key into `uploads/`.
    pub fn begin_upload(&self) -> Result<Upload, StoreError> {
        // unique within this process (the directory is emptied at start);
        // create_new refuses to reuse a name anyway
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .dir
            .join("uploads")
            .join(format!("{}-{n}.part", std::process::id()));
        let file = File::create_new(&path).map_err(|e| StoreError::io(&path, e))?;
        Ok(Upload {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            received: 0,
        })
    }

    pub fn get(&self, identity: &str, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT key_id, parameter_set, bytes, registered_at FROM keys
                 WHERE identity = ?1 AND key_id = ?2",
                params![identity, key_id],
                |r| {
                    Ok(KeyRecord {
                        key_id: r.get(0)?,
                        parameter_set: r.get(1)?,
                        bytes: r.get::<_, i64>(2)? as u64,
                        registered_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn count(&self, identity: &str) -> Result<usize, StoreError> {
        let conn = self.conn()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM keys WHERE identity = ?1",
            [identity],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    /// Makes a finished, verified upload durable and visible to `identity`,
    /// unless the identity already holds `max_keys` other keys.
    pub fn commit(
        &self,
        identity: &str,
        upload: FinishedUpload,
        parameter_set: &str,
        max_keys: usize,
    ) -> Result<Commit, StoreError> {
        let conn = self.conn()?;
        let (held, has_it): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(key_id = ?2), 0) FROM keys WHERE identity = ?1",
            params![identity, upload.key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if has_it > 0 {
            return Ok(Commit::AlreadyRegistered);
        }
        if held as usize >= max_keys {
            return Ok(Commit::QuotaExceeded(held as usize));
        }
        let target = self.blob_path(&upload.key_id);
        if target.exists() {
            // same bytes already stored (by this or another identity)
            std::fs::remove_file(&upload.path).map_err(|e| StoreError::io(&upload.path, e))?;
        } else {
            std::fs::rename(&upload.path, &target).map_err(|e| StoreError::io(&target, e))?;
            sync_dir(&self.dir.join("keys"))?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        conn.execute(
            "INSERT INTO keys (identity, key_id, parameter_set, bytes, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                identity,
                upload.key_id,
                parameter_set,
                upload.bytes as i64,
                now
            ],
        )?;
        Ok(Commit::Registered)
    }

    /// Removes `identity`'s registration; the blob goes when nobody else
    /// holds it. Returns (whether a row was deleted, whether the blob went).
    /// On a full disk it frees the space reserve and tries again, so a
    /// client can always make room.
    pub fn delete(&self, identity: &str, key_id: &str) -> Result<(bool, bool), StoreError> {
        match self.delete_once(identity, key_id) {
            Err(e) if e.fault() == Fault::Full && self.release_reserve() => {
                let outcome = self.delete_once(identity, key_id);
                self.ensure_reserve();
                outcome
            }
            outcome => {
                if matches!(outcome, Ok((_, true))) {
                    // a blob went: room for a reserve that could not be written
                    self.ensure_reserve();
                }
                outcome
            }
        }
    }

    fn delete_once(&self, identity: &str, key_id: &str) -> Result<(bool, bool), StoreError> {
        let conn = self.conn()?;
        let deleted = conn.execute(
            "DELETE FROM keys WHERE identity = ?1 AND key_id = ?2",
            params![identity, key_id],
        )?;
        if deleted == 0 {
            return Ok((false, false));
        }
        let others: i64 = conn.query_row(
            "SELECT COUNT(*) FROM keys WHERE key_id = ?1",
            [key_id],
            |r| r.get(0),
        )?;
        if others == 0 {
            let path = self.blob_path(key_id);
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            return Ok((true, true));
        }
        Ok((true, false))
    }
}

/// A key being received: bytes go to a file in `uploads/` and through
/// SHA-256. Dropped before [`Upload::finish`], the file is removed.
pub struct Upload {
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    received: u64,
}

/// A complete upload, fsynced, not yet visible.
pub struct FinishedUpload {
    pub key_id: String,
    pub bytes: u64,
    path: PathBuf,
}

impl FinishedUpload {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Upload {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("upload already finished".into()))?;
        file.write_all(data)
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.hasher.update(data);
        self.received += data.len() as u64;
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn finish(mut self) -> Result<FinishedUpload, StoreError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::Corrupt("upload already finished".into()))?;
        file.sync_all().map_err(|e| StoreError::io(&self.path, e))?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        let key_id = hex::encode(hasher.finalize());
        let path = std::mem::take(&mut self.path);
        Ok(FinishedUpload {
            key_id,
            bytes: self.received,
            path,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for FinishedUpload {
    fn drop(&mut self) {
        // `commit` moves or removes the file; anything else discards it
        if self.path.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(store: &KeyStore, data: &[u8]) -> FinishedUpload {
        let mut u = store.begin_upload().unwrap();
        u.write(&data[..data.len() / 2]).unwrap();
        u.write(&data[data.len() / 2..]).unwrap();
        u.finish().unwrap()
    }

    #[test]
    fn a_second_store_on_a_live_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyStore::open(dir.path()).unwrap();
        // an upload in progress that recovery would delete
        let mut u = first.begin_upload().unwrap();
        u.write(b"half a key").unwrap();
        let Err(e) = KeyStore::open(dir.path()) else {
            panic!("a second store opened a live directory");
        };
        let text = e.to_string();
        assert!(text.contains("in use by another server"), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            1,
            "the refused store touched the live upload"
        );
        drop(u);
        drop(first);
        // released with its holder
        KeyStore::open(dir.path()).expect("reopens once the first is gone");
    }

    #[test]
    fn commit_get_delete_and_sharing() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let f = upload(&store, b"key bytes");
        let id = f.key_id.clone();
        assert_eq!(id, hex::encode(Sha256::digest(b"key bytes")));
        assert!(valid_key_id(&id));
        assert_eq!(
            store.commit("alice", f, "2_2", 2).unwrap(),
            Commit::Registered
        );
        assert_eq!(
            store
                .commit("alice", upload(&store, b"key bytes"), "2_2", 2)
                .unwrap(),
            Commit::AlreadyRegistered
        );
        assert_eq!(
            store
                .commit("bob", upload(&store, b"key bytes"), "2_2", 2)
                .unwrap(),
            Commit::Registered
        );
        assert_eq!(
            store
                .commit("bob", upload(&store, b"other"), "2_2", 1)
                .unwrap(),
            Commit::QuotaExceeded(1)
        );
        assert_eq!(store.get("alice", &id).unwrap().unwrap().bytes, 9);
        assert!(store.get("carol", &id).unwrap().is_none());
        assert_eq!(store.delete("alice", &id).unwrap(), (true, false));
        assert!(store.blob_path(&id).exists(), "bob still holds it");
        assert_eq!(store.delete("alice", &id).unwrap(), (false, false));
        assert_eq!(store.delete("bob", &id).unwrap(), (true, true));
        assert!(!store.blob_path(&id).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn reopen_keeps_rows_and_drops_partial_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = KeyStore::open(dir.path()).unwrap();
            let f = upload(&store, b"abc");
            let id = f.key_id.clone();
            store.commit("alice", f, "3_3", 4).unwrap();
            // a crash mid-upload leaves a part file; a crash between rename
            // and commit leaves an unreferenced blob
            let mut u = store.begin_upload().unwrap();
            u.write(b"half").unwrap();
            std::mem::forget(u);
            std::fs::write(store.blob_path(&"0".repeat(64)), b"orphan").unwrap();
            id
        };
        let store = KeyStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get("alice", &id).unwrap().unwrap().parameter_set,
            "3_3"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
        assert!(!store.blob_path(&"0".repeat(64)).exists());
        assert!(store.blob_path(&id).exists());
    }

    #[test]
    fn key_ids_are_checked_before_becoming_paths() {
        assert!(!valid_key_id("../../etc/passwd"));
        assert!(!valid_key_id(&"A".repeat(64)));
        assert!(!valid_key_id(&"a".repeat(63)));
        assert!(valid_key_id(&"a".repeat(64)));
    }
}
