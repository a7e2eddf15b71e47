//! Binding the Unix sockets connd serves on (the API's `--socket`, the egress proxy's
//! `--proxy-socket`): the folder created, a socket left by a dead process replaced and a
//! live one kept, mode and group set. Boundary: who may connect is `auth`'s; what is served
//! is the servers' own.

use crate::error::{Class, Classify};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create the socket's directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("{} is in use by a running server; stop it or choose another --socket", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and cannot be checked for a running server: {source}; remove it or choose another --socket", path.display())]
    Probe { path: PathBuf, source: std::io::Error },
    #[error("{} exists and is not a socket; remove it or choose another --socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot bind {}: {source}", path.display())]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("cannot set mode {mode:o} or group on {}: {source}", path.display())]
    Permissions { path: PathBuf, mode: u32, source: std::io::Error },
}

impl Classify for BindError {
    fn class(&self) -> Class {
        Class::CantCreate
    }
}

/// Binds `path`, creating its directory. A socket file left by a process that died is
/// replaced; one that still answers is not.
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Dir { dir: dir.to_path_buf(), source })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket { path: path.to_path_buf() });
        }
        // Only a refused connection proves nobody listens: any other failure (no
        // permission, say) may hide a live server, whose socket must stay.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: path.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(source) => return Err(BindError::Probe { path: path.to_path_buf(), source }),
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind { path: path.to_path_buf(), source })?;
    let perms = |source| BindError::Permissions { path: path.to_path_buf(), mode, source };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(perms)?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| perms(e.into()))?;
    }
    Ok(listener)
}
