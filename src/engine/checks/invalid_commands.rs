//! Exploit detection (seed: "Enable drop on invalid commands", "Max allowable invalid
//! commands"): a client that keeps sending commands the server does not know is probing, and is
//! answered 421 and disconnected.

use crate::engine::reply::SmtpReply;

/// Invalid-command limit.
#[derive(Clone, Debug)]
pub struct ExploitDetection {
    /// `None` when drop on invalid commands is disabled.
    pub max_invalid_commands: Option<u32>,
}

impl ExploitDetection {
    /// The reply that ends the connection once `count` invalid commands were seen, if the
    /// limit is reached.
    pub fn invalid_command(&self, count: u32) -> Option<SmtpReply> {
        let max = self.max_invalid_commands?;
        (count >= max).then(|| {
            SmtpReply::new(
                421,
                Some("4.7.0"),
                &format!("Too many invalid commands ({count}), closing connection"),
            )
            .expect("static reply is valid")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_at_the_limit_not_before() {
        let d = ExploitDetection {
            max_invalid_commands: Some(5),
        };
        assert!(d.invalid_command(4).is_none());
        let reply = d.invalid_command(5).unwrap();
        assert_eq!(reply.code(), 421);
    }

    #[test]
    fn disabled_never_drops() {
        let d = ExploitDetection {
            max_invalid_commands: None,
        };
        assert!(d.invalid_command(1000).is_none());
    }
}
