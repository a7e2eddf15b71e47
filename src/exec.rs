//! Exec mode: replace connd with the workload, keeping the PID. The workload's
//! environment is connd's own, less its `CONND_*` settings, with the resolved variables
//! on top. The command is searched in the workload's `PATH` by hand, so that "not found"
//! (127) and "not executable" (126) are told apart before `execve`.

use crate::error::{Class, Classify};
use crate::secret::Secret;
use nix::unistd::{access, AccessFlags};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// connd's own settings carry this prefix and never reach the workload.
pub const SETTINGS_PREFIX: &[u8] = b"CONND_";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {command:?}: not found in PATH ({path})")]
    NotFound { command: String, path: String },
    #[error("cannot run {command:?}: {cause}")]
    NotExecutable { command: String, cause: String },
    #[error("no command given: write it after `--`, e.g. `connd exec -- /app/server`")]
    NoCommand,
}

/// 127 for a command that does not exist, 126 for one that cannot run.
impl Classify for ExecError {
    fn class(&self) -> Class {
        match self {
            ExecError::NotFound { .. } => Class::CommandNotFound,
            ExecError::NotExecutable { .. } | ExecError::NoCommand => Class::NotExecutable,
        }
    }
}

/// The workload's environment: `inherited` minus `CONND_*`, with `vars` overriding.
pub fn child_env(
    inherited: impl Iterator<Item = (OsString, OsString)>,
    vars: &BTreeMap<String, Secret>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = inherited
        .filter(|(k, _)| !k.as_bytes().starts_with(SETTINGS_PREFIX) && !vars.contains_key(&*k.to_string_lossy()))
        .collect();
    env.extend(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v.expose()))));
    env
}

/// Finds `command` as `execvp` would, in the `PATH` the workload will have.
pub fn find_command(command: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf, ExecError> {
    let name = command.to_string_lossy().into_owned();
    if command.is_empty() {
        return Err(ExecError::NotFound { command: name, path: String::new() });
    }
    if command.as_bytes().contains(&b'/') {
        let path = PathBuf::from(command);
        return check_executable(&path, &name).map(|()| path);
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = None;
    for dir in std::env::split_paths(&path_var) {
        let candidate = if dir.as_os_str().is_empty() { PathBuf::from(command) } else { dir.join(command) };
        match check_executable(&candidate, &name) {
            Ok(()) => return Ok(candidate),
            Err(e @ ExecError::NotExecutable { .. }) => {
                denied.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or(ExecError::NotFound { command: name, path: path_var.to_string_lossy().into_owned() }))
}

fn check_executable(path: &Path, name: &str) -> Result<(), ExecError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ExecError::NotFound { command: name.to_owned(), path: path.display().to_string() })
        }
        Err(e) => Err(ExecError::NotExecutable { command: name.to_owned(), cause: e.to_string() }),
        Ok(meta) if meta.is_dir() => Err(ExecError::NotExecutable {
            command: name.to_owned(),
            cause: format!("{} is a directory", path.display()),
        }),
        Ok(_) => access(path, AccessFlags::X_OK).map_err(|e| ExecError::NotExecutable {
            command: name.to_owned(),
            cause: format!("{} is not executable ({})", path.display(), e.desc()),
        }),
    }
}

fn cstring(bytes: Vec<u8>) -> CString {
    // Values are checked for NUL when resolved and argv comes from the OS, which has none.
    CString::new(bytes).unwrap_or_default()
}

/// Replaces this process with `argv[0]`. Returns only on failure.
pub fn exec(argv: &[OsString], env: Vec<(OsString, OsString)>) -> ExecError {
    let Some(command) = argv.first() else { return ExecError::NoCommand };
    let path = match find_command(command, &env) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let c_path = cstring(path.clone().into_os_string().into_vec());
    let c_argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes().to_vec())).collect();
    let c_env: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(kv)
        })
        .collect();
    let err = nix::unistd::execve(&c_path, &c_argv, &c_env).unwrap_err();
    let name = command.to_string_lossy().into_owned();
    match err {
        nix::errno::Errno::ENOENT => ExecError::NotFound { command: name, path: path.display().to_string() },
        e => ExecError::NotExecutable { command: name, cause: format!("{}: {}", path.display(), e.desc()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_removed_and_variables_override() {
        let inherited = vec![
            (OsString::from("CONND_CONFIG_DIR"), OsString::from("/x")),
            (OsString::from("HOME"), OsString::from("/root")),
            (OsString::from("A"), OsString::from("old")),
        ];
        let vars = BTreeMap::from([("A".to_owned(), Secret::new("new"))]);
        let env = child_env(inherited.into_iter(), &vars);
        assert_eq!(env, vec![("HOME".into(), "/root".into()), ("A".into(), "new".into())]);
    }

    #[test]
    fn path_search_tells_missing_from_not_executable() {
        let env = vec![(OsString::from("PATH"), OsString::from("/nonexistent:/bin"))];
        assert!(find_command(OsStr::new("sh"), &env).is_ok());
        assert!(matches!(find_command(OsStr::new("no-such-cmd-xyz"), &env), Err(ExecError::NotFound { .. })));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(matches!(find_command(plain.as_os_str(), &env), Err(ExecError::NotExecutable { .. })));
        assert!(matches!(find_command(dir.path().as_os_str(), &env), Err(ExecError::NotExecutable { .. })));
    }
}
