//! ZIP containers: plain archives, whose entries are read as what they are (a CSV as text, a
//! document as a document, an archive as an archive, one level deeper), and the Office and
//! OpenDocument formats, whose XML parts that hold text are read with the grammar of their
//! kind. Every entry is counted against the limits before it is expanded, and expanded no
//! further than what is left of `max_expanded_size`. A changed archive is written anew in the
//! same entry order, every unchanged entry's compressed bytes copied as they were.

use std::io::{BufWriter, Cursor, Read, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::xml::{self, Grammar, Pieces};
use super::{DocumentError, Kind, Outcome, RATIO_FLOOR, Reader, Rules, Unread};

/// The grammar of a document's entry that holds text the reader sees; `None` for the rest
/// (relationships, styles of OOXML, images), which are copied untouched.
fn grammar(kind: Kind, name: &str) -> Option<&'static Grammar> {
    let xml = name.ends_with(".xml");
    let under = |dir: &str| xml && name.starts_with(dir);
    match kind {
        Kind::Word | Kind::Sheet | Kind::Slides if name == "docProps/core.xml" => {
            Some(&xml::PROPERTIES)
        }
        Kind::Word
            if under("word/document")
                || under("word/header")
                || under("word/footer")
                || under("word/footnotes")
                || under("word/endnotes")
                || under("word/comments") =>
        {
            Some(&xml::WORD)
        }
        Kind::Sheet
            if name == "xl/sharedStrings.xml"
                || under("xl/worksheets/sheet")
                || under("xl/comments") =>
        {
            Some(&xml::SHEET)
        }
        Kind::Slides
            if under("ppt/slides/slide") || under("ppt/notesSlides/") || under("ppt/comments/") =>
        {
            Some(&xml::SLIDES)
        }
        Kind::OdfText | Kind::OdfSheet | Kind::OdfSlides => match name {
            "content.xml" | "styles.xml" => Some(&xml::ODF),
            "meta.xml" => Some(&xml::PROPERTIES),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the ZIP container `bytes` of `kind` at nesting `depth`.
pub(super) fn scan(
    reader: &mut Reader<'_>,
    rules: &mut dyn Rules,
    kind: Kind,
    bytes: &[u8],
    place: &str,
    depth: usize,
) -> Result<Outcome, DocumentError> {
    if depth > reader.limits.max_nesting_depth {
        return Err(DocumentError::unread(place, Unread::TooDeep));
    }
    let mut archive =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| DocumentError::damaged(place, e))?;
    if archive.has_duplicate_names() {
        return Err(DocumentError::unread(
            place,
            Unread::Ambiguous("entries share a name; readers differ on which one they show"),
        ));
    }
    if archive.len() > reader.limits.max_archive_entries {
        return Err(DocumentError::unread(
            place,
            Unread::TooManyEntries(archive.len()),
        ));
    }
    let ctype = kind.content_type();
    let mut changed: Vec<(usize, NewEntry)> = Vec::new();
    for index in 0..archive.len() {
        if rules.time_is_up() {
            return Err(DocumentError::Deadline);
        }
        if rules.refused() {
            return Ok(Outcome::Unchanged);
        }
        let (name, encrypted, size, compressed) = {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| DocumentError::damaged(place, e))?;
            if entry.is_dir() {
                continue;
            }
            let name = entry
                .name()
                .map_err(|e| DocumentError::damaged(place, e))?
                .into_owned();
            (
                name,
                entry.encrypted(),
                entry.size(),
                entry.compressed_size(),
            )
        };
        let entry_place = format!("{place}/{name}");
        let grammar = grammar(kind, &name);
        if kind == Kind::Zip {
            let file_name = name.rsplit('/').next().unwrap_or(&name);
            if rules.strips_name(ctype, &entry_place, file_name) {
                return Ok(Outcome::Strip);
            }
        } else if grammar.is_none() {
            continue;
        }
        if encrypted {
            return Err(DocumentError::unread(&entry_place, Unread::Encrypted));
        }
        let ratio = size / compressed.max(1);
        if size > RATIO_FLOOR && ratio > reader.limits.max_compression_ratio {
            return Err(DocumentError::unread(&entry_place, Unread::Ratio(ratio)));
        }
        if size > reader.room() {
            return Err(DocumentError::unread(&entry_place, Unread::TooLarge));
        }
        let data = {
            let entry = archive
                .by_index(index)
                .map_err(|e| DocumentError::damaged(&entry_place, e))?;
            // The declared size (bounded by what is left of the budget): one allocation for a
            // truthful entry, none larger than the budget for a lying one.
            let mut data = Vec::with_capacity(size.min(reader.room()) as usize);
            entry
                .take(reader.room().saturating_add(1))
                .read_to_end(&mut data)
                .map_err(|e| DocumentError::damaged(&entry_place, e))?;
            data
        };
        let expanded = data.len() as u64;
        reader
            .expand(expanded)
            .map_err(|why| DocumentError::unread(&entry_place, why))?;
        let ratio = expanded / compressed.max(1);
        if expanded > RATIO_FLOOR && ratio > reader.limits.max_compression_ratio {
            return Err(DocumentError::unread(&entry_place, Unread::Ratio(ratio)));
        }
        let part = match grammar {
            // A worksheet holds text only in inline strings (the rest is in the shared strings):
            // without one there is nothing to read, and its markup (most of a large workbook)
            // is not parsed.
            Some(_)
                if name.starts_with("xl/worksheets/")
                    && memchr::memmem::find(&data, b"inlineStr").is_none() =>
            {
                Outcome::Unchanged
            }
            Some(grammar) => match document_part(rules, ctype, &data, grammar, &entry_place)? {
                Part::Unchanged => Outcome::Unchanged,
                Part::Strip => Outcome::Strip,
                Part::Changed(pieces, text) => {
                    changed.push((index, NewEntry::Part { data, pieces, text }));
                    continue;
                }
            },
            None => {
                let inner = super::detect(&data, Some(&name));
                if inner.is_readable() {
                    reader.attachment(rules, inner, &data, &entry_place, depth + 1)?
                } else if rules.strips(inner.content_type(), &entry_place, None) {
                    Outcome::Strip
                } else {
                    Outcome::Unchanged
                }
            }
        };
        match part {
            Outcome::Unchanged => {}
            // An entry to strip takes its archive with it: the attachment goes as a whole.
            Outcome::Strip => return Ok(Outcome::Strip),
            Outcome::Rewritten(new) => changed.push((index, NewEntry::Bytes(new))),
        }
    }
    if changed.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    write(&mut archive, changed, bytes.len())
        .map(Outcome::Rewritten)
        .map_err(|e| DocumentError::unread(place, Unread::Unwritable(e.to_string())))
}

/// A changed entry of an archive: new bytes (a file rewritten inside it), or a document's
/// XML part with its changed text, written into the archive piece by piece.
enum NewEntry {
    Bytes(Vec<u8>),
    Part {
        data: Vec<u8>,
        pieces: Pieces,
        text: String,
    },
}

/// What the rules made of one XML part of a document.
enum Part {
    Unchanged,
    /// A `strip_attachment` rule matched its text.
    Strip,
    /// Its pieces and the new text.
    Changed(Pieces, String),
}

/// One XML part of a document through the rules.
fn document_part(
    rules: &mut dyn Rules,
    ctype: &str,
    data: &[u8],
    grammar: &Grammar,
    place: &str,
) -> Result<Part, DocumentError> {
    let (mut pieces, text) =
        Pieces::read(data, grammar).map_err(|e| DocumentError::damaged(place, e))?;
    if text.trim().is_empty() {
        return Ok(Part::Unchanged);
    }
    if rules.strips(ctype, place, Some(&text)) {
        return Ok(Part::Strip);
    }
    let ran = rules.run(ctype, place, &text, false, &mut |found| {
        pieces.replace(found);
    });
    Ok(match ran.new {
        Some(new) if pieces.changed() => Part::Changed(pieces, new),
        _ => Part::Unchanged,
    })
}

impl NewEntry {
    /// About how long the entry is (for the ZIP64 decision).
    fn len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Part { data, .. } => data.len(),
        }
    }
}

/// The archive again, entries in the same order: the `changed` ones (by index) with their
/// new content, compressed as they were (stored stays stored), the others copied raw.
fn write(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    mut changed: Vec<(usize, NewEntry)>,
    size: usize,
) -> zip::result::ZipResult<Vec<u8>> {
    let mut out = ZipWriter::new(Cursor::new(Vec::with_capacity(size)));
    changed.reverse();
    for index in 0..archive.len() {
        if changed.last().is_some_and(|(i, _)| *i == index) {
            let (_, new) = changed.pop().expect("looked at");
            let entry = archive.by_index_raw(index)?;
            let method = match entry.compression() {
                CompressionMethod::Stored => CompressionMethod::Stored,
                _ => CompressionMethod::Deflated,
            };
            // Deflate's fastest level: compressing the changed part was a third of the whole
            // rewrite at the default level (benches/documents.rs), for a few per cent of size.
            let mut options = SimpleFileOptions::default()
                .compression_method(method)
                .compression_level((method == CompressionMethod::Deflated).then_some(1))
                .large_file(new.len() as u64 >= u64::from(u32::MAX));
            if let Some(time) = entry.last_modified() {
                options = options.last_modified_time(time);
            }
            let name = entry.name()?.into_owned();
            drop(entry);
            out.start_file(name, options)?;
            match new {
                NewEntry::Bytes(bytes) => out.write_all(&bytes)?,
                // In large writes: the deflate encoder zero-fills its 32 KiB output buffer on
                // every write, which for a write per changed piece cost more than compressing.
                NewEntry::Part { data, pieces, text } => {
                    let mut buffered = BufWriter::with_capacity(1 << 18, &mut out);
                    pieces.write_to(&data, &text, &mut buffered)?;
                    buffered.flush()?;
                }
            }
        } else {
            out.raw_copy_file(archive.by_index_raw(index)?)?;
        }
    }
    out.set_comment(String::from_utf8_lossy(archive.comment()).into_owned())?;
    Ok(out.finish()?.into_inner())
}
