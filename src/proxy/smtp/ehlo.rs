//! HELO and EHLO: the client names itself, the engine judges the name, and EHLO lists the
//! extensions offered (STARTTLS and AUTH only where they can be used now).

use super::{Conversation, Next};

impl Conversation {
    pub(super) async fn hello(&mut self, name: String, esmtp: bool) -> Next {
        self.reset().await;
        let verdict = self.session.helo(&name).await;
        if let Some(next) = self.refused(&verdict) {
            return next;
        }
        self.esmtp = esmtp;
        if !esmtp {
            let text = self.hostname.clone();
            self.say(250, &text);
            return Next::Continue;
        }
        let mut offered = vec![
            "PIPELINING".to_owned(),
            format!(
                "SIZE {}",
                self.session.policy().message_limits.max_message_size
            ),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.session.tls().is_none() && self.shared.acceptor.load().is_some() {
            offered.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            offered.push("AUTH PLAIN LOGIN".to_owned());
        }
        let mut lines = vec![self.hostname.clone()];
        lines.extend(self.settings().ehlo.applied_to(offered));
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            out.push_str(&format!(
                "250{}{line}\r\n",
                if i == last { ' ' } else { '-' }
            ));
        }
        self.conn.queue(out.as_bytes());
        Next::Continue
    }

    fn auth_offered(&self) -> bool {
        self.settings()
            .users_for(self.session.profile_name())
            .is_some()
            && self.session.authenticated_user().is_none()
            && (self.session.tls().is_some() || self.settings().auth_over_plaintext)
    }
}
