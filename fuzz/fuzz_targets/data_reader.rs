//! The DATA reader on any input, cut into pieces anywhere: the same message and end however
//! the input is cut, no bare CR or LF in the output, and the end only right after CRLF.CRLF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::proxy::data::DataReader;

fn read(input: &[u8], cut: usize) -> (Vec<u8>, Option<usize>) {
    let mut reader = DataReader::default();
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in input.chunks(cut.max(1)) {
        if let Some(n) = reader.feed(piece, &mut out) {
            return (out, Some(offset + n));
        }
        offset += piece.len();
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = read(input, input.len());
    assert_eq!(whole, read(input, cut as usize));
    let (out, end) = whole;
    for (i, &b) in out.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && out[i - 1] == b'\r', "bare LF in output"),
            b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR in output"),
            _ => {}
        }
    }
    if let Some(end) = end {
        assert!(end >= 3 && &input[end - 3..end] == b".\r\n");
        assert!(end == 3 || (end >= 5 && &input[end - 5..end - 3] == b"\r\n"));
    }
});
