//! A config directory written the way the kubelet's atomic writer writes a ConfigMap
//! volume: the files live in a timestamped hidden folder, `..data` links to it, each
//! visible name links into `..data/`, and an update swaps `..data` by renaming a
//! `..data_tmp` link over it.

use std::os::unix::fs::symlink;
use std::path::Path;

pub struct AtomicDir {
    pub dir: tempfile::TempDir,
    /// The timestamped folder `..data` points at.
    current: String,
    /// Updates written so far, to give each folder its own name.
    serial: u32,
}

impl AtomicDir {
    pub fn new(files: &[(&str, &str)]) -> AtomicDir {
        let mut d = AtomicDir { dir: tempfile::tempdir().expect("temp dir"), current: String::new(), serial: 0 };
        let folder = d.write_folder(files);
        symlink(&folder, d.path().join("..data")).expect("link ..data");
        d.link_visible(files);
        d.current = folder;
        d
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_folder(&mut self, files: &[(&str, &str)]) -> String {
        self.serial += 1;
        let folder = format!("..2026_11_22_03_00_{:02}.{}", self.serial, 123_456_789 + self.serial);
        let full = self.path().join(&folder);
        std::fs::create_dir(&full).expect("mkdir timestamped folder");
        for (name, text) in files {
            std::fs::write(full.join(name), text).expect("write file");
        }
        folder
    }

    fn link_visible(&self, files: &[(&str, &str)]) {
        for (name, _) in files {
            let link = self.path().join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).expect("link visible name");
            }
        }
    }

    /// The kubelet's update, step by step: a new timestamped folder, `..data_tmp`
    /// pointing at it, renamed over `..data`; links for new names; the old folder and
    /// links for names that are gone removed.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        let folder = self.write_folder(files);
        let tmp = self.path().join("..data_tmp");
        symlink(&folder, &tmp).expect("link ..data_tmp");
        std::fs::rename(&tmp, self.path().join("..data")).expect("rename ..data_tmp over ..data");
        self.link_visible(files);
        for entry in std::fs::read_dir(self.path()).expect("list") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(self.path().join(&name)).expect("remove old link");
            }
        }
        std::fs::remove_dir_all(self.path().join(&self.current)).expect("remove old folder");
        self.current = folder;
    }
}
