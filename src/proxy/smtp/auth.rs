//! The AUTH command: PLAIN and LOGIN with their 334 challenges, the limits on failures per
//! connection and per client, and the pause after a failure. Passwords are checked in
//! `proxy/auth.rs`.

use tracing::{info, warn};

use crate::proxy::connection::ReadError;
use crate::proxy::users::{ClientFailures, Verification, decode_line, decode_plain};

use super::{Conversation, Next};

/// A client's answer to an AUTH challenge.
enum Response<T> {
    Given(T),
    /// `*` (RFC 4954): the client gave up; answered 501, not counted as a failure.
    Cancelled,
    /// The connection ended or timed out.
    Gone,
}

impl<T> Response<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        match self {
            Response::Given(t) => Response::Given(f(t)),
            Response::Cancelled => Response::Cancelled,
            Response::Gone => Response::Gone,
        }
    }
}

impl Conversation {
    /// AUTH failures of this client over all its connections.
    fn client_failures(&self) -> ClientFailures<'_> {
        ClientFailures {
            store: self.shared.engine.ports().store.as_ref(),
            max: self.settings.max_auth_failures_per_client,
            window: self.settings.auth_failure_window,
        }
    }

    pub(super) async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        let profile = self.session.profile_name();
        let Some(users) = self.settings().users_for(profile).cloned() else {
            self.say(502, "5.5.1 Error: authentication is not offered here");
            return Next::Continue;
        };
        if self.session.helo_name().is_none() {
            self.say(503, "5.5.1 Error: send EHLO first");
            return Next::Continue;
        }
        if self.session.authenticated_user().is_some() {
            self.say(503, "5.5.1 Error: already authenticated");
            return Next::Continue;
        }
        if self.tx.is_some() {
            self.say(503, "5.5.1 Error: AUTH not allowed in a mail transaction");
            return Next::Continue;
        }
        if self.session.tls().is_none() && !self.settings().auth_over_plaintext {
            self.say(538, "5.7.11 Encryption required for requested authentication mechanism (use STARTTLS first)");
            return Next::Continue;
        }
        if !matches!(mechanism, "PLAIN" | "LOGIN") {
            self.say(
                504,
                "5.5.4 Error: unsupported authentication mechanism (use PLAIN or LOGIN)",
            );
            return Next::Continue;
        }
        // RFC 4954: "=" is an empty initial response, not a request for a challenge.
        let initial = initial.map(|r| if r == "=" { String::new() } else { r });
        let credentials = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => Response::Given(r),
                    None => self.challenge("").await,
                };
                response.map(|r| decode_plain(&r))
            }
            _ => {
                let user = match initial {
                    Some(r) => Response::Given(r),
                    None => self.challenge("VXNlcm5hbWU6").await,
                };
                match user.map(|u| decode_line(&u)) {
                    Response::Given(Some(user)) => self
                        .challenge("UGFzc3dvcmQ6")
                        .await
                        .map(|p| decode_line(&p).map(|p| (user, p))),
                    Response::Given(None) => Response::Given(None),
                    Response::Cancelled => Response::Cancelled,
                    Response::Gone => Response::Gone,
                }
            }
        };
        let credentials = match credentials {
            Response::Given(c) => c,
            Response::Cancelled => {
                self.say(501, "5.7.0 Authentication cancelled");
                return Next::Continue;
            }
            Response::Gone => return Next::Close,
        };
        // The attempt is counted before the check, so that parallel connections of one
        // client get no extra guesses; a success gives it back.
        if !self.client_failures().reserve(self.peer.ip()).await {
            info!(client = %self.peer, "AUTH refused: too many failures from this client");
            self.say(
                454,
                "4.7.0 Error: too many authentication failures from your address, try again later",
            );
            return Next::Continue;
        }
        let wait = self.timeouts().protocol;
        let verdict = match &credentials {
            Some((user, password)) => users.verify(user, password, wait).await,
            None => Verification::Invalid,
        };
        match verdict {
            Verification::Valid => {
                self.client_failures().succeeded(self.peer.ip()).await;
                let user = credentials.map(|c| c.0).unwrap_or_default();
                info!(client = %self.peer, user = %user.escape_debug(), "authenticated");
                self.session.authenticated(&user);
                self.say(235, "2.7.0 Authentication successful");
                return Next::Continue;
            }
            Verification::Busy => {
                self.client_failures().succeeded(self.peer.ip()).await;
                warn!(client = %self.peer, "AUTH deferred: every password check slot is busy (max_concurrent_password_checks)");
                self.say(
                    454,
                    "4.7.0 Error: temporary authentication failure, try again later",
                );
                return Next::Continue;
            }
            Verification::Invalid => {}
        }
        self.auth_failures += 1;
        info!(client = %self.peer, failures = self.auth_failures, "authentication failed");
        if self.auth_failures >= self.settings().max_auth_failures {
            let text = format!(
                "4.7.0 {} Error: too many authentication failures",
                self.hostname
            );
            self.say(421, &text);
            return Next::Close;
        }
        // A pause makes guessing slow without holding other clients up.
        tokio::time::sleep(self.settings().auth_failure_delay * self.auth_failures).await;
        self.say(535, "5.7.8 Error: authentication failed");
        Next::Continue
    }

    /// Sends a 334 challenge and reads the response.
    async fn challenge(&mut self, prompt: &str) -> Response<String> {
        self.conn.queue(format!("334 {prompt}\r\n").as_bytes());
        let timeout = self.timeouts().protocol;
        let limit = self.settings().line_limit;
        match self.conn.read_line(limit, timeout).await {
            Ok(line) if line.trim_ascii() == b"*" => Response::Cancelled,
            // Not UTF-8 (or too long): a response that decodes to nothing.
            Ok(line) => Response::Given(String::from_utf8(line).unwrap_or_default()),
            Err(ReadError::TooLong(_)) => Response::Given(String::new()),
            Err(_) => Response::Gone,
        }
    }
}
