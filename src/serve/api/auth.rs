//! Who may call the API: processes whose peer credentials (SO_PEERCRED, read when the
//! connection is accepted) name an allowed uid or gid, or connd's own uid. The socket's
//! mode is the first gate; this is the second, so a loose mode cannot open the API.

use tokio::net::UnixStream;

#[derive(Debug, Clone)]
pub struct Allow {
    uids: Vec<u32>,
    gids: Vec<u32>,
    own_uid: u32,
}

impl Allow {
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> Allow {
        Allow { uids, gids, own_uid: nix::unistd::geteuid().as_raw() }
    }

    /// Whether the peer of `stream` may call. Only the primary gid is known from
    /// SO_PEERCRED; supplementary groups are not considered.
    pub fn permits(&self, stream: &UnixStream) -> bool {
        match stream.peer_cred() {
            Ok(cred) => {
                let (uid, gid) = (cred.uid(), cred.gid());
                let allowed = uid == self.own_uid || self.uids.contains(&uid) || self.gids.contains(&gid);
                if !allowed {
                    // Who knocked, for the operator: the answer itself is a 403.
                    let pid = cred.pid().unwrap_or(0);
                    tracing::warn!(
                        uid,
                        gid,
                        pid,
                        "refused an API caller: its uid and gid are not allowed (--allow-uid, --allow-gid)"
                    );
                }
                allowed
            }
            Err(e) => {
                tracing::warn!("cannot read the caller's credentials, refusing: {e}");
                false
            }
        }
    }
}
