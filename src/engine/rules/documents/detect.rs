//! What a file is, by its content: the magic bytes (the `infer` crate), and for a ZIP the
//! entries that make it a document (`word/document.xml`, an OpenDocument `mimetype`). The
//! name counts only for text, which has no magic.

use std::io::{Cursor, Read};

/// A file's true type, as far as the content stage cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Word,
    Sheet,
    Slides,
    OdfText,
    OdfSheet,
    OdfSlides,
    Zip,
    /// A gzip file (one file compressed; `.gz`).
    Gzip,
    Pdf,
    /// Text, with the content type its name gives (text/plain without one).
    Text(&'static str),
    /// Anything else, by the content type its magic bytes say (or application/octet-stream).
    Other(&'static str),
}

impl Kind {
    /// The content type rules' `content_types` see.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Word => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Self::Sheet => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Self::Slides => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            Self::OdfText => "application/vnd.oasis.opendocument.text",
            Self::OdfSheet => "application/vnd.oasis.opendocument.spreadsheet",
            Self::OdfSlides => "application/vnd.oasis.opendocument.presentation",
            Self::Zip => "application/zip",
            Self::Gzip => "application/gzip",
            Self::Pdf => "application/pdf",
            Self::Text(t) => t,
            Self::Other(t) => t,
        }
    }

    /// A document or archive: something [`super::Reader`] opens.
    pub fn is_container(self) -> bool {
        !matches!(self, Self::Pdf | Self::Text(_) | Self::Other(_))
    }

    /// Something the rules can read: a container, a PDF or text.
    pub fn is_readable(self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// What `bytes`, a file named `name` (when it has one), is.
pub fn detect(bytes: &[u8], name: Option<&str>) -> Kind {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return zip_kind(bytes);
    }
    if bytes.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Kind::Gzip;
    }
    if let Some(t) = infer::get(bytes) {
        return match t.mime_type() {
            "application/pdf" => Kind::Pdf,
            "application/zip" => Kind::Zip,
            other => Kind::Other(other),
        };
    }
    let by_name = name.and_then(|n| {
        let n = n.to_ascii_lowercase();
        TEXT_NAMES
            .iter()
            .find(|(ending, _)| n.ends_with(ending))
            .map(|(_, t)| *t)
    });
    match by_name {
        Some(t) => Kind::Text(t),
        None if looks_like_text(bytes) => Kind::Text("text/plain"),
        None => Kind::Other("application/octet-stream"),
    }
}

/// Text files by their name's ending, and the content type each is given.
const TEXT_NAMES: [(&str, &str); 9] = [
    (".csv", "text/csv"),
    (".tsv", "text/tab-separated-values"),
    (".txt", "text/plain"),
    (".log", "text/plain"),
    (".md", "text/markdown"),
    (".json", "application/json"),
    (".xml", "application/xml"),
    (".html", "text/html"),
    (".htm", "text/html"),
];

/// No NUL byte and UTF-8 (up to a character cut at the end) in the first 8 KiB.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() == 8192,
    }
}

/// A ZIP's kind: the documents by their entries, anything else a plain archive.
fn zip_kind(bytes: &[u8]) -> Kind {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return Kind::Zip;
    };
    let has = |archive: &zip::ZipArchive<_>, name: &str| archive.index_for_name(name).is_some();
    if has(&archive, "[Content_Types].xml") {
        if has(&archive, "word/document.xml") {
            return Kind::Word;
        }
        if has(&archive, "xl/workbook.xml") {
            return Kind::Sheet;
        }
        if has(&archive, "ppt/presentation.xml") {
            return Kind::Slides;
        }
    }
    let Some(index) = archive.index_for_name("mimetype") else {
        return Kind::Zip;
    };
    let mut mimetype = Vec::new();
    let read = archive
        .by_index(index)
        .ok()
        .and_then(|f| f.take(100).read_to_end(&mut mimetype).ok());
    match (read, mimetype.as_slice()) {
        (Some(_), b"application/vnd.oasis.opendocument.text") => Kind::OdfText,
        (Some(_), b"application/vnd.oasis.opendocument.spreadsheet") => Kind::OdfSheet,
        (Some(_), b"application/vnd.oasis.opendocument.presentation") => Kind::OdfSlides,
        _ => Kind::Zip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_content() {
        let mut program = b"MZ\x90\x00".to_vec();
        program.resize(512, 0);
        assert_eq!(
            detect(&program, Some("invoice.pdf")),
            Kind::Other("application/vnd.microsoft.portable-executable")
        );
        assert_eq!(detect(b"%PDF-1.7\n", Some("a.txt")), Kind::Pdf);
        assert_eq!(
            detect(b"a,b\r\n1,2\r\n", Some("x.CSV")),
            Kind::Text("text/csv")
        );
        assert_eq!(detect(b"plain words", None), Kind::Text("text/plain"));
        assert_eq!(
            detect(b"\x00\x01\x02binary", None),
            Kind::Other("application/octet-stream")
        );
    }
}
