//! Files that hold secrets — keys, passwords, AUTH users, credentials — read one way: a file
//! that others than its owner may change is refused (whoever can write it can swap Postern's
//! key or add a user), and one that every user may read is warned about. The config file
//! names these files instead of holding the secrets, so that it can be readable by many.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::engine::rules::protect::Secret;

/// Why a secret could not be had; each says which file (or variable) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} is not UTF-8 text", path.display())]
    NotText { what: String, path: PathBuf },
    #[error(
        "{what} {shown} may be changed by {who} (mode {mode:04o}), so they could replace it: run `chmod go-w {shown}`",
        shown = path.display()
    )]
    Writable {
        what: String,
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("environment variable {0} is not set (or not UTF-8)")]
    NoVariable(String),
    #[error("give exactly one of the {0}'s file and environment variable")]
    NotOneSource(String),
    #[error("the {0} is empty")]
    Empty(String),
}

/// Reads the secret file `path` (`what` names it in messages: "TLS private key", ...).
/// Refuses a group- or world-writable file; warns about a world-readable one.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>, SecretError> {
    let unreadable = |source| SecretError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    check_mode(path, what, mode(&meta))?;
    std::fs::read(path).map_err(unreadable)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, what: &str) -> Result<String, SecretError> {
    String::from_utf8(read(path, what)?).map_err(|_| SecretError::NotText {
        what: what.to_owned(),
        path: path.to_owned(),
    })
}

/// A secret read from `file` (whole content, surrounding white space trimmed, through
/// [`read`]) or from the environment variable `env`; exactly one must be given.
pub fn load_secret(
    file: Option<&Path>,
    env: Option<&str>,
    what: &str,
) -> Result<Secret, SecretError> {
    let text = match (file, env) {
        (Some(path), None) => read_to_string(path, what)?,
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| SecretError::NoVariable(var.to_owned()))?
        }
        _ => return Err(SecretError::NotOneSource(what.to_owned())),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty(what.to_owned()));
    }
    Ok(Secret::new(text.as_bytes().to_vec()))
}

#[cfg(unix)]
fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode(_: &std::fs::Metadata) -> u32 {
    0o600
}

/// Refuses a mode that lets others than the owner write the file; warns when every user may
/// read it.
fn check_mode(path: &Path, what: &str, mode: u32) -> Result<(), SecretError> {
    let shown = path.display();
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        return Err(SecretError::Writable {
            what: what.to_owned(),
            path: path.to_owned(),
            who,
            mode,
        });
    }
    if mode & 0o004 != 0 {
        warn!(
            file = %shown,
            mode = %format!("{mode:04o}"),
            "{what} is readable by every user: run `chmod o-r {shown}` (and give Postern's group read access if it needs it)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_by_others_is_refused_readable_by_all_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let set = |mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        for (mode, who) in [
            (0o620, "its group"),
            (0o602, "every user"),
            (0o666, "its group and every user"),
        ] {
            set(mode);
            let e = read(&path, "relay password").unwrap_err().to_string();
            assert!(
                e.contains(who) && e.contains("chmod go-w") && e.contains("relay password"),
                "{mode:o}: {e}"
            );
        }
        for mode in [0o600, 0o640, 0o644, 0o400] {
            set(mode);
            assert_eq!(read(&path, "key").unwrap(), b"  s3cret\n", "{mode:o}");
        }
        let secret = load_secret(Some(&path), None, "protect key").unwrap();
        assert_eq!(secret.as_bytes(), b"s3cret");
        let e = read(&dir.path().join("none"), "users file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read users file"), "{e}");
    }
}
