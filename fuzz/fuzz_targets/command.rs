//! Any command line parses to some command without panicking, and an address it returns
//! holds no control character, space or angle bracket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proxy::command::Command;

fuzz_target!(|line: &[u8]| {
    match Command::parse(line) {
        Command::Mail { sender: a, .. } | Command::Rcpt { recipient: a, .. } => {
            assert!(!a.chars().any(|c| c.is_control() || c == ' ' || c == '<'));
        }
        _ => {}
    }
});
