//! The directory watcher of the reloader: inotify (through `notify`) on the config
//! directory and on the folders of `file:` sources, reporting on a channel that
//! something relevant may have changed. It sees the kubelet's atomic writer (a create
//! of `..data_tmp` and its rename over `..data`), a watched folder replaced by rename,
//! and a watched path that is a symlink retargeted (`ln -s release-2 tmp && mv -T tmp
//! current`): for such a path it also watches the folder holding the link, and a change
//! of the link re-watches the path, now pointing elsewhere (docs/api.md).
//!
//! Boundary: it says *that* something changed, never what; the reloader re-reads.
//! Hidden files (editor swap files, other tools' state) are ignored, except the
//! kubelet's entries and the files `file:` sources name.

use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Watches a set of folders; see the module header.
pub struct DirWatcher {
    watcher: notify::RecommendedWatcher,
    /// Paths with an inotify watch now.
    watched: BTreeSet<PathBuf>,
    /// Folders to watch (the config directory, the folders of `file:` sources). While
    /// one of them is not watched (missing, just replaced), the caller retries [`Self::sync`].
    wanted: BTreeSet<PathBuf>,
    /// What the callback, on notify's thread, needs to know and reports back.
    shared: Arc<Mutex<Shared>>,
}

/// Shared by the owner and notify's callback thread.
#[derive(Default)]
struct Shared {
    /// The files `file:` sources name: hidden or not, their changes count.
    files: BTreeSet<PathBuf>,
    /// The paths watched.
    dirs: BTreeSet<PathBuf>,
    /// Wanted folders that are symlinks: a change of the link itself counts.
    links: BTreeSet<PathBuf>,
    /// The links further down a wanted link's chain (`current` -> `releases/live` ->
    /// `release-1`: `releases/live`), each with the wanted path it leads from: when one
    /// is retargeted, that wanted path is watched afresh.
    chains: BTreeMap<PathBuf, PathBuf>,
    /// Folders watched only because they hold a link: only events on links count there.
    link_parents: BTreeSet<PathBuf>,
    /// Watched paths that were renamed, removed or retargeted since the last sync.
    gone: BTreeSet<PathBuf>,
}

impl DirWatcher {
    /// Starts the watcher; each relevant change is a `try_send` on `changed` (a full
    /// channel means a reload is already due, so the event can be dropped).
    pub fn new(changed: mpsc::Sender<()>) -> notify::Result<DirWatcher> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let seen = shared.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if seen.lock().notice(&event) {
                let _ = changed.try_send(());
            }
        })?;
        Ok(DirWatcher { watcher, watched: BTreeSet::new(), wanted: BTreeSet::new(), shared })
    }

    /// Sets what to watch: `dirs` (folders), and `files` whose changes count even when
    /// hidden. Takes effect at the next [`Self::sync`]. Relative paths are taken from the
    /// current directory, as events name them.
    pub fn want(&mut self, dirs: BTreeSet<PathBuf>, files: BTreeSet<PathBuf>) {
        self.wanted = dirs.iter().map(|d| absolute(d)).collect();
        self.shared.lock().files = files.iter().map(|f| absolute(f)).collect();
    }

    /// Whether nothing is wanted yet.
    pub fn wants_nothing(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Watches every wanted folder (and the folder of each that is a symlink) not
    /// watched yet, watches afresh those replaced, and drops the rest. True when a
    /// folder that was not watched now is, so that what changed meanwhile is read.
    pub fn sync(&mut self) -> bool {
        let links: BTreeSet<PathBuf> = self.wanted.iter().filter(|d| is_symlink(d)).cloned().collect();
        let chains: BTreeMap<PathBuf, PathBuf> =
            links.iter().flat_map(|l| chain_of(l).into_iter().map(move |inner| (inner, l.clone()))).collect();
        let link_parents: BTreeSet<PathBuf> = links
            .iter()
            .chain(chains.keys())
            .filter_map(|l| l.parent().filter(|p| !p.as_os_str().is_empty()))
            .filter(|p| !self.wanted.contains(*p))
            .map(Path::to_path_buf)
            .collect();
        let targets: BTreeSet<PathBuf> = self.wanted.union(&link_parents).cloned().collect();
        let gone = {
            let mut shared = self.shared.lock();
            shared.links = links;
            shared.chains = chains;
            shared.link_parents = link_parents;
            std::mem::take(&mut shared.gone)
        };
        for path in gone.iter().chain(self.watched.difference(&targets)).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&path);
            self.watched.remove(&path);
        }
        let mut added = false;
        for path in &targets {
            if !self.watched.contains(path) && self.watcher.watch(path, RecursiveMode::NonRecursive).is_ok() {
                self.watched.insert(path.clone());
                added |= self.wanted.contains(path);
            }
        }
        self.shared.lock().dirs = self.watched.clone();
        added
    }

    /// Whether some wanted folder is not watched (missing, or just replaced).
    pub fn incomplete(&self) -> bool {
        !self.wanted.is_subset(&self.watched) || !self.shared.lock().gone.is_empty()
    }
}

impl Shared {
    /// Records what `event` did to the watches; true when it may change what connd
    /// resolves. Reads (opens and closes without a write) are connd's own and change nothing.
    fn notice(&mut self, event: &notify::Event) -> bool {
        use notify::event::{AccessKind, AccessMode, EventKind};
        if matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) {
            return false;
        }
        // An event on a watched path itself (renamed, removed, replaced) or on a link
        // (retargeted): its watch follows the old inode, so the path is watched afresh.
        for path in &event.paths {
            if self.dirs.contains(path) || self.links.contains(path) {
                self.gone.insert(path.clone());
            }
            if let Some(wanted) = self.chains.get(path) {
                self.gone.insert(wanted.clone());
            }
        }
        event.paths.is_empty() || event.paths.iter().any(|p| self.counts(p))
    }

    fn counts(&self, path: &Path) -> bool {
        if self.links.contains(path) || self.chains.contains_key(path) {
            return true;
        }
        if path.parent().is_some_and(|p| self.link_parents.contains(p)) {
            return false;
        }
        relevant(path, &self.files)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The links that `link`'s target goes through after `link` itself, in order, as
/// written (a relative target is taken from the link's folder); at most 40, as the kernel.
fn chain_of(link: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut at = link.to_path_buf();
    while out.len() < 40 {
        let Ok(target) = std::fs::read_link(&at) else { break };
        let next = at.parent().map_or(target.clone(), |p| p.join(&target));
        if !is_symlink(&next) {
            break;
        }
        out.push(next.clone());
        at = next;
    }
    out
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether a change to `path` may change what connd resolves: not for hidden files,
/// except the kubelet's `..data`, `..data_tmp` and timestamped `..2024_...` entries
/// and the files in `named` (those of `file:` sources).
fn relevant(path: &Path, named: &BTreeSet<PathBuf>) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return true };
    if !name.starts_with('.') || named.contains(path) {
        return true;
    }
    name == "..data" || name == "..data_tmp" || name.strip_prefix("..").is_some_and(|n| n.starts_with("20"))
}

#[cfg(test)]
mod tests {
    use super::{relevant, Shared};
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(kind);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    /// `/r/current` links to a release; `/r` is watched only for the link.
    #[test]
    fn in_a_link_s_folder_only_the_link_counts_and_is_watched_afresh() {
        let mut shared = Shared {
            dirs: BTreeSet::from([PathBuf::from("/r/current"), PathBuf::from("/r")]),
            links: BTreeSet::from([PathBuf::from("/r/current")]),
            link_parents: BTreeSet::from([PathBuf::from("/r")]),
            ..Shared::default()
        };
        assert!(!shared.notice(&event(EventKind::Create(CreateKind::Any), &["/r/release-3"])));
        assert!(!shared.notice(&event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/r/tmp"])));
        assert!(shared.gone.is_empty());
        assert!(shared.notice(&event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/r/current"])));
        assert_eq!(shared.gone, BTreeSet::from([PathBuf::from("/r/current")]));
        // Inside the link's target, files count as in any watched folder.
        assert!(shared.notice(&event(EventKind::Create(CreateKind::Any), &["/r/current/component.yaml"])));
    }

    #[test]
    fn hidden_files_are_not_connds_but_the_kubelets_are() {
        let none = BTreeSet::new();
        for path in ["/c/component.yaml", "/c/..data", "/c/..data_tmp", "/c/..2026_11_22_03_00_01.123"] {
            assert!(relevant(Path::new(path), &none), "{path}");
        }
        for path in ["/c/.editor.swp", "/c/.git", "/c/..other"] {
            assert!(!relevant(Path::new(path), &none), "{path}");
        }
        let named = BTreeSet::from([PathBuf::from("/s/.token")]);
        assert!(relevant(Path::new("/s/.token"), &named), "a file a `file:` source names");
    }
}
