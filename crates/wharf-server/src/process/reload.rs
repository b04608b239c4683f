//! `--reload`: notices when Python sources under the app directory change.
//!
//! Polling modification times once a tick is enough for a development loop and needs no
//! platform-specific file-watching machinery.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Directories that hold installed packages, caches or VCS data, not the user's code.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", "site-packages", ".tox"];
/// A tree larger than this is only partly watched (and a warning says so).
const MAX_FILES: usize = 20_000;
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct SourceWatcher {
    root: PathBuf,
    fingerprint: (usize, Option<SystemTime>),
    last_scan: Instant,
    warned: bool,
}

impl SourceWatcher {
    pub(crate) fn new(root: PathBuf) -> Self {
        let mut watcher = SourceWatcher { root, fingerprint: (0, None), last_scan: Instant::now(), warned: false };
        watcher.fingerprint = watcher.scan();
        tracing::info!(dir = %watcher.root.display(), files = watcher.fingerprint.0, "reload: watching Python sources");
        watcher
    }

    /// Count of `.py` files and their newest modification time.
    fn scan(&mut self) -> (usize, Option<SystemTime>) {
        let mut count = 0;
        let mut newest = None;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    if !is_skipped(&path) {
                        stack.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "py") {
                    count += 1;
                    if count > MAX_FILES {
                        if !self.warned {
                            tracing::warn!("reload: more than {MAX_FILES} .py files; watching only the first ones");
                            self.warned = true;
                        }
                        return (count, newest);
                    }
                    let mtime = entry.metadata().and_then(|m| m.modified()).ok();
                    newest = newest.max(mtime);
                }
            }
        }
        (count, newest)
    }

    /// Whether anything changed since the last call (at most one scan per second).
    pub(crate) fn changed(&mut self) -> bool {
        if self.last_scan.elapsed() < SCAN_INTERVAL {
            return false;
        }
        self.last_scan = Instant::now();
        let now = self.scan();
        let changed = now != self.fingerprint;
        self.fingerprint = now;
        changed
    }
}

fn is_skipped(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| SKIP_DIRS.contains(&n) || (n.starts_with('.') && n.len() > 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_new_and_touched_files() {
        let dir = std::env::temp_dir().join(format!("wharf-reload-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("__pycache__")).expect("mkdir");
        std::fs::write(dir.join("a.py"), "x = 1").expect("write");
        let mut w = SourceWatcher::new(dir.clone());
        assert_eq!(w.fingerprint.0, 1);
        w.last_scan -= SCAN_INTERVAL;
        assert!(!w.changed());
        std::fs::write(dir.join("__pycache__/ignored.py"), "").expect("write");
        w.last_scan -= SCAN_INTERVAL;
        assert!(!w.changed());
        std::fs::write(dir.join("b.py"), "y = 2").expect("write");
        w.last_scan -= SCAN_INTERVAL;
        assert!(w.changed());
        std::fs::remove_dir_all(&dir).ok();
    }
}
