//! Retained message files, for support ("Keep spool files", "Retain raw message files",
//! "Retain decoded message files"): copies of each message as it arrived and as it leaves
//! (after the content stage and every edit), written into one directory, each file at most
//! `retain_max_size` bytes and removed after `retain_days`. Off by default; warned about at
//! start while on, since it keeps mail on disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// `[scan] retain_*`, when some copy is kept.
#[derive(Debug)]
pub struct Retain {
    pub directory: PathBuf,
    /// The message as it arrived (raw).
    pub raw: bool,
    /// The message as it leaves (decoded and rewritten by the content stage, with Postern's
    /// edits).
    pub decoded: bool,
    /// A message larger than this is not copied.
    pub max_size: u64,
    /// Copies older than this are removed.
    pub max_age: Duration,
    /// When old copies were last looked for (at most once an hour).
    pruned: Mutex<Option<Instant>>,
}

/// The name every retained file has, so that pruning removes nothing else.
const PREFIX: &str = "postern-";

/// How often old copies are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Retain {
    pub fn new(directory: PathBuf, raw: bool, decoded: bool, max_size: u64, days: u32) -> Self {
        Self {
            directory,
            raw,
            decoded,
            max_size,
            max_age: Duration::from_secs(u64::from(days) * 86_400),
            pruned: Mutex::new(None),
        }
    }

    /// Writes `message` as `postern-<name>.<kind>.eml` (mode 0600), unless it is larger than
    /// `max_size`; removes old copies when that is due. What could not be written is the
    /// error, for the log: mail is never held up by it.
    pub async fn keep(
        &self,
        name: &str,
        kind: &str,
        message: Vec<u8>,
    ) -> Result<Option<PathBuf>, String> {
        if message.len() as u64 > self.max_size {
            return Ok(None);
        }
        let path = self.directory.join(format!("{PREFIX}{name}.{kind}.eml"));
        let due = {
            let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            let due = pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *pruned = Some(Instant::now());
            }
            due
        };
        let (directory, max_age, target) = (self.directory.clone(), self.max_age, path.clone());
        tokio::task::spawn_blocking(move || {
            if due {
                prune(&directory, max_age);
            }
            write_private(&target, &message)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Some(path))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Removes this module's files in `directory` older than `max_age`.
fn prune(directory: &Path, max_age: Duration) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".eml"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > max_age);
        if ours && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_are_private_bounded_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let retain = Retain::new(dir.path().to_owned(), true, true, 10, 0);
        let kept = retain
            .keep("1-1", "raw", b"small".to_vec())
            .await
            .unwrap()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            retain
                .keep("1-2", "raw", vec![b'x'; 11])
                .await
                .unwrap()
                .is_none()
        );
        // Another file in the directory is never touched.
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "keep me").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        prune(dir.path(), Duration::ZERO);
        assert!(!kept.exists() && other.exists());
    }
}
