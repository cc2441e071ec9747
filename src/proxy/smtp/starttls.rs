//! STARTTLS and implicit TLS: the TLS handshake, after which the conversation starts again.

use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::engine::TlsInfo;

use super::{Conversation, Next};

impl Conversation {
    pub(super) async fn starttls(&mut self) -> Next {
        let acceptor = self.shared.acceptor.load_full();
        let Some(acceptor) = acceptor.filter(|_| self.session.tls().is_none()) else {
            self.say(502, "5.5.1 Error: STARTTLS is not offered here");
            return Next::Continue;
        };
        let verdict = self.session.starttls();
        if let Some(next) = self.refused(&verdict) {
            return next;
        }
        // Nothing the client sent in plaintext after STARTTLS counts: a man in the middle
        // could have added it.
        let dropped = self.conn.discard_pending_input();
        if dropped > 0 {
            warn!(client = %self.peer, bytes = dropped, "plaintext sent after STARTTLS discarded");
        }
        self.say(220, "2.0.0 Ready to start TLS");
        if let Err(e) = self.conn.flush().await {
            info!(client = %self.peer, error = %e, "connection ended before TLS");
            return Next::Close;
        }
        self.reset().await;
        let Some(info) = self.handshake(&acceptor).await else {
            self.recover_from_failed_tls().await;
            return Next::Close;
        };
        self.session.restart_after_tls(info);
        self.esmtp = false;
        Next::Continue
    }

    /// The TLS handshake within tls_negotiation_timeout, logged either way.
    async fn handshake(&mut self, acceptor: &TlsAcceptor) -> Option<TlsInfo> {
        let timeout = self.timeouts().tls_negotiation;
        match self.conn.start_tls(acceptor, timeout).await {
            Ok(info) => {
                info!(client = %self.peer, version = %info.version, cipher = %info.cipher, client_certificate = info.cert_subject.is_some(), "TLS established");
                Some(info)
            }
            Err(e) => {
                info!(client = %self.peer, error = %e, "TLS failed");
                None
            }
        }
    }

    /// After a STARTTLS handshake that failed (not one that timed out), a client still there
    /// is told so in plain text, and given `tls_fail_recovery_timeout` to read it and go
    /// before the connection is closed (0: closed at once).
    async fn recover_from_failed_tls(&mut self) {
        let recovery = self.timeouts().tls_fail_recovery;
        if recovery.is_zero() || !self.conn.is_plain() {
            return;
        }
        let text = format!(
            "4.7.0 {} Error: the TLS handshake failed; connect again (with other TLS settings, or without STARTTLS)",
            self.hostname
        );
        self.say(421, &text);
        if self.conn.flush().await.is_err() {
            return;
        }
        // Whatever the client sends now is not read: it is given the time to close.
        let _ = self.conn.wait_input(recovery).await;
    }

    /// TLS from the first byte (implicit TLS listener). False when the handshake failed.
    pub(super) async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.shared.acceptor.load_full() else {
            warn!(client = %self.peer, "implicit TLS listener without a certificate");
            return false;
        };
        match self.handshake(&acceptor).await {
            Some(info) => {
                self.session.tls_established(info);
                true
            }
            None => false,
        }
    }
}
