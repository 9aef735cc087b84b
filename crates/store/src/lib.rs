//! Crash-safe persistence of small records.
//!
//! Every record is one JSON file in a directory, written atomically: a temp
//! file in the same directory, `fsync`, `rename` over the old file, `fsync` of
//! the directory. A crash at any point leaves either the old or the new
//! record, never a torn one. Leftover temp files (`.tmp-*`) are removed when
//! the directory is opened.
//!
//! Every record carries the format version of its directory's record type
//! (`{"version": N, "record": ...}`). A record of an older version is
//! migrated on read by the directory's [`Migration`]; one of a newer
//! version (a downgrade) cannot be read and is reported as such, for the
//! caller to [quarantine](RecordDir::quarantine). Unknown fields are
//! ignored, so that a newer Berth of the same version can add some.
#![deny(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("record {path} has version {found}, this Berth reads up to {supported}")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "record {path} of version {found} cannot be migrated to version {supported}: {reason}"
    )]
    Migration {
        path: PathBuf,
        found: u32,
        supported: u32,
        reason: String,
    },
    #[error("invalid record key {0:?}")]
    Key(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The version of record types that never changed (the first one).
pub const VERSION: u32 = 1;

/// Rewrites a record (the envelope's `record`) of an older version, given
/// as the first argument, into the current version's form; an error says
/// why it cannot.
pub type Migration =
    Arc<dyn Fn(u32, serde_json::Value) -> Result<serde_json::Value, String> + Send + Sync>;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    record: T,
}

/// A record [`RecordDir::load_all`] could not read.
#[derive(Debug)]
pub struct Unreadable {
    pub key: String,
    pub error: Error,
}

/// What [`RecordDir::load_all`] found: good records by key, and the ones
/// that could not be read.
pub type Loaded<T> = (Vec<(String, T)>, Vec<Unreadable>);

/// A record moved aside by [`RecordDir::quarantine`]: kept as it was, never
/// read again, until a person looks at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The record's key (the id of the object it described).
    pub key: String,
    /// Where the record is now.
    pub path: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

/// The directory, inside a record directory, of quarantined records.
const QUARANTINE: &str = "quarantine";

/// A directory of records of one type, keyed by a file-name-safe key.
#[derive(Clone)]
pub struct RecordDir {
    dir: PathBuf,
    /// The version records are written in, the newest this reads.
    version: u32,
    /// From older versions to `version`.
    migrate: Option<Migration>,
}

impl std::fmt::Debug for RecordDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordDir")
            .field("dir", &self.dir)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl RecordDir {
    /// Opens (creating if needed) `dir` and removes temp files a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io("read directory", &dir))? {
            let entry = entry.map_err(io("read directory", &dir))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let p = entry.path();
                tracing::debug!(path = %p.display(), "removing leftover temp record");
                fs::remove_file(&p).map_err(io("remove", &p))?;
            }
        }
        Ok(RecordDir {
            dir,
            version: VERSION,
            migrate: None,
        })
    }

    /// Records of this directory are of `version` (written so, read up to
    /// it); `migrate` brings older ones to it when they are read. Without
    /// it (see [`RecordDir::open`]), the version is [`VERSION`].
    pub fn versioned(self, version: u32, migrate: Migration) -> Self {
        RecordDir {
            version,
            migrate: Some(migrate),
            ..self
        }
    }

    /// The directory this store writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> Result<PathBuf, Error> {
        let ok = !key.is_empty()
            && key.len() <= 200
            && !key.starts_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !ok {
            return Err(Error::Key(key.to_string()));
        }
        Ok(self.dir.join(format!("{key}.json")))
    }

    /// Writes `record` under `key`, replacing any previous one atomically.
    pub fn put<T: Serialize>(&self, key: &str, record: &T) -> Result<(), Error> {
        let path = self.path(key)?;
        let data = serde_json::to_vec(&Envelope {
            version: self.version,
            record,
        })
        .map_err(|source| Error::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &data)
    }

    /// Reads the record under `key`; `None` if there is none.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(data) => self.decode(&path, &data).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Removes the record under `key`; removing a missing record succeeds.
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Loads every record. Records that cannot be decoded are returned
    /// separately so the caller can log and skip them rather than refuse to start.
    pub fn load_all<T: DeserializeOwned>(&self) -> Result<Loaded<T>, Error> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut names: Vec<_> = fs::read_dir(&self.dir)
            .map_err(io("read directory", &self.dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            if key.starts_with('.') {
                continue;
            }
            let path = self.dir.join(&name);
            let unreadable = |error| Unreadable {
                key: key.to_string(),
                error,
            };
            match fs::read(&path) {
                Ok(data) => match self.decode(&path, &data) {
                    Ok(r) => good.push((key.to_string(), r)),
                    Err(e) => bad.push(unreadable(e)),
                },
                Err(e) => bad.push(unreadable(io("read", &path)(e))),
            }
        }
        Ok((good, bad))
    }

    /// Moves the record under `key` aside, into `quarantine/` of this
    /// directory, with `reason` beside it. Nothing is deleted: a newer
    /// Berth, or a person, can still read it.
    pub fn quarantine(&self, key: &str, reason: &str) -> Result<Quarantined, Error> {
        let from = self.path(key)?;
        let qdir = self.dir.join(QUARANTINE);
        fs::create_dir_all(&qdir).map_err(io("create directory", &qdir))?;
        let mut to = qdir.join(format!("{key}.json"));
        if to.exists() {
            to = qdir.join(format!("{key}.json.{:016x}", rand::random::<u64>()));
        }
        fs::rename(&from, &to).map_err(io("rename", &from))?;
        let why = reason_path(&to);
        write_atomic(&why, reason.as_bytes())?;
        sync_dir(&self.dir)?;
        Ok(Quarantined {
            key: key.to_string(),
            path: to,
            reason: reason.to_string(),
        })
    }

    /// Every record in quarantine, oldest name first.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, Error> {
        let qdir = self.dir.join(QUARANTINE);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&qdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io("read directory", &qdir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".reason") && !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            let Some((key, _)) = name.rsplit_once(".json") else {
                continue;
            };
            let path = qdir.join(&name);
            let reason = fs::read_to_string(reason_path(&path)).unwrap_or_default();
            out.push(Quarantined {
                key: key.to_string(),
                path,
                reason,
            });
        }
        Ok(out)
    }
}

fn reason_path(record: &Path) -> PathBuf {
    let mut name = record.file_name().unwrap_or_default().to_os_string();
    name.push(".reason");
    record.with_file_name(name)
}

impl RecordDir {
    /// Reads an envelope: a record of this directory's version as it is,
    /// an older one through the migration, a newer one not at all.
    fn decode<T: DeserializeOwned>(&self, path: &Path, data: &[u8]) -> Result<T, Error> {
        let corrupt = |source| Error::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        let env: Envelope<serde_json::Value> = serde_json::from_slice(data).map_err(corrupt)?;
        let found = env.version;
        if found > self.version {
            return Err(Error::Version {
                path: path.to_path_buf(),
                found,
                supported: self.version,
            });
        }
        let record = match &self.migrate {
            Some(migrate) if found < self.version => {
                migrate(found, env.record).map_err(|reason| Error::Migration {
                    path: path.to_path_buf(),
                    found,
                    supported: self.version,
                    reason,
                })?
            }
            _ => env.record,
        };
        serde_json::from_value(record).map_err(corrupt)
    }
}

/// Replaces `path` with `data` atomically and durably (temp file, fsync,
/// rename, fsync of the parent directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `fsync` of a directory, so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        n: u32,
    }

    #[test]
    fn put_get_delete_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let s = RecordDir::open(d.path().join("recs")).unwrap();
        let r = Rec {
            name: "a".into(),
            n: 1,
        };
        s.put("k1", &r).unwrap();
        assert_eq!(s.get::<Rec>("k1").unwrap(), Some(r));
        s.put(
            "k1",
            &Rec {
                name: "b".into(),
                n: 2,
            },
        )
        .unwrap();
        assert_eq!(s.get::<Rec>("k1").unwrap().unwrap().n, 2);
        s.delete("k1").unwrap();
        s.delete("k1").unwrap();
        assert_eq!(s.get::<Rec>("k1").unwrap(), None);
    }

    #[test]
    fn leftovers_removed_and_corrupt_records_reported() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".tmp-123"), b"half").unwrap();
        fs::write(d.path().join("bad.json"), b"{not json").unwrap();
        fs::write(
            d.path().join("future.json"),
            br#"{"version":99,"record":{"name":"x","n":1}}"#,
        )
        .unwrap();
        let s = RecordDir::open(d.path()).unwrap();
        assert!(!d.path().join(".tmp-123").exists());
        s.put(
            "good",
            &Rec {
                name: "g".into(),
                n: 3,
            },
        )
        .unwrap();
        let (good, bad) = s.load_all::<Rec>().unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].0, "good");
        assert_eq!(bad.len(), 2);
        assert!(bad
            .iter()
            .any(|u| u.key == "future" && matches!(u.error, Error::Version { found: 99, .. })));
        assert!(bad.iter().any(|u| u.key == "bad"));
    }

    #[test]
    fn quarantine_keeps_records_aside() {
        let d = tempfile::tempdir().unwrap();
        let s = RecordDir::open(d.path()).unwrap();
        fs::write(d.path().join("bad.json"), b"{not json").unwrap();
        let (_, bad) = s.load_all::<Rec>().unwrap();
        let q = s
            .quarantine(&bad[0].key, &bad[0].error.to_string())
            .unwrap();
        assert_eq!(q.key, "bad");
        assert_eq!(fs::read(&q.path).unwrap(), b"{not json");
        // Out of the way of later loads, still listed, with its reason.
        let (good, bad) = s.load_all::<Rec>().unwrap();
        assert!(good.is_empty() && bad.is_empty());
        let listed = s.quarantined().unwrap();
        assert_eq!(listed, vec![q.clone()]);
        assert!(listed[0].reason.contains("corrupt"), "{}", listed[0].reason);
        // The same key again keeps both.
        fs::write(d.path().join("bad.json"), b"{again").unwrap();
        let q2 = s.quarantine("bad", "again").unwrap();
        assert_ne!(q2.path, q.path);
        assert_eq!(s.quarantined().unwrap().len(), 2);
        assert!(s.quarantined().unwrap().iter().all(|q| q.key == "bad"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        // A record written by a newer Berth of the same version, with a
        // field this one does not know.
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("k.json"),
            br#"{"version":1,"record":{"name":"x","n":1,"added_later":true},"extra":0}"#,
        )
        .unwrap();
        let s = RecordDir::open(d.path()).unwrap();
        assert_eq!(s.get::<Rec>("k").unwrap().unwrap().n, 1);
    }

    #[test]
    fn older_versions_are_migrated_newer_ones_refused() {
        // Version 2 of `Rec` renamed `label` to `name`.
        let d = tempfile::tempdir().unwrap();
        let migrate: Migration = Arc::new(|version, mut v| match version {
            1 => {
                let label = v["label"].take();
                v["name"] = label;
                Ok(v)
            }
            _ => Err(format!("no migration from version {version}")),
        });
        let s = RecordDir::open(d.path()).unwrap().versioned(2, migrate);
        let write = |key: &str, text: &str| fs::write(d.path().join(key), text).unwrap();
        write("old.json", r#"{"version":1,"record":{"label":"x","n":1}}"#);
        write("zero.json", r#"{"version":0,"record":{"label":"x","n":1}}"#);
        write("bad.json", r#"{"version":1,"record":{"n":"not a number"}}"#);
        write("new.json", r#"{"version":3,"record":{"name":"x","n":1}}"#);
        s.put(
            "cur",
            &Rec {
                name: "c".into(),
                n: 2,
            },
        )
        .unwrap();
        let text = fs::read_to_string(d.path().join("cur.json")).unwrap();
        assert!(text.starts_with(r#"{"version":2,"#), "{text}");
        assert_eq!(s.get::<Rec>("old").unwrap().unwrap().name, "x");

        let (good, bad) = s.load_all::<Rec>().unwrap();
        let keys: Vec<&str> = good.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["cur", "old"]);
        let error = |key: &str| &bad.iter().find(|u| u.key == key).unwrap().error;
        assert!(matches!(
            error("new"),
            Error::Version {
                found: 3,
                supported: 2,
                ..
            }
        ));
        assert!(matches!(error("zero"), Error::Migration { found: 0, .. }));
        // Migrated, but still not a `Rec`.
        assert!(matches!(error("bad"), Error::Corrupt { .. }));
        assert_eq!(bad.len(), 3);
    }

    #[test]
    fn keys_cannot_escape_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let s = RecordDir::open(d.path()).unwrap();
        for k in ["", "../x", "a/b", ".hidden", "x\0y"] {
            assert!(matches!(s.put(k, &1u32), Err(Error::Key(_))), "{k:?}");
        }
    }
}
