//! Who may call the API: processes whose peer credentials (SO_PEERCRED, read when the
//! connection is accepted) name an allowed uid or gid, or connd's own uid. The socket's
//! mode is the first gate; this is the second, so a loose mode cannot open the API.

use nix::unistd::{Gid, Group, Uid, User};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
                tracing::warn!(error = %e, "cannot read the caller's credentials, refusing");
                false
            }
        }
    }

    /// The allowed callers that the socket file's owner, group and mode keep from
    /// connecting (connect(2) needs write permission on the socket), each as a sentence
    /// that names the fix, never loosening the mode first (docs/api.md). Root is never
    /// kept out. connd sees a user's groups only in the group database: groups given
    /// when a process starts (Kubernetes' `fsGroup` and `supplementalGroups`, systemd's
    /// `SupplementaryGroups=`) are invisible to it, so a uid with no user here (a
    /// workload container's) is not warned about when the socket's group may connect,
    /// and a warning about a known user says what connd cannot see.
    pub fn unreachable(&self, socket: &Path) -> Vec<String> {
        let Ok(meta) = std::fs::metadata(socket) else { return Vec::new() };
        let (owner, group, mode) = (meta.uid(), meta.gid(), meta.mode() & 0o777);
        let describe = format!("{} is {mode:04o} {}:{}", socket.display(), user_name(owner), group_name(group));
        let mut out = Vec::new();
        for &uid in &self.uids {
            if uid == 0 || (uid == owner && mode & 0o200 != 0) || (uid != owner && mode & 0o002 != 0) {
                continue;
            }
            let who = format!("--allow-uid {uid}: {}", user_name(uid));
            if uid == owner {
                out.push(format!("{who} cannot connect, since the socket {describe}: pass --socket-mode 0660"));
                continue;
            }
            if mode & 0o020 == 0 {
                out.push(format!(
                    "{who} cannot connect, since the socket {describe} and its group cannot write: pass \
                     --socket-mode 0660 with --socket-group set to a group of that user"
                ));
                continue;
            }
            match groups_of(uid) {
                // No user for the uid here: its groups are given at its start, unseen.
                None => tracing::debug!(uid, "cannot see the groups of an allowed uid without a user here"),
                Some(groups) if groups.contains(&group) => {}
                Some(_) => out.push(format!(
                    "{who} may not connect: the socket {describe}, and the group database does not put \
                     that user in {}. connd cannot see groups given when a process starts \
                     (Kubernetes fsGroup or supplementalGroups, systemd SupplementaryGroups=): if the \
                     caller gets the group that way, all is well; otherwise add the user to the group \
                     or pass --socket-group with one of its groups",
                    group_name(group)
                )),
            }
        }
        for &gid in &self.gids {
            let bit = if gid == group { 0o020 } else { 0o002 };
            if mode & bit != 0 {
                continue;
            }
            out.push(format!(
                "--allow-gid {gid}: processes of group {} cannot connect, since the socket {describe}: pass \
                 --socket-group {gid} (with a --socket-mode that lets the group write, such as 0660)",
                group_name(gid)
            ));
        }
        out
    }
}

/// `name (uid N)`, or `uid N` for a uid without a user.
fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// `name (gid N)`, or `gid N` for a gid without a group.
fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} (gid {gid})", g.name),
        _ => format!("gid {gid}"),
    }
}

/// Every group of `uid`'s user as the group database has it: its primary group and the
/// groups that list it; None when no user has the uid here.
fn groups_of(uid: u32) -> Option<Vec<u32>> {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else { return None };
    let Ok(name) = std::ffi::CString::new(user.name) else { return Some(vec![user.gid.as_raw()]) };
    Some(match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(groups) => groups.into_iter().map(Gid::as_raw).collect(),
        Err(_) => vec![user.gid.as_raw()],
    })
}
