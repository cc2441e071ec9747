//! What the policy in force needs to hear of a conversation, stage by stage, and where it may
//! answer anything but "go on". A door that can choose what it is told (the milter door
//! negotiates it with the MTA, per connection, so a reload counts from the next one) asks for
//! no more: every stage the MTA need not wait for saves a round trip per message.

use super::policy::{Policy, Stage};

/// How much one stage of the conversation matters to the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The policy learns from it (a name, a count, what a record says) but answers nothing
    /// there except "go on": the MTA need not wait for an answer.
    Hear,
    /// The policy may refuse there: the MTA waits for the answer.
    Answer,
}

/// The [`Need`] of the stages whose answer depends on the policy. The others do not: connect,
/// header fields, end of header and body are heard without an answer in every policy (a
/// refusal reached there is held for a later stage); MAIL and RCPT are always answered (an
/// address with a control character is refused whatever the policy, and a recipient may be
/// refused by so many parts of it — a held refusal, address hiding, relay restriction and
/// connection profiles, encryption rules — that no policy worth running has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention {
    pub helo: Need,
    pub data: Need,
    pub unknown_command: Need,
}

impl Attention {
    /// Every stage answered: what a door asks for when it does not know the policy.
    pub const EVERYTHING: Self = Self {
        helo: Need::Answer,
        data: Need::Answer,
        unknown_command: Need::Answer,
    };
}

impl Policy {
    /// Where this policy may refuse, for a door whose first reply of the policy's own comes
    /// at `first_reply_stage` (see [`crate::engine::Session::new`]). A stage is heard without
    /// an answer only when no part of the policy can refuse there:
    /// - HELO: a refusal reached at connect is held until the reply stage (the delayed
    ///   rejection state, at the earliest `first_reply_stage`) and answered from there on;
    /// - DATA: a refusal held until DATA (a held refusal answered earlier has refused every
    ///   recipient but an exempt postmaster's, so no transaction reaches DATA with it), an
    ///   encryption rule that requires TLS for the whole transaction;
    /// - an unknown command: the limit of invalid commands.
    pub fn attention(&self, first_reply_stage: Stage) -> Attention {
        let answer = |refuses: bool| if refuses { Need::Answer } else { Need::Hear };
        let reply_stage = self.delayed_rejection_state.max(first_reply_stage);
        let connect_refuses = self.connect_may_refuse();
        Attention {
            helo: answer(connect_refuses && reply_stage <= Stage::Helo),
            data: answer(
                (connect_refuses && reply_stage == Stage::Data)
                    || self.encryption_rules.may_refuse_data(),
            ),
            unknown_command: answer(self.exploit_detection.max_invalid_commands.is_some()),
        }
    }

    /// Whether any check at connect may refuse the client (or fail, which its scan failure
    /// action may make a refusal).
    fn connect_may_refuse(&self) -> bool {
        !self.ip_address_rejection.is_empty()
            || self.client_limits.is_some()
            || self.rbl.is_some()
            || self.reputation.is_some()
            || self.profiles.blocks_any()
    }
}
