//! gzip files: the one file inside read as what it is (a CSV as text, a ZIP or a document one
//! level deeper), expanded no further than what is left of `max_expanded_size` and stopped as
//! soon as it expands more than `max_compression_ratio` times, and compressed again (with its
//! name and time) when the rules changed it.

use std::io::{Read, Write};

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use super::{DocumentError, Outcome, RATIO_FLOOR, Reader, Rules, Unread};

pub(super) fn scan(
    reader: &mut Reader<'_>,
    rules: &mut dyn Rules,
    bytes: &[u8],
    place: &str,
    depth: usize,
) -> Result<Outcome, DocumentError> {
    if depth > reader.limits.max_nesting_depth {
        return Err(DocumentError::unread(place, Unread::TooDeep));
    }
    let mut decoder = MultiGzDecoder::new(bytes);
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if rules.time_is_up() {
            return Err(DocumentError::Deadline);
        }
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| DocumentError::damaged(place, format!("gzip: {e}")))?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
        let expanded = data.len() as u64;
        let ratio = expanded / bytes.len().max(1) as u64;
        if expanded > RATIO_FLOOR && ratio > reader.limits.max_compression_ratio {
            return Err(DocumentError::unread(place, Unread::Ratio(ratio)));
        }
        if expanded > reader.room() {
            return Err(DocumentError::unread(place, Unread::TooLarge));
        }
    }
    reader
        .expand(data.len() as u64)
        .map_err(|why| DocumentError::unread(place, why))?;
    let header = decoder.header();
    let stored_name = header
        .and_then(|h| h.filename())
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let mtime = header.map_or(0, |h| h.mtime());
    // The file inside is named as the header has it, else as the gzip file without `.gz`.
    let name = stored_name.clone().unwrap_or_else(|| {
        let last = place.rsplit('/').next().unwrap_or(place);
        last.strip_suffix(".gz")
            .or_else(|| last.strip_suffix(".GZ"))
            .unwrap_or(last)
            .to_owned()
    });
    let inner_place = format!("{place}/{name}");
    let inner = super::detect(&data, Some(&name));
    let outcome = if inner.is_readable() {
        reader.attachment(rules, inner, &data, &inner_place, depth + 1)?
    } else if rules.strips(inner.content_type(), &inner_place, None) {
        Outcome::Strip
    } else {
        Outcome::Unchanged
    };
    let Outcome::Rewritten(new) = outcome else {
        return Ok(outcome);
    };
    let mut builder = GzBuilder::new().mtime(mtime);
    if let Some(stored) = stored_name {
        builder = builder.filename(stored);
    }
    let mut encoder = builder.write(Vec::with_capacity(bytes.len()), Compression::fast());
    encoder
        .write_all(&new)
        .and_then(|()| encoder.finish())
        .map(Outcome::Rewritten)
        .map_err(|e| DocumentError::unread(place, Unread::Unwritable(e.to_string())))
}
