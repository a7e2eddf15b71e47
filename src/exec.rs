//! Exec mode: replace connd with the workload, keeping the PID. The workload's
//! environment is connd's own, less its `CONND_*` settings, with the resolved variables
//! on top. The command is searched in the workload's `PATH` by hand, so that "not found"
//! (127) and "not executable" (126) are told apart before `execve`, and what the kernel
//! would refuse (a variable over MAX_ARG_STRLEN, all of them over ARG_MAX, a NUL) is
//! found before it too (78). When `execve` fails anyway, the cause is told in words: a
//! missing `#!` interpreter, CRLF line endings, a missing dynamic loader (docs/commands.md).

use crate::error::{Class, Classify};
use crate::secret::Secret;
use nix::errno::Errno;
use nix::unistd::{access, AccessFlags};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// connd's own settings carry this prefix and never reach the workload.
pub const SETTINGS_PREFIX: &[u8] = b"CONND_";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A PATH search, for a name without `/`, found nothing.
    #[error("cannot run {command:?}: not found in PATH ({path})")]
    NotFound { command: String, path: String },
    /// A path (a name with `/`) names nothing.
    #[error("cannot run {command:?}: {path} does not exist")]
    Missing { command: String, path: String },
    #[error("cannot run {command:?}: {cause}")]
    NotExecutable { command: String, cause: String },
    #[error("no command given: write it after `--`, e.g. `connd exec -- /app/server`")]
    NoCommand,
    /// One `NAME=value` over MAX_ARG_STRLEN: execve would fail with E2BIG.
    #[error(
        "variable {name} is {size} bytes as NAME=value, over the kernel's limit of {limit} bytes for one \
         variable (MAX_ARG_STRLEN); keep a value this large in a file the workload reads"
    )]
    VariableTooLong { name: String, size: usize, limit: usize },
    /// The environment and arguments together over ARG_MAX: execve would fail with E2BIG.
    #[error(
        "the workload's environment and arguments take {size} bytes, over the kernel's limit of {limit} \
         (ARG_MAX, a quarter of the stack size limit `ulimit -s`); the largest variable is {largest}: keep \
         large values in files the workload reads, or raise the stack limit"
    )]
    TooLarge { size: usize, limit: usize, largest: String },
    #[error("variable {name} contains a NUL byte, which no environment can hold")]
    Nul { name: String },
}

/// 127 for a command that does not exist, 126 for one that cannot run, 78 (config) for
/// variables the kernel would refuse.
impl Classify for ExecError {
    fn class(&self) -> Class {
        match self {
            ExecError::NotFound { .. } | ExecError::Missing { .. } => Class::CommandNotFound,
            ExecError::NotExecutable { .. } | ExecError::NoCommand => Class::NotExecutable,
            ExecError::VariableTooLong { .. } | ExecError::TooLarge { .. } | ExecError::Nul { .. } => Class::Config,
        }
    }
}

/// Linux's MAX_ARG_STRLEN (32 pages): the most bytes one argument or one `NAME=value`,
/// its terminating NUL included, may take in execve(2).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The kernel's cap on ARG_MAX whatever the stack limit: 3/4 of the default 8 MiB stack
/// (fs/exec.c).
const ARG_MAX_CAP: usize = 6 * 1024 * 1024;

/// What execve(2) takes for arguments plus environment, in bytes (strings with their
/// NULs, plus one pointer each): a quarter of the stack limit (`ulimit -s`), at least
/// 128 KiB and at most 6 MiB, as fs/exec.c counts it. Read from the limit itself, not
/// from sysconf(ARG_MAX): musl's answers a fixed 128 KiB, which would refuse in the
/// static build an environment the kernel takes.
pub fn arg_max() -> usize {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let stack = match getrlimit(Resource::RLIMIT_STACK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => ARG_MAX_CAP,
        Ok((soft, _)) => usize::try_from(soft / 4).unwrap_or(ARG_MAX_CAP),
        Err(_) => MAX_ARG_STRLEN,
    };
    stack.clamp(MAX_ARG_STRLEN, ARG_MAX_CAP)
}

/// Finds what execve(2) would refuse with E2BIG, or cannot even be passed (a NUL), in
/// `vars` (name, value) and, for the total, `others` (the rest of the environment as
/// `NAME=value`, and the arguments): docs/commands.md. `exec` and `run` check the workload's
/// whole environment and argv; `check` checks the variables it can read locally.
pub fn check_limits<'a>(
    vars: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    others: impl Iterator<Item = usize>,
) -> Result<(), ExecError> {
    let pointer = std::mem::size_of::<usize>();
    let shown = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
    let mut total = 0;
    // The first of the largest; its name is made into text only for the message.
    let mut largest: Option<(usize, &[u8])> = None;
    for (name, value) in vars {
        if value.contains(&0) {
            return Err(ExecError::Nul { name: shown(name) });
        }
        let size = name.len() + 1 + value.len();
        if size + 1 > MAX_ARG_STRLEN {
            return Err(ExecError::VariableTooLong { name: shown(name), size, limit: MAX_ARG_STRLEN - 1 });
        }
        total += size + 1 + pointer;
        if largest.map_or(true, |(most, _)| size > most) {
            largest = Some((size, name));
        }
    }
    total += others.map(|len| len + 1 + pointer).sum::<usize>();
    let limit = arg_max();
    if total > limit {
        let largest =
            largest.map_or_else(|| "none".to_owned(), |(size, name)| format!("{} ({size} bytes)", shown(name)));
        return Err(ExecError::TooLarge { size: total, limit, largest });
    }
    Ok(())
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
            Err(ExecError::Missing { command: name.to_owned(), path: path.display().to_string() })
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

/// Why starting `path`, which exists, failed with `errno`, in words: a missing `#!`
/// interpreter (a trailing carriage return from CRLF line endings called out), a
/// program whose dynamic loader is missing, a file in a format the kernel cannot run.
/// ENOENT for a file that exists means its interpreter does not (execve(2)).
pub fn start_failure(command: &OsStr, path: &Path, errno: Errno) -> ExecError {
    let command = command.to_string_lossy().into_owned();
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(4096).read_to_end(&mut head);
    }
    let shown = path.display();
    let cause = match errno {
        Errno::ENOENT | Errno::ENOEXEC if head.starts_with(b"#!") => interpreter_failure(&head, errno),
        Errno::ENOENT if head.starts_with(b"\x7fELF") => {
            let loader = elf_interpreter(&head).map_or_else(String::new, |l| format!(" {l}"));
            format!(
                "{shown} is a program whose dynamic loader{loader} does not exist here: it was built for another \
                 C library (glibc or musl) or another architecture"
            )
        }
        Errno::ENOENT => format!("{shown} exists but cannot be started: its interpreter does not exist"),
        Errno::ENOEXEC if head.starts_with(b"\x7fELF") => {
            format!("{shown} is a program for another architecture or system")
        }
        Errno::ENOEXEC => format!(
            "{shown} is in a format the kernel cannot run: neither a program nor a script with a #! line \
             (a shell script needs `#!/bin/sh` as its first line)"
        ),
        Errno::E2BIG => "the arguments and environment are too large for the kernel (E2BIG)".to_owned(),
        e => format!("{shown}: {}", e.desc()),
    };
    ExecError::NotExecutable { command, cause }
}

/// The cause for a script whose `#!` line's interpreter cannot be started.
fn interpreter_failure(head: &[u8], errno: Errno) -> String {
    let line = head[2..].split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let interpreter = line.trim_start_matches([' ', '\t']).split([' ', '\t']).next().unwrap_or_default();
    if let Some(bare) = interpreter.strip_suffix('\r') {
        return format!(
            "the interpreter {interpreter:?} on its #! line does not exist: the line ends in a carriage return, so \
             the file probably has CRLF (Windows) line endings; convert it to LF (`dos2unix`, or `sed -i \
             's/\\r$//'`) so that the interpreter is {bare}"
        );
    }
    if interpreter.is_empty() {
        return "its #! line names no interpreter".to_owned();
    }
    match (errno, Path::new(interpreter).exists()) {
        (Errno::ENOENT, false) => format!("the interpreter {interpreter} on its #! line does not exist"),
        (Errno::ENOENT, true) => format!(
            "the interpreter {interpreter} on its #! line cannot be started: its own interpreter or dynamic \
             loader does not exist"
        ),
        _ => format!("the interpreter {interpreter} on its #! line is not a program the kernel can run"),
    }
}

/// PT_INTERP of a 64-bit little-endian ELF file, from its first bytes: the dynamic
/// loader it asks for (`/lib/ld-musl-x86_64.so.1`). `None` for anything else.
fn elf_interpreter(head: &[u8]) -> Option<String> {
    // ELFCLASS64, ELFDATA2LSB.
    if head.get(4) != Some(&2) || head.get(5) != Some(&1) {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?) as usize);
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| usize::try_from(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?)).ok();
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    (0..phnum).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        // PT_INTERP: p_offset at +8, p_filesz at +32.
        if u32_at(ph)? != 3 {
            return None;
        }
        let (offset, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
        let name = head.get(offset..offset.checked_add(size)?)?;
        Some(String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name)).into_owned())
    })
}

/// The error for a failed `std::process::Command::spawn` of `path` (`run`'s spawn), in
/// the same words as `exec`'s.
pub fn spawn_failure(command: &OsStr, path: &Path, err: &std::io::Error) -> ExecError {
    match err.raw_os_error() {
        Some(code) => start_failure(command, path, Errno::from_raw(code)),
        None => ExecError::NotExecutable {
            command: command.to_string_lossy().into_owned(),
            cause: format!("{}: {err}", path.display()),
        },
    }
}

fn cstring(bytes: Vec<u8>) -> Result<CString, ExecError> {
    // argv and the inherited environment come from the OS, which has no NUL in them;
    // values are checked in `check_limits`.
    CString::new(bytes).map_err(|e| {
        let bytes = e.into_vec();
        let name = bytes.split(|&b| b == b'=').next().unwrap_or_default();
        ExecError::Nul { name: String::from_utf8_lossy(name).into_owned() }
    })
}

/// Checks `env` and `argv` against the kernel's limits, as [`check_limits`].
pub fn check_workload(argv: &[OsString], env: &[(OsString, OsString)]) -> Result<(), ExecError> {
    let vars = env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
    check_limits(vars, argv.iter().map(|a| a.len()))
}

/// Replaces this process with `argv[0]`. Returns only on failure.
pub fn exec(argv: &[OsString], env: Vec<(OsString, OsString)>) -> ExecError {
    let Some(command) = argv.first() else { return ExecError::NoCommand };
    let path = match find_command(command, &env) {
        Ok(path) => path,
        Err(e) => return e,
    };
    if let Err(e) = check_workload(argv, &env) {
        return e;
    }
    let prepared = (|| {
        let c_path = cstring(path.clone().into_os_string().into_vec())?;
        let c_argv = argv.iter().map(|a| cstring(a.as_bytes().to_vec())).collect::<Result<Vec<_>, _>>()?;
        let c_env = env
            .into_iter()
            .map(|(k, v)| {
                // Sized for `NAME=value` and the NUL `CString` adds: written once, never grown.
                let mut kv = Vec::with_capacity(k.len() + v.len() + 2);
                kv.extend_from_slice(k.as_bytes());
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(kv)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, ExecError>((c_path, c_argv, c_env))
    })();
    let (c_path, c_argv, c_env) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return e,
    };
    match nix::unistd::execve(&c_path, &c_argv, &c_env) {
        Ok(never) => match never {},
        Err(errno) => start_failure(command, &path, errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_max_is_a_quarter_of_the_stack_limit_within_the_kernels_bounds() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_STACK).unwrap();
        let mut seen = Vec::new();
        for limit in [16u64 << 20, 8 << 20, 256 << 10, 64 << 30] {
            if limit > hard {
                continue;
            }
            setrlimit(Resource::RLIMIT_STACK, limit, hard).unwrap();
            seen.push((limit, arg_max()));
        }
        setrlimit(Resource::RLIMIT_STACK, soft, hard).unwrap();
        for (limit, got) in seen {
            let want = match limit {
                l if l == 16 << 20 => 4 << 20,
                l if l == 8 << 20 => 2 << 20,
                l if l == 256 << 10 => MAX_ARG_STRLEN,
                _ => ARG_MAX_CAP,
            };
            assert_eq!(got, want, "stack limit {limit}");
        }
    }

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
