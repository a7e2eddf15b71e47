//! `exec`, `run` and `check` on what the kernel would refuse or cannot start (docs/commands.md):
//! a variable over MAX_ARG_STRLEN or an environment over ARG_MAX found before `execve`
//! (78, naming the variable and the limit); a script whose `#!` interpreter is missing or
//! ends in a carriage return, a program whose dynamic loader is missing, a file in no
//! known format (126); "not found in PATH" only after a PATH search (127).

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
const REF: &str = "service:/HRProject/users/v1/ad088/PUBLIC";

/// A directory whose `hr-service` has `count` parameters, each read from a file of
/// `size` bytes: `CHOREO_HR_SERVICE_KEY0`...
fn big_values(count: usize, size: usize) -> Fixture {
    let params: Vec<(String, String)> =
        (0..count).map(|i| (format!("Key{i}"), format!("{{ file: key{i} }}"))).collect();
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut f = Fixture::with(&component_yaml(&[("hr-service", REF)]), &connection(ID, "hr-service", &params));
    for i in 0..count {
        f = f.file(&format!("key{i}"), &"x".repeat(size));
    }
    f
}

#[test]
fn a_variable_over_max_arg_strlen_is_refused_before_execve_and_by_check() {
    let f = big_values(1, 200_000);
    let name = "CHOREO_HR_SERVICE_KEY0";
    let size = (name.len() + 1 + 200_000).to_string();
    for (what, out) in [
        ("check", f.run("check", &[])),
        ("exec", f.run("exec", &["--", "/bin/true"])),
        ("run", f.run("run", &["--", "/bin/true"])),
    ] {
        assert_eq!(out.code, 78, "{what}: {out:?}");
        assert_contains(&out.stderr, &[&format!("variable {name} is {size} bytes"), "MAX_ARG_STRLEN", "131071"]);
        assert!(!out.stderr.contains("Argument list too long"), "{what}: {out:?}");
    }
    // Just under the limit is fine: 131071 bytes with the NUL makes 131072.
    let fits = big_values(1, 131_071 - name.len() - 1);
    let out = fits.run("exec", &["--", "/bin/true"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn an_environment_over_arg_max_is_refused_before_execve() {
    // A 1 MiB stack limit makes ARG_MAX 256 KiB; three 100 kB variables exceed it.
    let f = big_values(3, 100_000);
    let out: Run = std::process::Command::new("sh")
        .args(["-c", "ulimit -s 1024 && exec \"$0\" exec --config-dir \"$1\" -- /bin/true", connd_bin()])
        .arg(f.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 78, "{out:?}");
    assert_contains(
        &out.stderr,
        &["environment and arguments take", "over the kernel's limit of 262144 (ARG_MAX", "CHOREO_HR_SERVICE_KEY"],
    );
    // `check` counts only the variables (no stack limit is known for the workload): fine.
    assert_eq!(f.run("check", &[]).code, 0);
}

#[test]
fn a_nul_byte_in_a_literal_value_is_refused_with_its_name() {
    // Once passed to the workload as an empty environment entry, silently.
    let mut f = Fixture::new();
    for entry in std::fs::read_dir(example()).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            f = f.file(&name, &text.replace("      value: info", "      value: \"in\\0fo\""));
        }
    }
    let secrets = Path::new(&example()).join("secrets");
    std::fs::create_dir_all(f.join("secrets")).unwrap();
    for entry in std::fs::read_dir(secrets).unwrap().flatten() {
        std::fs::copy(entry.path(), f.join("secrets").join(entry.file_name())).unwrap();
    }
    for mode in ["check", "exec", "run"] {
        let args: &[&str] = if mode == "check" { &[] } else { &["--", "true"] };
        let out = f.run(mode, args);
        assert_eq!(out.code, 78, "{mode}: {out:?}");
        assert_contains(&out.stderr, &["variable LOG_LEVEL contains a NUL byte"]);
    }
}

/// An executable file in a temporary folder, with `content`.
fn script(dir: &Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn example() -> String {
    format!("{}/config/example", env!("CARGO_MANIFEST_DIR"))
}

/// `connd MODE --config-dir <example> -- ARGV`, in `cwd`.
fn start(mode: &str, cwd: &Path, argv: &[&str]) -> Run {
    connd().current_dir(cwd).args([mode, "--config-dir", &example(), "--"]).args(argv).output().unwrap().into()
}

#[test]
fn a_script_with_crlf_line_endings_names_its_interpreter_and_the_carriage_return() {
    let tmp = tempfile::tempdir().unwrap();
    let abs = script(tmp.path(), "entrypoint.sh", b"#!/bin/sh\r\necho hello\r\n");
    for mode in ["exec", "run"] {
        for command in ["./entrypoint.sh", abs.as_str()] {
            let out = start(mode, tmp.path(), &[command]);
            assert_eq!(out.code, 126, "{mode} {command}: {out:?}");
            assert_contains(
                &out.stderr,
                &[
                    &format!("cannot run {command:?}"),
                    "the interpreter \"/bin/sh\\r\" on its #! line does not exist",
                    "CRLF (Windows) line endings",
                ],
            );
            assert!(!out.stderr.contains("not found in PATH"), "{out:?}");
        }
    }
}

#[test]
fn a_script_whose_interpreter_is_missing_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    script(tmp.path(), "tool", b"#!/opt/no-such/python4 -u\nprint(1)\n");
    for mode in ["exec", "run"] {
        let out = start(mode, tmp.path(), &["./tool"]);
        assert_eq!(out.code, 126, "{mode}: {out:?}");
        assert_contains(&out.stderr, &["the interpreter /opt/no-such/python4 on its #! line does not exist"]);
    }
}

#[test]
fn a_file_in_no_known_format_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    script(tmp.path(), "notes", b"echo this has no #! line\n");
    for mode in ["exec", "run"] {
        let out = start(mode, tmp.path(), &["./notes"]);
        assert_eq!(out.code, 126, "{mode}: {out:?}");
        assert_contains(&out.stderr, &["is in a format the kernel cannot run", "#!/bin/sh"]);
    }
}

#[test]
fn a_program_whose_dynamic_loader_is_missing_names_the_loader() {
    // /bin/true with its dynamic loader's name (PT_INTERP, near the start) changed in
    // its last character, to one that does not exist.
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read("/bin/true").unwrap();
    let head = &bytes[..bytes.len().min(4096)];
    let from = head.windows(4).position(|w| w == b"/lib").expect("/bin/true names its loader");
    let end = from + head[from..].iter().position(|&b| b == 0).expect("a NUL-terminated name");
    bytes[end - 1] = b'X';
    let loader = String::from_utf8_lossy(&bytes[from..end]).into_owned();
    assert!(!Path::new(&loader).exists(), "{loader} exists");
    script(tmp.path(), "prog", &bytes);
    let out = start("exec", tmp.path(), &["./prog"]);
    assert_eq!(out.code, 126, "{out:?}");
    assert_contains(&out.stderr, &[&format!("dynamic loader {loader} does not exist"), "glibc or musl"]);
}

#[test]
fn a_missing_path_is_127_without_mention_of_path_search() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["exec", "run"] {
        let out = start(mode, tmp.path(), &["./no-such-entrypoint"]);
        assert_eq!(out.code, 127, "{mode}: {out:?}");
        assert_contains(&out.stderr, &["cannot run \"./no-such-entrypoint\": ./no-such-entrypoint does not exist"]);
        assert!(!out.stderr.contains("PATH"), "{out:?}");
        // A bare name is searched in PATH, and said so.
        let out = start(mode, tmp.path(), &["no-such-command-xyz"]);
        assert_eq!(out.code, 127, "{mode}: {out:?}");
        assert_contains(&out.stderr, &["cannot run \"no-such-command-xyz\": not found in PATH"]);
    }
}
