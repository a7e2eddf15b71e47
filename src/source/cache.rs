//! The last-known-good cache (docs/cache.md): the control plane's parameters and the
//! tokens (with their expiry) of the last full resolution that reached the control
//! plane, on disk under `--cache-dir`, so that a restart during an outage can start.
//!
//! One file per project and component, `connd-<hash>.cache`: a JSON header line (format
//! version, config directory, project, component, when written, key id, nonce), then the
//! payload sealed with AES-256-GCM, the header as associated data, so that neither can be
//! changed unseen. The key and a key id are derived by HKDF-SHA256 from
//! `--cache-key-file`; the key id tells "another key" apart from "altered". Files are
//! written atomically (a temporary file, fsync, rename), mode 0600.
//!
//! Boundary: reading, checking, sealing and writing the file. When to fall back on it
//! (a transient failure at start, never a refusal) is `outbound`'s to say; what covers a
//! plan is [`Entry::covers`].

use crate::error::{Class, Classify};
use crate::metrics::Metrics;
use crate::resolve::Plan;
use crate::secret::Secret;
use base64::Engine as _;
use ring::{aead, digest, hkdf, rand::SecureRandom as _};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroize as _;

/// The file format this connd writes and reads; a file of a later one is ignored.
pub const FORMAT: u32 = 1;

/// The shortest key file accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Where the cache lives and how old it may be (`cli::CacheArgs`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--cache-dir`: created (mode 0700) when missing.
    pub dir: PathBuf,
    /// `--cache-key-file`: at least [`MIN_KEY_BYTES`] bytes, the key derived from them.
    pub key_file: PathBuf,
    /// `--max-stale`: a cache older than this is not started on.
    pub max_stale: Duration,
}

/// The key file cannot be used: a config error (exit 78) that names it.
#[derive(Debug, thiserror::Error)]
#[error("--cache-key-file {}: {cause}", path.display())]
pub struct KeyError {
    path: PathBuf,
    cause: String,
}

impl Classify for KeyError {
    fn class(&self) -> Class {
        Class::Config
    }
}

/// A cached token: its value and when it stops being valid.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub access_token: Secret,
    pub token_type: String,
    pub expires_at: SystemTime,
}

/// What a cache file is bound to: the config directory (as given, made absolute,
/// symlinks kept: a kubelet's `..data` swap must not make it another directory's), the
/// project and the component. Connection ids are the payload's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    dir: String,
    project: String,
    component: String,
}

impl Bound {
    /// What a cache for `plan` is bound to: its directory, project and component.
    pub fn of(plan: &Plan) -> Bound {
        let dir = std::path::absolute(&plan.dir).unwrap_or_else(|_| plan.dir.clone()).display().to_string();
        Bound { dir, project: plan.identity.project.clone(), component: plan.identity.component.clone() }
    }
}

/// What one cache file holds, checked.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the values were last confirmed by the control plane.
    pub written_at: SystemTime,
    /// Control-plane parameters: connection id → key → value.
    pub params: HashMap<String, HashMap<String, Secret>>,
    /// Tokens: connection id → token.
    pub tokens: HashMap<String, CachedToken>,
}

impl Entry {
    /// How old the values are (zero for a clock set back).
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.written_at).unwrap_or_default()
    }

    /// Whether this entry holds every control-plane parameter of `plan` and an unexpired
    /// token for each connection whose token a variable or file uses; if not, what is
    /// missing, in words.
    pub fn covers(&self, plan: &Plan) -> Result<(), String> {
        for p in &plan.connections {
            for key in p.connection.control_plane_keys() {
                if !self.params.get(&p.connection.id).is_some_and(|m| m.contains_key(key)) {
                    return Err(format!("it holds no {key} for connection {:?}", p.name));
                }
            }
        }
        for i in plan.token_vars() {
            let p = &plan.connections[i];
            match self.tokens.get(&p.connection.id) {
                Some(t) if t.expires_at > SystemTime::now() => {}
                Some(_) => return Err(format!("its token for connection {:?} has expired", p.name)),
                None => return Err(format!("it holds no token for connection {:?}", p.name)),
            }
        }
        Ok(())
    }
}

/// The header line: everything the payload is bound to, authenticated with it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Header {
    format: u32,
    dir: String,
    project: String,
    component: String,
    /// Unix seconds.
    written_at: u64,
    /// Base64 of the key id (HKDF of the key file, not the key).
    key_id: String,
    /// Base64 of the 96-bit nonce.
    nonce: String,
}

/// The sealed payload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    params: BTreeMap<String, BTreeMap<String, String>>,
    /// Connection id → (token, its type, expiry in Unix seconds).
    tokens: BTreeMap<String, (String, String, u64)>,
}

/// The cache of one process: its folder and key. Reads and writes log what they could
/// not do and carry on: the cache never stops connd.
pub struct Cache {
    dir: PathBuf,
    key: aead::LessSafeKey,
    key_id: [u8; 8],
    max_stale: Duration,
    metrics: Arc<Metrics>,
}

/// `ring`'s HKDF output length for the key id.
struct KeyIdLen;

impl hkdf::KeyType for KeyIdLen {
    fn len(&self) -> usize {
        8
    }
}

/// The key file's bytes, or why they cannot be a key: a file that is missing, empty or
/// shorter than [`MIN_KEY_BYTES`]. Also what `env`, `exec` and `render` check when their
/// directory needs no fetch, so that a bad `--cache-key-file` is found before the day
/// the cache is needed (docs/cache.md).
pub fn read_key(settings: &Settings) -> Result<Vec<u8>, KeyError> {
    let key_error = |cause: String| KeyError { path: settings.key_file.clone(), cause };
    let make_one = "make one with `head -c 32 /dev/urandom > FILE`";
    let bytes = std::fs::read(&settings.key_file).map_err(|e| key_error(format!("cannot read it: {e}; {make_one}")))?;
    let short = match bytes.len() {
        0 => Some("it is empty".to_owned()),
        n if n < MIN_KEY_BYTES => Some(format!("it holds {n} bytes, fewer than the {MIN_KEY_BYTES} a key needs")),
        _ => None,
    };
    match short {
        Some(cause) => Err(key_error(format!("{cause}; {make_one}"))),
        None => Ok(bytes),
    }
}

impl Cache {
    /// Reads the key file and checks that the folder can be written. A key file that
    /// is missing, empty or shorter than [`MIN_KEY_BYTES`] is an error; a folder that
    /// cannot be written is a warning, counted in `metrics`, and no cache (`None`).
    pub fn open(settings: &Settings, metrics: Arc<Metrics>) -> Result<Option<Cache>, KeyError> {
        let key_error = |cause: String| KeyError { path: settings.key_file.clone(), cause };
        let mut bytes = read_key(settings)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"connd cache").extract(&bytes);
        bytes.zeroize();
        let derive_error = || key_error("cannot derive a key from it".into());
        let key = prk.expand(&[b"connd cache v1 aes-256-gcm"], &aead::AES_256_GCM).map_err(|_| derive_error())?;
        let key = aead::LessSafeKey::new(aead::UnboundKey::from(key));
        let mut key_id = [0u8; 8];
        prk.expand(&[b"connd cache v1 key id"], KeyIdLen)
            .and_then(|okm| okm.fill(&mut key_id))
            .map_err(|_| derive_error())?;
        if let Err(e) = writable(&settings.dir) {
            tracing::warn!(
                dir = %settings.dir.display(),
                error = %e,
                "--cache-dir cannot be written: running without the cache; give connd a writable folder"
            );
            metrics.cache_disabled();
            return Ok(None);
        }
        Ok(Some(Cache { dir: settings.dir.clone(), key, key_id, max_stale: settings.max_stale, metrics }))
    }

    /// The file of `bound`'s project and component.
    fn path(&self, bound: &Bound) -> PathBuf {
        let id = format!("{}\0{}", bound.project, bound.component);
        let hash = digest::digest(&digest::SHA256, id.as_bytes());
        let name: String = hash.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("connd-{name}.cache"))
    }

    /// Writes `entry` for `bound`, replacing the file atomically. A failure (a full disk)
    /// keeps the previous file, and is logged and counted.
    pub fn store(&self, bound: &Bound, entry: &Entry) {
        let path = self.path(bound);
        match self.seal(bound, entry).and_then(|bytes| write_atomically(&path, &bytes)) {
            Ok(()) => {
                self.metrics.cache_write(true);
                tracing::debug!(file = %path.display(), "values cached");
            }
            Err(e) => {
                self.metrics.cache_write(false);
                tracing::warn!(file = %path.display(), error = %e, "cannot write the cache; the previous one is kept");
            }
        }
    }

    fn seal(&self, bound: &Bound, entry: &Entry) -> std::io::Result<Vec<u8>> {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let payload = Payload {
            params: entry
                .params
                .iter()
                .map(|(id, m)| (id.clone(), m.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect()))
                .collect(),
            tokens: entry
                .tokens
                .iter()
                .map(|(id, t)| {
                    (id.clone(), (t.access_token.expose().to_owned(), t.token_type.clone(), unix(t.expires_at)))
                })
                .collect(),
        };
        let mut nonce = [0u8; aead::NONCE_LEN];
        ring::rand::SystemRandom::new().fill(&mut nonce).map_err(|_| std::io::Error::other("no random numbers"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let header = Header {
            format: FORMAT,
            dir: bound.dir.clone(),
            project: bound.project.clone(),
            component: bound.component.clone(),
            written_at: unix(entry.written_at),
            key_id: b64.encode(self.key_id),
            nonce: b64.encode(nonce),
        };
        let mut out = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let mut sealed = serde_json::to_vec(&payload).map_err(std::io::Error::other)?;
        self.key
            .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(&out), &mut sealed)
            .map_err(|_| std::io::Error::other("cannot seal the cache"))?;
        out.push(b'\n');
        out.extend_from_slice(&sealed);
        sealed.zeroize();
        Ok(out)
    }

    /// The entry for `plan`, if there is one fit to start on: written for its config
    /// directory, project and component, with this key, unaltered, of a format this
    /// connd reads, younger than `--max-stale`. Any other is ignored with a warning
    /// saying why.
    pub fn load(&self, plan: &Plan) -> Option<Entry> {
        let bound = Bound::of(plan);
        let path = self.path(&bound);
        match self.open_file(&bound, &path) {
            Ok(entry) => Some(entry),
            Err(why) => {
                tracing::warn!(file = %path.display(), "the cache is not used: {why}");
                None
            }
        }
    }

    fn open_file(&self, bound: &Bound, path: &Path) -> Result<Entry, String> {
        let mut bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("there is none yet".into()),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let altered = "it fails authentication: it was altered or damaged";
        let split = bytes.iter().position(|&b| b == b'\n').ok_or(altered)?;
        let (head, sealed) = bytes.split_at_mut(split);
        let format = serde_json::from_slice::<serde_json::Value>(head).ok().and_then(|v| v["format"].as_u64());
        match format {
            Some(f) if f > u64::from(FORMAT) => {
                return Err(format!("it was written by a newer connd (format {f}; this one reads {FORMAT})"))
            }
            Some(_) | None => {}
        }
        let header: Header = serde_json::from_slice(head).map_err(|_| altered)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        if b64.decode(&header.key_id).ok().as_deref() != Some(&self.key_id[..]) {
            return Err("it was written with another key (--cache-key-file)".into());
        }
        let written_for =
            Bound { dir: header.dir.clone(), project: header.project.clone(), component: header.component.clone() };
        if written_for != *bound {
            return Err(format!(
                "it was written for config directory {} (project {}, component {}), not {} ({}, {})",
                header.dir, header.project, header.component, bound.dir, bound.project, bound.component
            ));
        }
        let nonce: [u8; aead::NONCE_LEN] =
            b64.decode(&header.nonce).ok().and_then(|n| n.try_into().ok()).ok_or(altered)?;
        let nonce = aead::Nonce::assume_unique_for_key(nonce);
        let plain = self.key.open_in_place(nonce, aead::Aad::from(&*head), &mut sealed[1..]).map_err(|_| altered)?;
        let payload: Result<Payload, _> = serde_json::from_slice(plain);
        plain.zeroize();
        let payload = payload.map_err(|_| altered)?;
        bytes.zeroize();
        let entry = Entry {
            written_at: UNIX_EPOCH + Duration::from_secs(header.written_at),
            params: payload
                .params
                .into_iter()
                .map(|(id, m)| (id, m.into_iter().map(|(k, v)| (k, Secret::new(v))).collect()))
                .collect(),
            tokens: payload
                .tokens
                .into_iter()
                .map(|(id, (token, token_type, exp))| {
                    let expires_at = UNIX_EPOCH + Duration::from_secs(exp);
                    (id, CachedToken { access_token: Secret::new(token), token_type, expires_at })
                })
                .collect(),
        };
        if entry.age() > self.max_stale {
            return Err(format!("it is {} old, older than --max-stale {}", words(entry.age()), words(self.max_stale)));
        }
        Ok(entry)
    }
}

/// Creates `dir` (0700) if missing and checks that a file can be made in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let probe = dir.join(format!(".connd-probe-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Writes `bytes` to `path` through a temporary file in the same folder (mode 0600,
/// fsynced), renamed over it; on failure the temporary file is removed and `path` is
/// untouched.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `d` as people read an age: `45s`, `12m30s`, `27h5m`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> Bound {
        Bound { dir: "/etc/connd".into(), project: "p".into(), component: "c".into() }
    }

    fn open(dir: &Path, key: &[u8]) -> (Cache, Arc<Metrics>) {
        std::fs::write(dir.join("key"), key).unwrap();
        let settings =
            Settings { dir: dir.join("cache"), key_file: dir.join("key"), max_stale: Duration::from_secs(60) };
        let metrics = Arc::new(Metrics::default());
        (Cache::open(&settings, metrics.clone()).unwrap().unwrap(), metrics)
    }

    fn entry(value: &str) -> Entry {
        let params = HashMap::from([("id-1".to_owned(), HashMap::from([("Key".to_owned(), Secret::new(value))]))]);
        let token = CachedToken {
            access_token: Secret::new("tok"),
            token_type: "Bearer".into(),
            expires_at: SystemTime::now() + Duration::from_secs(300),
        };
        Entry { written_at: SystemTime::now(), params, tokens: HashMap::from([("id-1".to_owned(), token)]) }
    }

    #[test]
    fn what_is_stored_is_read_back_and_a_failed_write_keeps_the_previous_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, metrics) = open(tmp.path(), &[3u8; 32]);
        cache.store(&bound(), &entry("v1"));
        let read = cache.open_file(&bound(), &cache.path(&bound())).unwrap();
        assert_eq!(read.params["id-1"]["Key"].expose(), "v1");
        assert_eq!(read.tokens["id-1"].access_token.expose(), "tok");
        assert_eq!(read.tokens["id-1"].token_type, "Bearer");
        // A write that fails half-way (here: its temporary file cannot be made, as on a
        // full disk) leaves the previous file whole.
        let tmp_file = cache.path(&bound()).with_extension(format!("tmp.{}", std::process::id()));
        std::fs::create_dir(&tmp_file).unwrap();
        cache.store(&bound(), &entry("v2"));
        let read = cache.open_file(&bound(), &cache.path(&bound())).unwrap();
        assert_eq!(read.params["id-1"]["Key"].expose(), "v1");
        let text = metrics.render();
        assert!(text.contains("connd_cache_writes_total{result=\"written\"} 1"), "{text}");
        assert!(text.contains("connd_cache_writes_total{result=\"failed\"} 1"), "{text}");
    }

    #[test]
    fn another_binding_or_key_is_told_apart_from_an_altered_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = open(tmp.path(), &[3u8; 32]);
        cache.store(&bound(), &entry("v1"));
        let path = cache.path(&bound());
        let other = Bound { component: "c2".into(), ..bound() };
        let why = cache.open_file(&other, &path).unwrap_err();
        assert!(why.contains("written for config directory /etc/connd (project p, component c)"), "{why}");
        let (other_key, _) = open(tmp.path(), &[4u8; 32]);
        assert_eq!(
            other_key.open_file(&bound(), &path).unwrap_err(),
            "it was written with another key (--cache-key-file)"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.open_file(&bound(), &path).unwrap_err().contains("fails authentication"));
    }

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(words(Duration::from_secs(45)), "45s");
        assert_eq!(words(Duration::from_secs(750)), "12m30s");
        assert_eq!(words(Duration::from_secs(25 * 3600 + 300)), "25h5m");
    }
}
