//! Atomic writes of rendered files (docs/files.md). A reader sees the old file or the new one,
//! never a part: the bytes go to a temporary file in the target's folder, created with
//! `O_EXCL|O_NOFOLLOW` and given its mode and owner before any byte is written, then
//! fsynced and renamed over the target (which replaces a symlink there instead of writing
//! through it), and the folder is fsynced. A file whose bytes, mode and owner are already
//! right is left alone, its mtime kept. Folders are created `0700`; a folder that leads
//! out of the files root through a symlink is refused. On any failure the temporary
//! file is removed and the old file stays.

use super::PlannedFile;
use crate::fileplan::escapes_root;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Escapes(String),
    /// The target is a mount point (a file bind-mounted there): rename(2) over it fails
    /// with EBUSY, and writing into it in place would let a reader see half a file.
    #[error(
        "it is a mount point (a file mounted there: a Kubernetes subPath, a docker -v file mount), \
         and a file cannot be replaced there; mount the folder instead and let connd write the file in it"
    )]
    MountPoint,
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Bytes, mode and owner were already right: nothing was touched.
    Unchanged,
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> WriteError {
    move |source| WriteError::Io { step, source }
}

/// Whether `path` is a regular file (not a symlink) with these bytes, mode and owner.
fn same(path: &Path, bytes: &[u8], file: &PlannedFile) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else { return false };
    let owner_ok = file.owner.map_or(true, |uid| meta.uid() == uid) && file.group.map_or(true, |gid| meta.gid() == gid);
    if !meta.is_file() || meta.len() != bytes.len() as u64 || meta.mode() & 0o7777 != file.mode || !owner_ok {
        return false;
    }
    let Ok(f) = OpenOptions::new().read(true).custom_flags(libc_o_nofollow()).open(path) else { return false };
    let mut old = Vec::with_capacity(bytes.len());
    f.take(bytes.len() as u64 + 1).read_to_end(&mut old).is_ok() && old == bytes
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `file.target` atomically, under `real_root` (the files root as
/// `fileplan::resolve_root` resolves it).
pub fn write(real_root: &Path, file: &PlannedFile, bytes: &[u8]) -> Result<Outcome, WriteError> {
    let target = &file.target;
    let folder = target.parent().ok_or_else(|| WriteError::Escapes("the path names no file".into()))?;
    if let Some(why) = escapes_root(real_root, target) {
        return Err(WriteError::Escapes(why));
    }
    if same(target, bytes, file) {
        return Ok(Outcome::Unchanged);
    }
    if !folder.is_dir() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(folder).map_err(io("creating the folder"))?;
        // Created through no symlink that appeared meanwhile.
        if let Some(why) = escapes_root(real_root, target) {
            return Err(WriteError::Escapes(why));
        }
    }
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = folder.join(format!(".{name}.connd-{}-{n}.tmp", std::process::id()));
    let result = write_temp(&temp, file, bytes).and_then(|()| {
        fs::rename(&temp, target).map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::libc::EBUSY => WriteError::MountPoint,
            _ => io("renaming into place")(e),
        })
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable once the folder is synced; a failure here leaves the new file.
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(Outcome::Written)
}

/// Creates `temp` (which must not exist) with its owner and mode, then writes and syncs.
fn write_temp(temp: &Path, file: &PlannedFile, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(temp)
        .map_err(io("creating the temporary file"))?;
    if file.owner.is_some() || file.group.is_some() {
        std::os::unix::fs::fchown(&f, file.owner, file.group).map_err(io("setting the owner"))?;
    }
    f.set_permissions(Permissions::from_mode(file.mode)).map_err(io("setting the mode"))?;
    f.write_all(bytes).map_err(io("writing"))?;
    f.sync_all().map_err(io("flushing to disk"))?;
    Ok(())
}

/// Removes a file connd wrote and no longer plans (a symlink there is removed, not followed).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
