//! The record of the files connd wrote, so that a later connd process can remove those
//! no longer planned (docs/files.md). Its memory of what it wrote dies with a process;
//! the record does not: `run` and `serve` keep one hidden file, [`RECORD`], in every folder
//! that holds a planned file, each listing every file written (its path, inode and
//! modification time). A new process reads the records of the folders it plans to write
//! in, and removes a listed file that is no longer planned only while its inode and mtime
//! are still the ones recorded: a file someone else replaced or changed since is not
//! connd's any more, and stays.
//!
//! Boundary: which files are planned is the keeper's (`keep`); a record is written with
//! the same atomic write as the files (`write`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The record's name in each folder holding a planned file.
pub const RECORD: &str = ".connd-files.json";

/// One file connd wrote, as it was right after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The file's absolute path (under the files root).
    pub path: PathBuf,
    /// Its inode: every write renames a new file into place, so a rewrite changes it.
    pub ino: u64,
    /// Its modification time, in nanoseconds since the epoch.
    pub mtime_ns: i128,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    files: BTreeSet<Entry>,
}

impl Entry {
    /// `path` as it is on disk now; None when it is not a regular file.
    pub fn of(path: &Path) -> Option<Entry> {
        let meta = fs::symlink_metadata(path).ok()?;
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        meta.is_file().then(|| Entry { path: path.to_owned(), ino: meta.ino(), mtime_ns })
    }

    /// Whether the file is still the one connd wrote: same inode, same mtime.
    pub fn still_ours(&self) -> bool {
        Entry::of(&self.path).is_some_and(|now| now == *self)
    }
}

/// Every entry of the records found in `folders`; an absent or unreadable record adds
/// nothing (a damaged one is logged).
pub fn load<'a>(folders: impl IntoIterator<Item = &'a Path>) -> BTreeSet<Entry> {
    let mut all = BTreeSet::new();
    for folder in folders {
        let path = folder.join(RECORD);
        let Ok(text) = fs::read(&path) else { continue };
        match serde_json::from_slice::<Record>(&text) {
            Ok(record) => all.extend(record.files),
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "ignoring a damaged record of written files"),
        }
    }
    all
}

/// Writes `entries` as the record of each folder of `folders`; returns the first error.
pub fn save<'a>(folders: impl IntoIterator<Item = &'a Path>, entries: &BTreeSet<Entry>) -> std::io::Result<()> {
    let record = Record { files: entries.clone() };
    let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
    let mut first_error = Ok(());
    for folder in folders {
        let path = folder.join(RECORD);
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        let result = write_atomic(&path, &bytes);
        if first_error.is_ok() {
            first_error = result;
        }
    }
    first_error
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_or_replaced_since_it_was_recorded_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.env");
        fs::write(&path, "A=1\n").unwrap();
        let entry = Entry::of(&path).unwrap();
        assert!(entry.still_ours());
        save([dir.path()], &BTreeSet::from([entry.clone()])).unwrap();
        assert_eq!(load([dir.path()]), BTreeSet::from([entry.clone()]));
        let other = dir.path().join("b");
        fs::write(&other, "mine\n").unwrap();
        fs::rename(&other, &path).unwrap();
        assert!(!entry.still_ours(), "a file renamed over it is another's");
    }
}
