//! The message as it goes to a target: read in pieces of whole lines, from memory or from the
//! spool file, so that a large message is never held whole on its way out; each piece has its
//! long lines broken for the target's line limit.

use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::stream::Stop;

use crate::engine::lines::break_long_lines;

/// About this many bytes are read and written at a time (more when one line is longer).
const PIECE: usize = 64 * 1024;

/// A message to send: CRLF line ends, ending with CRLF, not dot-stuffed.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Memory(&'a [u8]),
    /// A spool file, read at offsets from 0 to `len` (each reading has its own position).
    File {
        file: &'a std::fs::File,
        len: u64,
        /// Some byte is not ASCII.
        eight_bit: bool,
    },
}

impl Body<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(m) => m.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when some byte is not ASCII (the target must offer 8BITMIME).
    pub fn is_eight_bit(&self) -> bool {
        match self {
            Body::Memory(m) => !m.is_ascii(),
            Body::File { eight_bit, .. } => *eight_bit,
        }
    }

    /// The message in pieces of whole lines, each with no line longer than `line_limit`
    /// (0: no limit), counting the breaks made in `breaks`; the final CRLF is left out (the
    /// end-of-data sequence brings its own).
    ///
    /// A spool file that cannot be read ends the pieces early with the error in `unreadable`
    /// and `stop` pulled: lettre writes the end-of-data dot after its last piece whatever
    /// happened, and a truncated message must never be committed, so the connection's writing
    /// ends there (see [`Stop`]).
    pub(super) fn pieces<'b>(
        &'b self,
        line_limit: usize,
        breaks: &'b AtomicUsize,
        stop: &'b Stop,
        unreadable: &'b OnceLock<String>,
    ) -> Pieces<'b> {
        Pieces {
            body: self,
            offset: 0,
            line_limit,
            breaks,
            stop,
            unreadable,
        }
    }
}

pub(super) struct Pieces<'b> {
    body: &'b Body<'b>,
    offset: u64,
    line_limit: usize,
    breaks: &'b AtomicUsize,
    stop: &'b Stop,
    unreadable: &'b OnceLock<String>,
}

impl<'b> Iterator for Pieces<'b> {
    type Item = Cow<'b, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.body.len();
        if self.offset >= len {
            return None;
        }
        let piece: Cow<'b, [u8]> = match *self.body {
            Body::Memory(m) => {
                let rest = &m[self.offset as usize..];
                Cow::Borrowed(&rest[..whole_lines(rest, PIECE)])
            }
            Body::File { file, .. } => match read_lines(file, self.offset, len) {
                Ok(lines) => Cow::Owned(lines),
                Err(e) => {
                    self.stop.pull();
                    let _ = self.unreadable.set(format!(
                        "cannot read the spooled message back at offset {}: {e}",
                        self.offset
                    ));
                    return None;
                }
            },
        };
        self.offset += piece.len() as u64;
        let piece = if self.offset == len {
            match piece {
                Cow::Borrowed(p) => Cow::Borrowed(p.strip_suffix(b"\r\n").unwrap_or(p)),
                Cow::Owned(mut p) => {
                    if p.ends_with(b"\r\n") {
                        p.truncate(p.len() - 2);
                    }
                    Cow::Owned(p)
                }
            }
        } else {
            piece
        };
        let (broken, n) = break_long_lines(&piece, self.line_limit);
        if n == 0 {
            return Some(piece);
        }
        self.breaks.fetch_add(n, Ordering::Relaxed);
        Some(Cow::Owned(broken.into_owned()))
    }
}

/// Length of the first piece of `rest`: the whole lines within `size` bytes, or the first
/// line when it is longer (or all of `rest`).
fn whole_lines(rest: &[u8], size: usize) -> usize {
    if rest.len() <= size {
        return rest.len();
    }
    if let Some(at) = memchr::memrchr(b'\n', &rest[..size]) {
        return at + 1;
    }
    match memchr::memchr(b'\n', &rest[size..]) {
        Some(at) => size + at + 1,
        None => rest.len(),
    }
}

/// The next piece of whole lines from `offset` of a spool file of `len` bytes.
fn read_lines(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(PIECE);
    let mut at = offset;
    loop {
        let want = PIECE.min((len - at) as usize);
        let start = out.len();
        out.resize(start + want, 0);
        file.read_exact_at(&mut out[start..], at)?;
        at += want as u64;
        if at == len {
            return Ok(out);
        }
        if let Some(nl) = memchr::memrchr(b'\n', &out[start..]) {
            // Whole lines only: what follows the last line end is read again next time.
            out.truncate(start + nl + 1);
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn message(lines: usize, width: usize) -> Vec<u8> {
        let mut m = Vec::new();
        for i in 0..lines {
            m.extend_from_slice(format!("{i:06}").as_bytes());
            m.extend(std::iter::repeat_n(b'x', width));
            m.extend_from_slice(b"\r\n");
        }
        m
    }

    fn joined(body: &Body, limit: usize) -> (Vec<Vec<u8>>, usize) {
        let breaks = AtomicUsize::new(0);
        let (stop, unreadable) = (Stop::default(), OnceLock::new());
        let pieces: Vec<Vec<u8>> = body
            .pieces(limit, &breaks, &stop, &unreadable)
            .map(|p| p.into_owned())
            .collect();
        assert!(!stop.is_pulled() && unreadable.get().is_none());
        (pieces, breaks.load(Ordering::Relaxed))
    }

    /// A spool file shorter than the message it should hold (read at an offset past its end)
    /// ends the pieces early, says why and pulls the stop, so that the message is never
    /// ended.
    #[test]
    fn a_spool_file_that_cannot_be_read_ends_the_pieces_and_pulls_the_stop() {
        let m = message(5000, 70);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&m[..PIECE * 2]).unwrap();
        let body = Body::File {
            file: &file,
            len: m.len() as u64,
            eight_bit: false,
        };
        let breaks = AtomicUsize::new(0);
        let (stop, unreadable) = (Stop::default(), OnceLock::new());
        let pieces: Vec<_> = body.pieces(0, &breaks, &stop, &unreadable).collect();
        assert!(!pieces.is_empty() && pieces.concat().len() <= PIECE * 2);
        assert!(stop.is_pulled());
        let why = unreadable.get().expect("the reason is kept");
        assert!(
            why.starts_with("cannot read the spooled message back at offset"),
            "{why}"
        );
    }

    #[test]
    fn memory_and_file_give_the_same_whole_line_pieces() {
        let m = message(5000, 70);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&m).unwrap();
        let from_memory = joined(&Body::Memory(&m), 0).0;
        let from_file = joined(
            &Body::File {
                file: &file,
                len: m.len() as u64,
                eight_bit: false,
            },
            0,
        )
        .0;
        assert_eq!(from_memory, from_file);
        assert!(from_memory.len() > 5, "several pieces");
        for p in &from_memory[..from_memory.len() - 1] {
            assert!(p.ends_with(b"\r\n") && p.len() < PIECE + 80);
        }
        // The last piece leaves out the final CRLF.
        assert_eq!(from_memory.concat(), m[..m.len() - 2]);
    }

    #[test]
    fn long_lines_are_broken_across_pieces_as_in_one_piece() {
        let m = message(300, 1500);
        let (pieces, breaks) = joined(&Body::Memory(&m), 1000);
        let (whole, whole_breaks) = break_long_lines(&m[..m.len() - 2], 1000);
        assert_eq!(pieces.concat(), whole.as_ref());
        assert_eq!(breaks, whole_breaks);
        assert_eq!(breaks, 300);
    }

    #[test]
    fn a_line_longer_than_a_piece_is_one_piece() {
        let mut m = vec![b'a'; PIECE * 2 + 10];
        m.extend_from_slice(b"\r\nend\r\n");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&m).unwrap();
        let body = Body::File {
            file: &file,
            len: m.len() as u64,
            eight_bit: false,
        };
        let (pieces, _) = joined(&body, 0);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces.concat(), m[..m.len() - 2]);
    }
}
