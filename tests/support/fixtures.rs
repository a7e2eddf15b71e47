//! Config directories shared by the reloader, serve and run tests: two connections
//! (`main-db`, `api-x`), a variant whose password is remote, an OAuth descriptor, and the
//! reloader's settings and snapshot waits for them.

use super::{component_yaml, connection, IDENTITY};
use connd::reload::snapshot::Snapshot;
use connd::reload::ReloadConfig;
use connd::resolve::Options;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const DB_ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";
pub const API_ID: &str = "29d2648b-d29c-4452-afdd-1b9311e81412";
/// The id of [`hr_remote`]'s connection.
pub const HR_ID: &str = "19d2648b-d29c-4452-afdd-1b9311e81412";

/// `hr-connection` (id [`HR_ID`]) with a literal `ServiceURL` and a remote `ConsumerKey`.
pub fn hr_remote() -> super::Fixture {
    super::Fixture::with(
        &component_yaml(&[("hr-connection", "service:/HRProject/users/v1/ad088/PUBLIC")]),
        &connection(
            HR_ID,
            "hr-connection",
            &[("ServiceURL", "https://hr.internal/v1"), ("ConsumerKey", "{ remote: true }")],
        ),
    )
}

/// component.yaml, identity and two connections: `db` (its Port given) and `api`.
pub fn files(port: &str) -> Vec<(&'static str, String)> {
    vec![
        ("component.yaml", component_yaml(&[("main-db", "database:pg/main"), ("api-x", "thirdparty:api/v1")])),
        ("identity.yaml", IDENTITY.to_owned()),
        (
            "connections.yaml",
            connection(DB_ID, "main-db", &[("HostName", "pg.internal"), ("Port", &format!("\"{port}\""))])
                + &connection(API_ID, "api-x", &[("ServiceURL", "https://api.example")]),
        ),
    ]
}

pub fn refs<'a>(files: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    files.iter().map(|(n, t)| (*n, t.as_str())).collect()
}

pub fn config(dir: &std::path::Path, refresh: Duration) -> ReloadConfig {
    ReloadConfig {
        dir: dir.to_path_buf(),
        options: Options::default(),
        refresh_interval: refresh,
        rescan_interval: Duration::from_secs(60),
        debounce: Duration::from_millis(10),
        file_settle: connd::reload::FILE_SETTLE,
        tokens: connd::source::Tokens::All,
    }
}

/// Waits (up to 5 s) for a snapshot that satisfies `pred`.
pub async fn wait_for(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let found = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| pred(s))).await;
    let found = found.ok().and_then(|r| r.ok()).map(|s| s.clone());
    match found {
        Some(s) => s,
        None => panic!("no snapshot where {what}; the last one: {:?}", rx.borrow().clone()),
    }
}

/// A directory whose `db` connection takes its Password from the remote source.
pub fn remote_files() -> Vec<(&'static str, String)> {
    let mut f = files("5432");
    f[2].1 = f[2].1.replace("  HostName: pg.internal\n", "  HostName: pg.internal\n  Password: { remote: true }\n");
    f
}

/// An OAuth connection descriptor for `client` at `token_url`.
pub fn oauth_connection(id: &str, name: &str, token_url: &str, client: &str, secret: &str, auth: &str) -> String {
    format!(
        "---\nkind: Connection\nid: {id}\nname: {name}\nproject: hr-project\nvisibility: project\nsecurity: oauth2\n\
         oauth: {{ scopes: [read], clientAuth: {auth} }}\nparameters:\n  ServiceURL: https://{name}.internal\n  \
         TokenURL: {token_url}\n  ConsumerKey: {client}\n  ConsumerSecret: {{ value: \"{secret}\" }}\n"
    )
}

/// A component.yaml mapping each named reference's `AccessToken` to `<NAME>_TOKEN`.
pub fn component_with_tokens(names: &[&str]) -> String {
    let mut s = component_yaml(&names.iter().map(|n| (*n, "thirdparty:svc/v1")).collect::<Vec<_>>());
    s.push_str("configurations:\n  env:\n");
    for n in names {
        let var = format!("{}_TOKEN", n.to_uppercase().replace('-', "_"));
        s.push_str(&format!(
            "    - name: {var}\n      valueFrom:\n        connectionRef: {{ name: {n}, key: AccessToken }}\n"
        ));
    }
    s
}

/// The value of `VAR=...` in `env`'s output (quotes trimmed).
pub fn token_in(stdout: &str, var: &str) -> String {
    let line =
        stdout.lines().find(|l| l.starts_with(&format!("{var}="))).unwrap_or_else(|| panic!("no {var} in:\n{stdout}"));
    line.split_once('=').unwrap().1.trim_matches('\'').to_owned()
}
