//! The counters behind `/metrics`: plain atomics that any part of connd bumps (the
//! reloader, the API, and the sources for control-plane and token calls), rendered by
//! hand in the Prometheus text format. No labels beyond fixed sets, so no locking and
//! no unbounded growth.
//!
//! Why not `prometheus-client`: its only encoder writes OpenMetrics 1.0, where a counter's
//! `# HELP`/`# TYPE` name drops `_total`, so `promtool check metrics` (the text format this
//! endpoint serves as `text/plain; version=0.0.4`) reports every counter as having no help
//! text; floats and bucket bounds come out as `-1.0` and `le="5.0"`; and its histogram takes
//! a mutex per observation and a `Family` a read lock and a hash per increment, where these
//! are indexed atomics.

use crate::error::Class;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// How one reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// A new snapshot was published: some answer changed.
    Changed,
    /// Resolved fine, nothing changed.
    Unchanged,
    /// Failed; the last good values stay.
    Error,
}

/// How one call to the control plane or a token endpoint ended. Counted per HTTP
/// attempt, so retries show; the label is the only thing recorded, never a URL or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Ok,
    /// 304: the control plane's version is the one connd has.
    NotModified,
    /// Refused for good: 401/403, or `invalid_client` / `unauthorized_client`.
    Refused,
    /// 404 from the control plane: no such connection.
    NotFound,
    /// Another OAuth error answer (`invalid_scope`, ...): permanent, but not a refusal.
    Rejected,
    /// An answer connd cannot use (not the expected JSON, too large, unexpected status,
    /// untrusted certificate).
    BadAnswer,
    /// Failed, may succeed later (cannot connect, timeouts, 429, 5xx).
    Error,
}

impl Call {
    /// The result of a call that failed with `class`; a protocol's own finer results
    /// (`NotFound`, `Rejected`) are chosen by its client before this.
    pub fn failed(class: Class) -> Call {
        match class {
            Class::Unavailable => Call::Error,
            Class::Refused => Call::Refused,
            _ => Call::BadAnswer,
        }
    }
}

/// Every result with its label, in the order `/metrics` lists them.
const CALLS: [(Call, &str); 7] = [
    (Call::Ok, "ok"),
    (Call::NotModified, "not_modified"),
    (Call::Refused, "refused"),
    (Call::NotFound, "not_found"),
    (Call::Rejected, "rejected"),
    (Call::BadAnswer, "bad_answer"),
    (Call::Error, "error"),
];
/// The results a control-plane call can have, and those a token call can have.
const CONTROL_PLANE_CALLS: [Call; 6] =
    [Call::Ok, Call::NotModified, Call::Refused, Call::NotFound, Call::BadAnswer, Call::Error];
const TOKEN_CALLS: [Call; 5] = [Call::Ok, Call::Refused, Call::Rejected, Call::BadAnswer, Call::Error];

/// How one write of a rendered file (docs/files.md) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileWrite {
    /// New content was written.
    Written,
    /// The file was already right: not touched.
    Unchanged,
    /// It could not be rendered or written; the last good file stays.
    Error,
}

const FILE_WRITES: [(FileWrite, &str); 3] =
    [(FileWrite::Written, "written"), (FileWrite::Unchanged, "unchanged"), (FileWrite::Error, "error")];

/// The API's routes, as `/metrics` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Env,
    Connections,
    Connection,
    Token,
    Healthz,
    Readyz,
    Metrics,
    Other,
}

const ROUTES: [(Route, &str); 8] = [
    (Route::Env, "env"),
    (Route::Connections, "connections"),
    (Route::Connection, "connection"),
    (Route::Token, "token"),
    (Route::Healthz, "healthz"),
    (Route::Readyz, "readyz"),
    (Route::Metrics, "metrics"),
    (Route::Other, "other"),
];

/// Status codes the API answers with; any other is counted under the last slot.
const CODES: [u16; 12] = [200, 400, 403, 404, 405, 409, 414, 431, 500, 502, 503, 0];

#[derive(Debug, Default)]
pub struct Metrics {
    reloads: [AtomicU64; 3],
    control_plane: [AtomicU64; CALLS.len()],
    token: [AtomicU64; CALLS.len()],
    requests: [[AtomicU64; CODES.len()]; ROUTES.len()],
    /// Unix milliseconds of the last successful resolution; 0 before the first.
    last_success_ms: AtomicU64,
    /// Unix milliseconds since which resolution has been failing; 0 while it succeeds.
    error_since_ms: AtomicU64,
    /// Blocking queries waiting for a change right now.
    parked: AtomicU64,
    /// Renders of files, by [`FILE_WRITES`] result.
    file_writes: [AtomicU64; 3],
    /// Files whose last render or write failed.
    files_failing: AtomicU64,
    /// The egress proxy's requests, per connection.
    proxy: ProxyMetrics,
    /// Writes of the outage cache (docs/cache.md): written, failed.
    cache_writes: [AtomicU64; 2],
    /// 1 when `--cache-dir` could not be written and connd runs without the cache.
    cache_disabled: AtomicU64,
    /// Unix milliseconds when the cached values now served were written; 0 while the
    /// values are fresh from the control plane.
    cache_stale_ms: AtomicU64,
}

/// Upper bounds (seconds) of the proxy's latency histogram buckets; `+Inf` follows.
const PROXY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// One connection's proxied requests. Labelled by connection name: the names are the
/// plan's (validated, bounded by the directory), and requests for no known connection
/// count under the empty name.
#[derive(Debug, Default)]
struct ProxyCounters {
    /// By status class, 1xx to 5xx.
    classes: [AtomicU64; 5],
    /// Time to the response head, cumulative per [`PROXY_BUCKETS`] bound, then `+Inf`.
    buckets: [AtomicU64; PROXY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    credential_failures: AtomicU64,
}

#[derive(Debug, Default)]
struct ProxyMetrics {
    by_connection: parking_lot::RwLock<std::collections::BTreeMap<String, std::sync::Arc<ProxyCounters>>>,
    /// The connections' own ports the plan asks for: port → (connection, listening now).
    ports: parking_lot::RwLock<std::collections::BTreeMap<u16, (String, bool)>>,
    /// Ports a plan asked for that could not be listened on.
    port_errors: AtomicU64,
}

/// One connection's proxy counters, looked up once and then counted into with atomics
/// alone (the proxy keeps one per connection of a plan, found at the connection's
/// first answer under it, so that the list `/metrics` shows is the same as when each
/// answer looked its counters up by name).
#[derive(Debug, Clone)]
pub struct ProxyCounted(std::sync::Arc<ProxyCounters>);

impl ProxyCounted {
    /// One request answered with `status` after `elapsed` (to the response head).
    pub fn proxied(&self, status: u16, elapsed: std::time::Duration) {
        let c = &self.0;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        c.classes[class].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = PROXY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(PROXY_BUCKETS.len());
        c.buckets[bucket].fetch_add(1, Relaxed);
        c.sum_micros.fetch_add(elapsed.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    }
}

impl ProxyMetrics {
    fn counters(&self, connection: &str) -> std::sync::Arc<ProxyCounters> {
        if let Some(c) = self.by_connection.read().get(connection) {
            return c.clone();
        }
        let mut map = self.by_connection.write();
        map.entry(connection.to_owned()).or_default().clone()
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts one parked blocking query while it lives.
pub struct Parked<'a>(&'a AtomicU64);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn call_slot(c: Call) -> usize {
    CALLS.iter().position(|(x, _)| *x == c).expect("every result is listed")
}

fn render_calls(out: &mut String, name: &str, counters: &[AtomicU64], results: &[Call]) {
    for &result in results {
        let slot = call_slot(result);
        let _ = writeln!(out, "{name}{{result=\"{}\"}} {}", CALLS[slot].1, counters[slot].load(Relaxed));
    }
}

impl Metrics {
    pub fn reload(&self, result: Reload) {
        let slot = match result {
            Reload::Changed => 0,
            Reload::Unchanged => 1,
            Reload::Error => 2,
        };
        self.reloads[slot].fetch_add(1, Relaxed);
        match result {
            Reload::Error => {
                let _ = self.error_since_ms.compare_exchange(0, now_ms(), Relaxed, Relaxed);
            }
            _ => {
                self.last_success_ms.store(now_ms(), Relaxed);
                self.error_since_ms.store(0, Relaxed);
            }
        }
    }

    /// A reload of the files that reused values fetched before a still-failing fetch:
    /// counted by whether answers changed, but neither a success (the values are not
    /// fresh) nor the end of the error.
    pub fn files_reload(&self, changed: bool) {
        self.reloads[usize::from(!changed)].fetch_add(1, Relaxed);
    }

    /// One write of the outage cache, `ok` or failed (the previous file kept).
    pub fn cache_write(&self, ok: bool) {
        self.cache_writes[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// `--cache-dir` cannot be written: connd runs without the cache.
    pub fn cache_disabled(&self) {
        self.cache_disabled.store(1, Relaxed);
    }

    /// The values served are the cache's, written at `written_at` (`Some`), or fresh
    /// from the control plane again (`None`).
    pub fn cache_stale(&self, written_at: Option<SystemTime>) {
        let ms = written_at.map_or(0, |t| t.duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis().max(1) as u64));
        self.cache_stale_ms.store(ms, Relaxed);
    }

    /// A blocking query starts waiting; it is counted until the guard drops.
    pub fn parked(&self) -> Parked<'_> {
        self.parked.fetch_add(1, Relaxed);
        Parked(&self.parked)
    }

    /// One render and write of a file.
    pub fn file_write(&self, result: FileWrite) {
        let slot = FILE_WRITES.iter().position(|(x, _)| *x == result).unwrap_or(2);
        self.file_writes[slot].fetch_add(1, Relaxed);
    }

    /// How many files currently keep their last good content because of an error.
    pub fn files_failing(&self, n: usize) {
        self.files_failing.store(n as u64, Relaxed);
    }

    /// For the control-plane source: one request's outcome.
    pub fn control_plane_call(&self, result: Call) {
        self.control_plane[call_slot(result)].fetch_add(1, Relaxed);
    }

    /// For the OAuth source: one token-endpoint request's outcome.
    pub fn token_call(&self, result: Call) {
        self.token[call_slot(result)].fetch_add(1, Relaxed);
    }

    pub fn request(&self, route: Route, status: u16) {
        let r = ROUTES.iter().position(|(x, _)| *x == route).unwrap_or(ROUTES.len() - 1);
        let c = CODES.iter().position(|x| *x == status).unwrap_or(CODES.len() - 1);
        self.requests[r][c].fetch_add(1, Relaxed);
    }

    /// For the egress proxy: one request to `connection` (empty when it named none
    /// known) answered with `status` after `elapsed` (to the response head).
    pub fn proxied(&self, connection: &str, status: u16, elapsed: std::time::Duration) {
        self.proxy_counted(connection).proxied(status, elapsed);
    }

    /// For the egress proxy: the counters of `connection`'s requests (listed in
    /// `/metrics` from this call on), to count into without a lookup by name.
    pub fn proxy_counted(&self, connection: &str) -> ProxyCounted {
        ProxyCounted(self.proxy.counters(connection))
    }

    /// For the egress proxy: the connections' own ports the plan asks for (port,
    /// connection, whether it listens now).
    pub fn proxy_ports<'a>(&self, wanted: impl Iterator<Item = (u16, &'a str, bool)>) {
        *self.proxy.ports.write() = wanted.map(|(port, c, listening)| (port, (c.to_owned(), listening))).collect();
    }

    /// For the egress proxy: an attempt to listen on a port a plan asks for failed.
    pub fn proxy_port_error(&self) {
        self.proxy.port_errors.fetch_add(1, Relaxed);
    }

    /// For the egress proxy: a request to `connection` found no valid credential.
    pub fn proxy_credential_failure(&self, connection: &str) {
        self.proxy.counters(connection).credential_failures.fetch_add(1, Relaxed);
    }

    fn render_proxy(&self, out: &mut String) {
        let map = self.proxy.by_connection.read();
        let name = "connd_proxy_requests_total";
        header(out, name, "counter", "Egress proxy requests, by connection and status class.");
        for (conn, c) in map.iter() {
            for (i, n) in c.classes.iter().enumerate() {
                let _ =
                    writeln!(out, "{name}{{connection=\"{}\",class=\"{}xx\"}} {}", label(conn), i + 1, n.load(Relaxed));
            }
        }
        let name = "connd_proxy_request_duration_seconds";
        header(out, name, "histogram", "Egress proxy time to the response head, by connection.");
        for (conn, c) in map.iter() {
            let conn = label(conn);
            let mut cumulative = 0;
            for (i, n) in c.buckets.iter().enumerate() {
                cumulative += n.load(Relaxed);
                let le = PROXY_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{connection=\"{conn}\",le=\"{le}\"}} {cumulative}");
            }
            let sum = c.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{connection=\"{conn}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{connection=\"{conn}\"}} {cumulative}");
        }
        let name = "connd_proxy_credential_failures_total";
        header(out, name, "counter", "Egress proxy requests refused for want of a valid credential, by connection.");
        for (conn, c) in map.iter() {
            let _ = writeln!(out, "{name}{{connection=\"{}\"}} {}", label(conn), c.credential_failures.load(Relaxed));
        }
        let name = "connd_proxy_port_listening";
        header(
            out,
            name,
            "gauge",
            "Each connection's own proxy port (proxy.port) the plan asks for: 1 listening, 0 not (retried).",
        );
        for (port, (conn, listening)) in self.proxy.ports.read().iter() {
            let _ = writeln!(out, "{name}{{connection=\"{}\",port=\"{port}\"}} {}", label(conn), u8::from(*listening));
        }
        let name = "connd_proxy_port_errors_total";
        header(out, name, "counter", "Failed attempts to listen on a connection's proxy port (each retry counted).");
        let _ = writeln!(out, "{name} {}", self.proxy.port_errors.load(Relaxed));
    }

    fn render_cache(&self, out: &mut String, age: impl Fn(u64) -> f64) {
        let name = "connd_cache_writes_total";
        header(out, name, "counter", "Writes of the outage cache, by result (a failed one keeps the previous file).");
        for (i, result) in ["written", "failed"].iter().enumerate() {
            let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", self.cache_writes[i].load(Relaxed));
        }
        let name = "connd_cache_disabled";
        header(out, name, "gauge", "1 when --cache-dir cannot be written and connd runs without the cache.");
        let _ = writeln!(out, "{name} {}", self.cache_disabled.load(Relaxed));
        let stale = self.cache_stale_ms.load(Relaxed);
        let name = "connd_cache_stale";
        header(
            out,
            name,
            "gauge",
            "1 while the values served are the outage cache's, not fresh from the control plane.",
        );
        let _ = writeln!(out, "{name} {}", u8::from(stale != 0));
        let name = "connd_cache_stale_age_seconds";
        header(out, name, "gauge", "Age of the cached values served (0 while fresh).");
        let _ = writeln!(out, "{name} {}", age(stale));
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let now = now_ms();
        let reloads = ["changed", "unchanged", "error"];
        header(&mut out, "connd_reloads_total", "counter", "Resolutions of the directory and sources, by result.");
        for (i, result) in reloads.iter().enumerate() {
            let _ = writeln!(out, "connd_reloads_total{{result=\"{result}\"}} {}", self.reloads[i].load(Relaxed));
        }
        let name = "connd_control_plane_requests_total";
        header(&mut out, name, "counter", "Control-plane requests, by result.");
        render_calls(&mut out, name, &self.control_plane, &CONTROL_PLANE_CALLS);
        let name = "connd_token_requests_total";
        header(&mut out, name, "counter", "Token-endpoint requests, by result.");
        render_calls(&mut out, name, &self.token, &TOKEN_CALLS);
        header(&mut out, "connd_api_requests_total", "counter", "Local API requests, by route and status code.");
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for (c, code) in CODES.iter().enumerate() {
                let n = self.requests[r][c].load(Relaxed);
                if n > 0 {
                    let code = if *code == 0 { "other".to_owned() } else { code.to_string() };
                    let _ = writeln!(out, "connd_api_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}");
                }
            }
        }
        header(&mut out, "connd_api_parked_queries", "gauge", "Blocking queries waiting for a change.");
        let _ = writeln!(out, "connd_api_parked_queries {}", self.parked.load(Relaxed));
        let age = |since: u64| if since == 0 { 0.0 } else { now.saturating_sub(since) as f64 / 1000.0 };
        let last = self.last_success_ms.load(Relaxed);
        header(
            &mut out,
            "connd_last_success_age_seconds",
            "gauge",
            "Seconds since the last successful resolution (-1 before the first).",
        );
        let stale = if last == 0 { -1.0 } else { age(last) };
        let _ = writeln!(out, "connd_last_success_age_seconds {stale}");
        header(
            &mut out,
            "connd_error_age_seconds",
            "gauge",
            "Seconds the current resolution error has lasted (0 when resolving fine).",
        );
        let _ = writeln!(out, "connd_error_age_seconds {}", age(self.error_since_ms.load(Relaxed)));
        header(&mut out, "connd_file_renders_total", "counter", "Renders of files, by result.");
        for (i, (_, result)) in FILE_WRITES.iter().enumerate() {
            let _ =
                writeln!(out, "connd_file_renders_total{{result=\"{result}\"}} {}", self.file_writes[i].load(Relaxed));
        }
        header(&mut out, "connd_files_failing", "gauge", "Files keeping their last good content after an error.");
        let _ = writeln!(out, "connd_files_failing {}", self.files_failing.load(Relaxed));
        header(
            &mut out,
            "connd_ready",
            "gauge",
            "1 once the first full resolution succeeded (or started on the cache).",
        );
        let ready = last != 0 || self.cache_stale_ms.load(Relaxed) != 0;
        let _ = writeln!(out, "connd_ready {}", u8::from(ready));
        self.render_cache(&mut out, age);
        let name = "connd_log_write_failures_total";
        header(&mut out, name, "counter", "Log records dropped because stderr could not take them.");
        let _ = writeln!(out, "{name} {}", crate::logging::write_failures());
        self.render_proxy(&mut out);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_staleness_render() {
        let m = Metrics::default();
        assert!(m.render().contains("connd_last_success_age_seconds -1\n"));
        m.reload(Reload::Error);
        m.reload(Reload::Changed);
        m.reload(Reload::Error);
        m.control_plane_call(Call::NotModified);
        m.control_plane_call(Call::NotFound);
        m.token_call(Call::Rejected);
        m.token_call(Call::Ok);
        m.token_call(Call::Ok);
        m.request(Route::Env, 200);
        m.request(Route::Env, 200);
        m.request(Route::Other, 405);
        m.file_write(FileWrite::Written);
        m.file_write(FileWrite::Error);
        m.file_write(FileWrite::Error);
        m.files_failing(1);
        let text = m.render();
        for line in [
            "connd_reloads_total{result=\"error\"} 2",
            "connd_reloads_total{result=\"changed\"} 1",
            "connd_control_plane_requests_total{result=\"not_modified\"} 1",
            "connd_control_plane_requests_total{result=\"not_found\"} 1",
            "connd_control_plane_requests_total{result=\"error\"} 0",
            "connd_token_requests_total{result=\"ok\"} 2",
            "connd_token_requests_total{result=\"rejected\"} 1",
            "connd_api_requests_total{route=\"env\",code=\"200\"} 2",
            "connd_api_requests_total{route=\"other\",code=\"405\"} 1",
            "connd_ready 1",
            "connd_file_renders_total{result=\"written\"} 1",
            "connd_file_renders_total{result=\"unchanged\"} 0",
            "connd_file_renders_total{result=\"error\"} 2",
            "connd_files_failing 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(m.error_since_ms.load(Relaxed) > 0);
        m.proxied("hr-connection", 200, std::time::Duration::from_micros(700));
        // A handle looked up once counts into the same connection's counters.
        let counted = m.proxy_counted("hr-connection");
        counted.proxied(502, std::time::Duration::from_secs(9));
        m.proxy_credential_failure("hr-connection");
        let text = m.render();
        for line in [
            "connd_proxy_requests_total{connection=\"hr-connection\",class=\"2xx\"} 1",
            "connd_proxy_requests_total{connection=\"hr-connection\",class=\"5xx\"} 1",
            "connd_proxy_request_duration_seconds_bucket{connection=\"hr-connection\",le=\"0.0005\"} 0",
            "connd_proxy_request_duration_seconds_bucket{connection=\"hr-connection\",le=\"0.001\"} 1",
            "connd_proxy_request_duration_seconds_bucket{connection=\"hr-connection\",le=\"5\"} 1",
            "connd_proxy_request_duration_seconds_bucket{connection=\"hr-connection\",le=\"+Inf\"} 2",
            "connd_proxy_request_duration_seconds_count{connection=\"hr-connection\"} 2",
            "connd_proxy_credential_failures_total{connection=\"hr-connection\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A result that cannot happen to a family is not listed for it.
        assert!(!text.contains("connd_token_requests_total{result=\"not_modified\"}"), "{text}");
    }

    /// What `promtool check metrics` asks of the text format: every sample belongs to a
    /// family with a `# HELP` and a `# TYPE` line of the family's own name (a counter's
    /// ending in `_total`, a histogram's samples `_bucket`, `_sum`, `_count`).
    #[test]
    fn every_sample_has_the_help_and_type_of_its_own_family() {
        let m = Metrics::default();
        m.proxied("hr-connection", 200, std::time::Duration::from_millis(3));
        m.request(Route::Env, 200);
        let text = m.render();
        let (mut helped, mut typed) = (Vec::new(), std::collections::HashMap::new());
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                typed.insert(name.to_owned(), kind.to_owned());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                let kind = typed.get(family).unwrap_or_else(|| panic!("{line}: no # TYPE {family}\n{text}"));
                assert!(helped.iter().any(|h| h == family), "{line}: no # HELP {family}");
                assert!(kind != "counter" || family.ends_with("_total"), "{line}: a counter not named _total");
                samples += 1;
            }
        }
        assert!(samples > 30 && typed.values().any(|k| k == "histogram"), "{text}");
    }
}
