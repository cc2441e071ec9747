//! Writing the new message: the original bytes with new bytes put in at the changed ranges
//! only, and the line ending those new bytes take from the bytes around them.

use std::ops::Range;

pub(super) type Splices = Vec<(Range<usize>, Vec<u8>)>;

/// `raw[from..]` with the splices (ranges of `raw`, none before `from`) put in place.
pub(super) fn splice(raw: &[u8], from: usize, mut splices: Splices) -> Vec<u8> {
    let from = from.min(raw.len());
    splices.sort_by_key(|(r, _)| r.start);
    // A single part whose body is the whole rest: its new bytes are the result, uncopied.
    if let [(range, _)] = splices.as_slice()
        && *range == (from..raw.len())
        && let Some((_, bytes)) = splices.pop()
    {
        return bytes;
    }
    let mut out = Vec::with_capacity(raw.len() - from);
    let mut at = from;
    for (range, bytes) in splices {
        if range.start < at {
            continue;
        }
        out.extend_from_slice(&raw[at..range.start]);
        out.extend_from_slice(&bytes);
        at = range.end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

/// The line ending a piece of a message uses.
pub(super) fn eol_of(bytes: &[u8]) -> &'static str {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && bytes[i - 1] == b'\r' => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
}
