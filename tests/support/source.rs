//! A `Sources` for tests that drive the remote side by hand: remote parameters and a
//! token set by the test, and a switch that makes every call fail as an unreachable
//! control plane would. It stands in for the control-plane source behind the same trait.

use connd::resolve::Plan;
use connd::secret::Secret;
use connd::source::{SourceError, Sources, Token, Tokens};
use connd::values::Fetched;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct ScriptedSource {
    pub down: AtomicBool,
    /// Connection id -> key -> value.
    pub params: Mutex<HashMap<String, HashMap<String, String>>>,
    pub token: Mutex<String>,
    pub fetches: AtomicUsize,
}

impl ScriptedSource {
    pub fn set(&self, id: &str, key: &str, value: &str) {
        self.params.lock().unwrap().entry(id.to_owned()).or_default().insert(key.to_owned(), value.to_owned());
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check_up(&self) -> anyhow::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            anyhow::bail!("control plane http://127.0.0.1:9/v1 unavailable: connection refused");
        }
        Ok(())
    }
}

impl Sources for ScriptedSource {
    async fn fetch(&self, _plan: &Plan, _tokens: Tokens) -> anyhow::Result<Fetched> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.check_up()?;
        let params = self.params.lock().unwrap().clone();
        let params =
            params.into_iter().map(|(id, m)| (id, m.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())).collect();
        Ok(Fetched { params, tokens: HashMap::new() })
    }

    async fn token(&self, plan: &Plan, conn: usize) -> Result<Token, SourceError> {
        if plan.connections[conn].connection.security != connd::config::model::Security::OAuth2 {
            return Err(SourceError::NotOAuth { connection: plan.connections[conn].name.clone() });
        }
        self.check_up()?;
        let token = self.token.lock().unwrap().clone();
        Ok(Token {
            access_token: Secret::new(token),
            token_type: "Bearer".into(),
            expires_in: Duration::from_secs(300),
        })
    }
}
