//! How CPython sees a file name.
//!
//! The reference implementation handles file names as Python `str` values,
//! decoded from the file system's bytes as UTF-8 with the `surrogateescape`
//! error handler: every byte that is not part of valid UTF-8 becomes the lone
//! surrogate `U+DC00 + byte`. Two observable things depend on that view:
//!
//! * the order of entries in a layer, because `sorted()` compares `str`
//!   values code point by code point, so an undecodable byte (`U+DC80` to
//!   `U+DCFF`) sorts *before* a private-use or astral character whose UTF-8
//!   bytes are smaller than it;
//! * the ustar header fields, which `tarfile` encodes as ASCII with the
//!   `replace` handler: each non-ASCII *character* (not byte) becomes one `?`.
//!
//! Names that are valid UTF-8 need none of this: their byte order equals
//! their code point order, so the fast paths compare bytes.

use std::cmp::Ordering;

/// Iterates over the code points Python would see for `bytes` when decoding
/// them as UTF-8 with `surrogateescape`.
pub fn code_points(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        chunk
            .valid()
            .chars()
            .map(u32::from)
            .chain(chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b)))
    })
}

/// Compares two file names the way Python compares the decoded `str`s.
pub fn cmp_names(a: &[u8], b: &[u8]) -> Ordering {
    if std::str::from_utf8(a).is_ok() && std::str::from_utf8(b).is_ok() {
        return a.cmp(b);
    }
    code_points(a).cmp(code_points(b))
}

/// Number of characters of the decoded `str`.
pub fn char_len(bytes: &[u8]) -> usize {
    if bytes.is_ascii() {
        return bytes.len();
    }
    code_points(bytes).count()
}

/// `s.encode("ascii", "replace")`: one `?` for every non-ASCII character.
pub fn ascii_replace(bytes: &[u8]) -> Vec<u8> {
    if bytes.is_ascii() {
        return bytes.to_vec();
    }
    code_points(bytes)
        .map(|c| if c < 0x80 { c as u8 } else { b'?' })
        .collect()
}

/// Whether the decoded `str` holds a surrogate, i.e. `bytes` is not UTF-8.
pub fn has_surrogates(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_byte_sorts_between_bmp_and_private_use() {
        // U+D7FF < U+DCFF (from 0xff) < U+E000, although 0xff > 0xee as bytes.
        let private_use = "\u{E000}".as_bytes();
        let hangul = "\u{D7FF}".as_bytes();
        assert_eq!(cmp_names(b"\xff", private_use), Ordering::Less);
        assert_eq!(cmp_names(b"\xff", hangul), Ordering::Greater);
        assert_eq!(cmp_names(b"a\xff", "a\u{10000}".as_bytes()), Ordering::Less);
    }

    #[test]
    fn ascii_replace_counts_characters_not_bytes() {
        assert_eq!(ascii_replace("é\u{10000}x".as_bytes()), b"??x");
        assert_eq!(ascii_replace(b"a\xffb\xe9"), b"a?b?");
        assert_eq!(char_len("é\u{10000}x".as_bytes()), 3);
        assert_eq!(char_len(b"\xff\xfe"), 2);
    }

    #[test]
    fn truncated_sequence_escapes_each_byte() {
        // An incomplete 3-byte sequence followed by ASCII: two escapes, then 'a'.
        let cps: Vec<u32> = code_points(b"\xe2\x82a").collect();
        assert_eq!(cps, vec![0xDCE2, 0xDC82, u32::from(b'a')]);
    }
}
