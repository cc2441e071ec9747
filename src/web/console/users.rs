//! The console's users: `[console] users_file`, one `name:HASH[:role[:organization]]` line
//! each (`#` starts a comment). HASH is an argon2 PHC string from `postern hash-password`;
//! role is `admin` (may apply a configuration to the fleet) or `viewer` (the default); an
//! organization limits what the user sees to that organization's records.

use std::collections::HashMap;
use std::path::Path;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
        }
    }
}

/// One user of the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub hash: String,
    pub role: Role,
    /// Sees only this organization's records.
    pub organization: Option<String>,
}

/// The users of a users file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users(HashMap<String, User>);

impl Users {
    /// Reads `path`; `organizations` are the configured organizations' names, which an
    /// organization scope must be one of.
    pub fn load(path: &Path, organizations: &[String]) -> Result<Self, String> {
        let text = crate::secret_file::read_to_string(path, "console users file")
            .map_err(|e| e.to_string())?;
        Self::parse(&text, organizations).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, organizations: &[String]) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("line {}", n + 1);
            let mut fields = line.split(':');
            let (Some(name), Some(hash)) = (fields.next(), fields.next()) else {
                return Err(format!(
                    "{}: expected name:HASH[:role[:organization]] (HASH from `postern hash-password`)",
                    at()
                ));
            };
            if name.is_empty() || !hash.starts_with("$argon2") {
                return Err(format!(
                    "{}: expected name:HASH with an argon2 hash from `postern hash-password`",
                    at()
                ));
            }
            let role = match fields.next().unwrap_or("viewer") {
                "admin" => Role::Admin,
                "viewer" | "" => Role::Viewer,
                other => {
                    return Err(format!(
                        "{}: role {other:?} is neither admin nor viewer",
                        at()
                    ));
                }
            };
            let organization = match fields.next() {
                None | Some("") => None,
                Some(o) if organizations.iter().any(|known| known == o) => Some(o.to_owned()),
                Some(o) => {
                    return Err(format!(
                        "{}: organization {o:?} is not an [[organization]] name of the configuration",
                        at()
                    ));
                }
            };
            if fields.next().is_some() {
                return Err(format!(
                    "{}: too many fields (name:HASH:role:organization)",
                    at()
                ));
            }
            let user = User {
                hash: hash.to_owned(),
                role,
                organization,
            };
            if users.insert(name.to_owned(), user).is_some() {
                return Err(format!("{}: user {name:?} is given twice", at()));
            }
        }
        Ok(Self(users))
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.0.get(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    #[test]
    fn lines_give_roles_and_scopes() {
        let orgs = vec!["acme".to_owned()];
        let text = format!("# users\nroot:{HASH}:admin\nann:{HASH}\nbob:{HASH}:viewer:acme\n");
        let users = Users::parse(&text, &orgs).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users.get("root").unwrap().role, Role::Admin);
        assert_eq!(users.get("ann").unwrap().role, Role::Viewer);
        assert_eq!(
            users.get("bob").unwrap().organization.as_deref(),
            Some("acme")
        );
        for (bad, says) in [
            (format!("root:{HASH}:owner"), "neither admin nor viewer"),
            (
                format!("root:{HASH}:viewer:globex"),
                "not an [[organization]]",
            ),
            ("root:secret".to_owned(), "argon2"),
            ("root".to_owned(), "expected name:HASH"),
            (
                format!("a:{HASH}\na:{HASH}"),
                "line 2: user \"a\" is given twice",
            ),
        ] {
            let e = Users::parse(&bad, &orgs).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
