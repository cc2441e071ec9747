//! Content stage building blocks: detectors of sensitive data and the transforms that protect
//! it. Rulesets (extract rules over subject, body, attachments and filenames, MIME-correct
//! rewriting) are built on these; they are not wired into sessions yet.

pub mod detectors;
pub mod transforms;
