//! The message as the engine holds it: raw RFC 5322 bytes, in memory up to a bound and spilled
//! to an unnamed temporary file beyond it, never larger than the configured maximum size.

use std::borrow::Cow;
use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::reply::SmtpReply;

/// Limits on one message, from `[scan]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Bytes held in memory before the message moves to a temporary file.
    pub memory_limit: usize,
    /// Largest message accepted at all, in bytes.
    pub max_message_size: u64,
    /// Most header fields in a message's header section (`max_header_fields`).
    pub max_header_fields: usize,
    /// Largest header section, in bytes (`max_header_size`).
    pub max_header_size: u64,
    /// Directory for temporary files of large messages.
    pub spool_directory: PathBuf,
}

impl MessageLimits {
    /// The refusal of a message of `size` bytes (announced with SIZE, or counted as it
    /// arrives), when it is larger than `max_message_size`.
    pub fn size_refusal(&self, size: u64) -> Option<SmtpReply> {
        let max = self.max_message_size;
        (size > max).then(|| {
            SmtpReply::new(
                552,
                Some("5.3.4"),
                &format!("Message size exceeds fixed limit of {max} bytes"),
            )
            .expect("static reply is valid")
        })
    }
}

/// Why appending to a message failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("message exceeds max_message_size ({limit} bytes)")]
    TooBig { limit: u64 },
    #[error("message header has more than max_header_fields ({limit}) fields")]
    TooManyHeaderFields { limit: usize },
    #[error("message header exceeds max_header_size ({limit} bytes)")]
    HeaderTooBig { limit: u64 },
    #[error("cannot spool message to a temporary file in {dir}: {source}")]
    Spool {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A message being received, bounded in memory.
#[derive(Debug)]
pub struct MessageBuffer {
    limits: MessageLimits,
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
    /// Some byte is not ASCII (8BITMIME is needed to send it on).
    eight_bit: bool,
    /// The header section, counted as it arrives.
    header: HeaderScan,
}

impl MessageBuffer {
    pub fn new(limits: MessageLimits) -> Self {
        Self {
            limits,
            memory: Vec::new(),
            file: None,
            len: 0,
            eight_bit: false,
            header: HeaderScan::default(),
        }
    }

    /// True when some byte of the message is not ASCII.
    pub fn is_eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// The whole message, when it is held in memory (not spooled).
    pub fn in_memory(&self) -> Option<&[u8]> {
        self.file.is_none().then_some(self.memory.as_slice())
    }

    /// A handle on the spool file with every write flushed, to read at offsets (its own
    /// position is not shared with ours); `None` when the message is in memory.
    pub async fn spool_handle(&mut self) -> Result<Option<std::fs::File>, BufferError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        let spool_err = |source| BufferError::Spool {
            dir: self.limits.spool_directory.clone(),
            source,
        };
        file.flush().await.map_err(spool_err)?;
        let handle = file.try_clone().await.map_err(spool_err)?;
        Ok(Some(handle.into_std().await))
    }

    /// Size in bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before any byte arrived.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True once the message has moved to a temporary file.
    pub fn is_spooled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends bytes, moving to a temporary file when the memory bound is passed. The header
    /// section is counted on the way: too many fields or too many bytes refuse the message,
    /// at a cost linear in its size.
    pub async fn append(&mut self, data: &[u8]) -> Result<(), BufferError> {
        let new_len = self.len + data.len() as u64;
        if new_len > self.limits.max_message_size {
            return Err(BufferError::TooBig {
                limit: self.limits.max_message_size,
            });
        }
        if self.header.feed(data) {
            if self.header.fields > self.limits.max_header_fields {
                return Err(BufferError::TooManyHeaderFields {
                    limit: self.limits.max_header_fields,
                });
            }
            if self.header.bytes > self.limits.max_header_size {
                return Err(BufferError::HeaderTooBig {
                    limit: self.limits.max_header_size,
                });
            }
        }
        if self.file.is_none() && self.memory.len() + data.len() > self.limits.memory_limit {
            let mut file = self.spool_file().await?;
            let memory = std::mem::take(&mut self.memory);
            self.write_spool(&mut file, &memory).await?;
            self.file = Some(file);
        }
        match self.file.take() {
            Some(mut file) => {
                let written = self.write_spool(&mut file, data).await;
                self.file = Some(file);
                written?;
            }
            None => self.memory.extend_from_slice(data),
        }
        self.len = new_len;
        self.eight_bit |= !data.is_ascii();
        Ok(())
    }

    /// Reads the whole message back. Only called when a rule needs the content.
    pub async fn contents(&mut self) -> Result<Vec<u8>, BufferError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(self.memory.clone());
        };
        let dir = &self.limits.spool_directory;
        let spool_err = |source| BufferError::Spool {
            dir: dir.clone(),
            source,
        };
        let mut out = Vec::with_capacity(self.len as usize);
        file.flush().await.map_err(spool_err)?;
        file.seek(SeekFrom::Start(0)).await.map_err(spool_err)?;
        file.read_to_end(&mut out).await.map_err(spool_err)?;
        file.seek(SeekFrom::End(0)).await.map_err(spool_err)?;
        Ok(out)
    }

    /// The header section, up to and including the empty line that ends it (all of a
    /// message without one), read without the body.
    pub async fn header_section(&mut self) -> Result<Cow<'_, [u8]>, BufferError> {
        let Some(file) = self.file.as_mut() else {
            // In memory: borrowed, so that the look at every message's header copies nothing.
            let end = header_section_len(&self.memory, 0).unwrap_or(self.memory.len());
            return Ok(Cow::Borrowed(&self.memory[..end]));
        };
        let dir = &self.limits.spool_directory;
        let spool_err = |source| BufferError::Spool {
            dir: dir.clone(),
            source,
        };
        file.flush().await.map_err(spool_err)?;
        file.seek(SeekFrom::Start(0)).await.map_err(spool_err)?;
        let mut out = Vec::new();
        let mut piece = vec![0; 64 * 1024];
        let end = loop {
            let n = file.read(&mut piece).await.map_err(spool_err)?;
            // The line end before an empty line may be among the bytes already searched.
            let from = out.len().saturating_sub(2);
            out.extend_from_slice(&piece[..n]);
            if let Some(len) = header_section_len(&out, from) {
                break len;
            }
            if n == 0 {
                break out.len();
            }
        };
        file.seek(SeekFrom::End(0)).await.map_err(spool_err)?;
        out.truncate(end);
        Ok(Cow::Owned(out))
    }

    async fn spool_file(&self) -> Result<File, BufferError> {
        let dir = self.limits.spool_directory.clone();
        let opened = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || tempfile::tempfile_in(dir)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        opened
            .map(File::from_std)
            .map_err(|source| BufferError::Spool { dir, source })
    }

    async fn write_spool(&self, file: &mut File, data: &[u8]) -> Result<(), BufferError> {
        file.write_all(data)
            .await
            .map_err(|source| BufferError::Spool {
                dir: self.limits.spool_directory.clone(),
                source,
            })
    }
}

/// Counts the header section as bytes arrive in pieces of any size: its fields (lines that
/// start with a field name and a colon) and its bytes, until the empty line, or the first line
/// that is neither a field nor a continuation, where the body begins (as Postfix's cleanup
/// reads it). A first line `From ` (mbox) counts as header.
#[derive(Debug, Default)]
struct HeaderScan {
    state: ScanState,
    fields: usize,
    bytes: u64,
    /// Past the first line.
    past_first_line: bool,
    /// Bytes of the first line that matched `From ` so far.
    mbox_from: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    #[default]
    LineStart,
    /// A CR at the start of a line: an empty line if LF follows.
    LineStartCr,
    /// In a field name, before its colon.
    Name,
    /// In a field's value or a continuation line.
    Value,
    /// The header section has ended.
    Done,
}

impl HeaderScan {
    /// Counts `data`; true while (or when) the header section was being read.
    fn feed(&mut self, data: &[u8]) -> bool {
        if self.state == ScanState::Done {
            return false;
        }
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                ScanState::Done => break,
                ScanState::LineStart => {
                    match b {
                        b'\n' => self.state = ScanState::Done,
                        b'\r' => self.state = ScanState::LineStartCr,
                        b' ' | b'\t' => self.state = ScanState::Value,
                        _ => self.state = ScanState::Name,
                    }
                    if matches!(self.state, ScanState::Value | ScanState::Name) {
                        continue;
                    }
                }
                ScanState::LineStartCr => {
                    self.state = ScanState::Done;
                    if b != b'\n' {
                        break;
                    }
                }
                ScanState::Name
                    if !self.past_first_line
                        && self.mbox_from < 5
                        && b == b"From "[self.mbox_from] =>
                {
                    self.mbox_from += 1;
                    if self.mbox_from == 5 {
                        self.state = ScanState::Value;
                    }
                }
                ScanState::Name => match b {
                    b':' => {
                        self.fields += 1;
                        self.state = ScanState::Value;
                    }
                    33..=126 => {}
                    // Not a field: the body has begun.
                    _ => {
                        self.state = ScanState::Done;
                        break;
                    }
                },
                ScanState::Value => match memchr::memchr(b'\n', &data[i..]) {
                    Some(at) => {
                        i += at;
                        self.bytes += at as u64;
                        self.state = ScanState::LineStart;
                        self.past_first_line = true;
                    }
                    None => {
                        self.bytes += (data.len() - i) as u64;
                        return true;
                    }
                },
            }
            self.bytes += 1;
            i += 1;
        }
        true
    }
}

/// Length of the header section of `raw` through its ending empty line (CRLF or LF), looking
/// only at line ends from offset `from` on (an empty first line counts when `from` is 0), or
/// `None` when there is no empty line there yet.
fn header_section_len(raw: &[u8], from: usize) -> Option<usize> {
    if from == 0 {
        if raw.starts_with(b"\r\n") {
            return Some(2);
        }
        if raw.starts_with(b"\n") {
            return Some(1);
        }
    }
    memchr::memchr_iter(b'\n', raw.get(from..)?).find_map(|at| {
        let at = from + at;
        match &raw[at + 1..] {
            [b'\r', b'\n', ..] => Some(at + 3),
            [b'\n', ..] => Some(at + 2),
            _ => None,
        }
    })
}

/// The longest field value [`first_header_field`] gives (RFC 5322's line limit).
const MAX_FIELD_VALUE: usize = 998;

/// The value of the first field called `name` in a header section, unfolded and trimmed, at
/// most 998 bytes; `None` when there is none.
pub fn first_header_field(raw: &[u8], name: &str) -> Option<String> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if !line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
        {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        for next in lines.by_ref() {
            if !next.starts_with(b" ") && !next.starts_with(b"\t") {
                break;
            }
            value.extend_from_slice(next);
        }
        let mut value = String::from_utf8_lossy(value.trim_ascii()).into_owned();
        if value.len() > MAX_FIELD_VALUE {
            let mut end = MAX_FIELD_VALUE;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
        }
        return Some(value);
    }
    None
}

/// The header fields of a raw message, in order, with folded values unfolded: (name, value).
/// Reading stops at the first empty line.
pub fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = fields.last_mut() {
                value.push_str(&text);
            }
        } else if let Some((name, value)) = text.split_once(':') {
            fields.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {

    #[test]
    fn first_header_field_unfolds_and_stops_at_the_body() {
        let raw = b"From: a@b\r\nmessage-id:\r\n <x@y.example>\r\nMessage-ID: <second>\r\n\r\nMessage-ID: <body>\r\n";
        assert_eq!(
            first_header_field(raw, "Message-ID").as_deref(),
            Some("<x@y.example>")
        );
        assert_eq!(
            first_header_field(b"From: a\r\n\r\nMessage-ID: <b>\r\n", "Message-ID"),
            None
        );
    }
    use super::*;

    fn scan(pieces: &[&[u8]]) -> HeaderScan {
        let mut h = HeaderScan::default();
        for p in pieces {
            h.feed(p);
        }
        h
    }

    #[test]
    fn header_fields_are_counted_in_pieces_of_any_size() {
        let m: &[u8] = b"From x@y Sat Jan  3 01:05:34 1996\r\nA: 1\r\nB: 2\r\n folded\r\nC:3\r\n\r\nD: not a header\r\n";
        let whole = scan(&[m]);
        assert_eq!(whole.fields, 3);
        assert_eq!(whole.state, ScanState::Done);
        let header_len = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() as u64 + 4;
        assert_eq!(whole.bytes, header_len);
        for size in 1..8 {
            let pieces: Vec<&[u8]> = m.chunks(size).collect();
            let h = scan(&pieces);
            assert_eq!((h.fields, h.bytes), (3, header_len), "pieces of {size}");
        }
        // A line that is not a field ends the header, as the body's first line.
        assert_eq!(scan(&[b"A: 1\r\nnot a field\r\nB: 2\r\n"]).fields, 1);
        assert_eq!(scan(&[b"A: 1\n\nB: 2\n"]).fields, 1);
    }

    #[tokio::test]
    async fn too_many_header_fields_refuse_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MessageBuffer::new(limits(1 << 20, 1 << 30, dir.path().to_path_buf()));
        let mut result = Ok(());
        for i in 0..1001 {
            result = m.append(format!("X-{i}: v\r\n").as_bytes()).await;
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(
            result,
            Err(BufferError::TooManyHeaderFields { limit: 1000 })
        ));
        let mut m = MessageBuffer::new(limits(1 << 20, 1 << 30, dir.path().to_path_buf()));
        let long = format!("X: {}\r\n", "v".repeat(1 << 20));
        assert!(matches!(
            m.append(long.as_bytes()).await,
            Err(BufferError::HeaderTooBig { .. })
        ));
        // The body is not counted.
        let mut m = MessageBuffer::new(limits(1 << 20, 1 << 30, dir.path().to_path_buf()));
        m.append(b"Subject: s\r\n\r\n").await.unwrap();
        for _ in 0..2000 {
            m.append(b"X: a body line that looks like a field\r\n")
                .await
                .unwrap();
        }
    }

    #[test]
    fn the_header_section_ends_at_the_first_empty_line() {
        assert_eq!(header_section_len(b"A: b\r\n\r\nbody\r\n\r\n", 0), Some(8));
        assert_eq!(header_section_len(b"A: b\n\nbody", 0), Some(6));
        assert_eq!(header_section_len(b"\r\nbody", 0), Some(2));
        assert_eq!(header_section_len(b"A: b\r\nC: d\r\n", 0), None);
        // From the middle: a line end before `from` is not mistaken for an empty line.
        assert_eq!(header_section_len(b"A: b\r\nC: d\r\n", 4), None);
        assert_eq!(header_section_len(b"A: b\r\n\r\n", 4), Some(8));
    }

    #[tokio::test]
    async fn a_spooled_header_is_read_without_the_body() {
        let mut m = MessageBuffer::new(MessageLimits {
            memory_limit: 16,
            max_message_size: 1 << 30,
            max_header_fields: 10_000,
            max_header_size: 1 << 20,
            spool_directory: std::env::temp_dir(),
        });
        let mut header = String::new();
        for i in 0..5000 {
            header.push_str(&format!("X-Field-{i}: value\r\n"));
        }
        m.append(header.as_bytes()).await.unwrap();
        m.append(b"\r\n").await.unwrap();
        m.append(&vec![b'x'; 300_000]).await.unwrap();
        assert!(m.is_spooled());
        let section = m.header_section().await.unwrap();
        assert_eq!(section.len(), header.len() + 2);
        // Appending still goes to the end afterwards.
        m.append(b"\r\nend\r\n").await.unwrap();
        assert!(m.contents().await.unwrap().ends_with(b"x\r\nend\r\n"));
    }

    #[test]
    fn header_fields_are_unfolded_and_stop_at_the_body() {
        let raw = b"Subject: a\r\n folded\r\nTo: b\r\n\r\nNot: a header\r\n";
        assert_eq!(
            super::header_fields(raw),
            [
                ("Subject".to_owned(), " a folded".to_owned()),
                ("To".to_owned(), " b".to_owned())
            ]
        );
    }

    fn limits(memory_limit: usize, max: u64, dir: PathBuf) -> MessageLimits {
        MessageLimits {
            memory_limit,
            max_message_size: max,
            max_header_fields: 1000,
            max_header_size: 1 << 20,
            spool_directory: dir,
        }
    }

    #[tokio::test]
    async fn small_message_stays_in_memory() {
        let mut b = MessageBuffer::new(limits(100, 1000, std::env::temp_dir()));
        b.append(b"Subject: x\r\n\r\n").await.unwrap();
        b.append(b"hello\r\n").await.unwrap();
        assert!(!b.is_spooled());
        assert_eq!(b.contents().await.unwrap(), b"Subject: x\r\n\r\nhello\r\n");
    }

    #[tokio::test]
    async fn large_message_spills_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = MessageBuffer::new(limits(10, 1000, dir.path().to_owned()));
        b.append(b"0123456789").await.unwrap();
        assert!(!b.is_spooled());
        b.append(b"abc").await.unwrap();
        assert!(b.is_spooled());
        b.append(b"def").await.unwrap();
        assert_eq!(b.len(), 16);
        assert_eq!(b.contents().await.unwrap(), b"0123456789abcdef");
        // Reading does not disturb further appends.
        b.append(b"!").await.unwrap();
        assert_eq!(b.contents().await.unwrap(), b"0123456789abcdef!");
    }

    #[tokio::test]
    async fn refuses_past_max_size() {
        let mut b = MessageBuffer::new(limits(10, 12, std::env::temp_dir()));
        b.append(b"0123456789").await.unwrap();
        let err = b.append(b"abc").await.unwrap_err();
        assert!(matches!(err, BufferError::TooBig { limit: 12 }), "{err}");
    }

    #[tokio::test]
    async fn missing_spool_directory_is_an_error_naming_it() {
        let mut b = MessageBuffer::new(limits(4, 100, "/nonexistent/postern-spool".into()));
        let err = b.append(b"0123456789").await.unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/postern-spool"),
            "{err}"
        );
    }
}
