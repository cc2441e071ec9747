//! The DATA reader: turns the bytes after 354 into the message, undoing dot-stuffing, and finds
//! its end. Only CRLF "." CRLF ends a message: a "." line reached through a bare
//! LF or ended by a bare LF is message content, never the end, so that Postern and the server
//! behind it always see the same message (the "SMTP smuggling" family of attacks).
//!
//! Bare line ends never pass on: with [`BareNewline::Normalize`] (Postfix 3.9's default) a
//! lone LF or lone CR becomes CRLF; with [`BareNewline::Reject`] the message is refused.

use serde::Deserialize;

/// What to do with a bare CR or LF in message content (Postfix `smtpd_forbid_bare_newline`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Turn it into CRLF.
    #[default]
    Normalize,
    /// Refuse the message (550 5.5.2).
    Reject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf` says whether the previous line ended with a real CRLF
    /// (true at the start of the message).
    LineStart { crlf: bool },
    /// A "." at the start of a line.
    Dot { crlf: bool },
    /// "." then CR at the start of a line.
    DotCr { crlf: bool },
    /// Inside a line.
    Middle,
    /// A CR inside a line.
    Cr,
}

/// Reads one message. Feed it the bytes as they come; it reports where the message ended.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    /// Bare CRs and LFs seen (each one normalized in the output).
    pub bare_newlines: u64,
}

impl Default for DataReader {
    fn default() -> Self {
        Self {
            state: State::LineStart { crlf: true },
            bare_newlines: 0,
        }
    }
}

impl DataReader {
    /// Appends the message content found in `input` to `out`. Returns `Some(n)` when the
    /// end-of-data line ended after `n` bytes of `input` (what follows belongs to the next
    /// command), `None` when more input is needed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            // Inside a line (or at its start, unless it starts with a dot), everything up to
            // the next CR or LF is content: copy it whole.
            let in_text = match self.state {
                State::Middle => true,
                State::LineStart { .. } => input[i] != b'.',
                _ => false,
            };
            if in_text {
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    out.extend_from_slice(&input[i..i + run]);
                    i += run;
                    self.state = State::Middle;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                State::LineStart { crlf } if b == b'.' => State::Dot { crlf },
                State::LineStart { .. } | State::Middle => self.in_line(b, out),
                State::Dot { crlf } => match b {
                    b'\r' => State::DotCr { crlf },
                    // ".<LF>": a line holding one dot, ended by a bare LF. Content.
                    b'\n' => {
                        self.bare_newlines += 1;
                        out.extend_from_slice(b".\r\n");
                        State::LineStart { crlf: false }
                    }
                    // Dot-stuffing: the leading dot goes.
                    _ => self.in_line(b, out),
                },
                State::DotCr { crlf } => match b {
                    b'\n' if crlf => return Some(i),
                    // "<LF>.<CR><LF>": not an end of data, a line holding one dot.
                    b'\n' => {
                        out.extend_from_slice(b".\r\n");
                        State::LineStart { crlf: true }
                    }
                    _ => {
                        // ".<CR>x": a bare CR after the dot.
                        self.bare_newlines += 1;
                        out.extend_from_slice(b".\r\n");
                        i -= 1;
                        State::LineStart { crlf: false }
                    }
                },
                State::Cr => match b {
                    b'\n' => {
                        out.extend_from_slice(b"\r\n");
                        State::LineStart { crlf: true }
                    }
                    _ => {
                        self.bare_newlines += 1;
                        out.extend_from_slice(b"\r\n");
                        i -= 1;
                        State::LineStart { crlf: false }
                    }
                },
            };
        }
        None
    }

    fn in_line(&mut self, b: u8, out: &mut Vec<u8>) -> State {
        match b {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare_newlines += 1;
                out.extend_from_slice(b"\r\n");
                State::LineStart { crlf: false }
            }
            _ => {
                out.push(b);
                State::Middle
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of every size; all must agree.
    fn read(input: &[u8]) -> (Vec<u8>, Option<usize>, u64) {
        let mut results = Vec::new();
        for chunk in 1..=input.len().max(1) {
            let mut r = DataReader::default();
            let mut out = Vec::new();
            let mut end = None;
            let mut offset = 0;
            for piece in input.chunks(chunk) {
                if let Some(n) = r.feed(piece, &mut out) {
                    end = Some(offset + n);
                    break;
                }
                offset += piece.len();
            }
            results.push((out, end, r.bare_newlines));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        results.pop().unwrap()
    }

    #[test]
    fn crlf_dot_crlf_ends_and_unstuffs() {
        let (out, end, bare) = read(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(end, Some(30));
        assert_eq!(bare, 0);
        // An empty message.
        assert_eq!(read(b".\r\n").1, Some(3));
    }

    #[test]
    fn smuggling_sequences_are_content() {
        for input in [
            &b"a\n.\nMAIL FROM:<x>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\nMAIL FROM:<x>\r\n",
            b"a\r.\r\nMAIL FROM:<x>\r\n",
            b"a\r\n.\rMAIL FROM:<x>\r\n",
        ] {
            let (out, end, bare) = read(input);
            assert_eq!(end, None, "{:?} ended the message", input.escape_ascii());
            assert!(bare > 0 || input.starts_with(b"a\n.\r\n"));
            // Nothing bare passes on.
            for (i, &b) in out.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(out[i - 1], b'\r');
                }
                if b == b'\r' {
                    assert_eq!(out.get(i + 1), Some(&b'\n'));
                }
            }
            assert!(out.windows(3).any(|w| w == b".\r\n"));
        }
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        let (out, end, bare) = read(b"a\nb\rc\r\n.\r\n");
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert_eq!(end, Some(10));
        assert_eq!(bare, 2);
    }
}
