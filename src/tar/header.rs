//! Tar headers exactly as CPython's `tarfile` writes them in its default
//! PAX format.
//!
//! Layer digests are hashes of whole tar streams, so a drop-in replacement
//! must reproduce every header byte. The `tar` crate writes valid PAX and
//! GNU archives, but not `tarfile`'s particular choices:
//!
//! * an extended header (`././@PaxHeader`, type `x`, mode 0) is written only
//!   when a field does not fit ustar: a name or link target that is not
//!   ASCII or longer than 100 characters, a user or group name that is not
//!   ASCII or longer than 32, or a uid, gid, size or mtime outside the octal
//!   field (negative, or at least `8**(digits-1)`); its records come in the
//!   order path, linkpath, uname, gname, uid, gid, size, mtime, preceded by
//!   `hdrcharset=BINARY` when any value is not valid UTF-8;
//! * the ustar name is never split into prefix and name: an overlong name is
//!   cut to 100 bytes (the PAX record carries the full one), and non-ASCII
//!   characters become `?`;
//! * numbers are zero-padded octal followed by a NUL, device fields of
//!   non-device entries are NUL-filled, and the checksum is six octal digits,
//!   a NUL and a space.
//!
//! So this module writes headers itself, and the crate is used to *read*
//! archives (base images, and our own output in tests).

use crate::pycompat::str as pystr;

/// Size of a tar block.
pub const BLOCK: usize = 512;
/// `tarfile` pads a streamed archive to a multiple of this record size.
pub const RECORD: usize = BLOCK * 20;

/// The kinds of entries this tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file (`0`).
    Regular,
    /// A directory (`5`); its name gets a trailing slash.
    Directory,
    /// A symbolic link (`2`).
    Symlink,
    /// Any other type byte, kept as is (members copied from a base image).
    Other(u8),
}

impl EntryType {
    /// The header's type flag byte.
    pub fn flag(self) -> u8 {
        match self {
            EntryType::Regular => b'0',
            EntryType::Directory => b'5',
            EntryType::Symlink => b'2',
            EntryType::Other(b) => b,
        }
    }
}

/// Everything `tarfile` puts into a member's header.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// Member name as raw bytes, without the trailing slash of directories.
    pub name: &'a [u8],
    /// Permission bits; only the low 12 bits are written.
    pub mode: u32,
    /// Owner id.
    pub uid: i64,
    /// Group id.
    pub gid: i64,
    /// Size of the member's data.
    pub size: u64,
    /// Modification time in seconds since the epoch.
    pub mtime: i64,
    /// Entry type.
    pub entry_type: EntryType,
    /// Link target as raw bytes (empty unless a link).
    pub linkname: &'a [u8],
    /// Owner name.
    pub uname: &'a [u8],
    /// Group name.
    pub gname: &'a [u8],
    /// Extended records the member already carried (base image members):
    /// they keep their order and take priority over computed ones.
    pub pax: &'a [(String, Vec<u8>)],
}

/// Appends the header block(s) for `h` to `out`: an optional PAX extended
/// header with its records, then the ustar header.
pub fn encode(h: &Header<'_>, out: &mut Vec<u8>) {
    let mut name = h.name.to_vec();
    if h.entry_type == EntryType::Directory && !name.ends_with(b"/") {
        name.push(b'/');
    }

    let mut records: Vec<(String, Vec<u8>)> = h.pax.to_vec();
    let has = |records: &[(String, Vec<u8>)], key: &str| records.iter().any(|(k, _)| k == key);

    for (key, value, limit) in [
        ("path", &name[..], 100),
        ("linkpath", h.linkname, 100),
        ("uname", h.uname, 32),
        ("gname", h.gname, 32),
    ] {
        if has(&records, key) {
            continue;
        }
        if !value.is_ascii() || value.len() > limit {
            records.push((key.to_owned(), value.to_vec()));
        }
    }

    let mut uid = h.uid;
    let mut gid = h.gid;
    let mut size = h.size as i128;
    let mut mtime = h.mtime;
    for (key, value, digits) in [
        ("uid", &mut uid as &mut dyn NumField, 8u32),
        ("gid", &mut gid, 8),
        ("size", &mut size, 12),
        ("mtime", &mut mtime, 12),
    ] {
        let v = value.get();
        if !(0..8i128.pow(digits - 1)).contains(&v) {
            value.set_zero();
            if !has(&records, key) {
                records.push((key.to_owned(), v.to_string().into_bytes()));
            }
        }
    }

    if !records.is_empty() {
        let payload = pax_records(&records);
        let pax_header = UstarFields {
            name: b"././@PaxHeader",
            mode: 0,
            uid: 0,
            gid: 0,
            size: payload.len() as u64,
            mtime: 0,
            type_flag: b'x',
            linkname: b"",
            uname: b"",
            gname: b"",
        };
        pax_header.write(out);
        out.extend_from_slice(&payload);
        pad_to_block(out);
    }

    UstarFields {
        name: &pystr::ascii_replace(&name),
        mode: h.mode & 0o7777,
        uid: uid as u64,
        gid: gid as u64,
        size: size as u64,
        mtime: mtime as u64,
        type_flag: h.entry_type.flag(),
        linkname: &pystr::ascii_replace(h.linkname),
        uname: &pystr::ascii_replace(h.uname),
        gname: &pystr::ascii_replace(h.gname),
    }
    .write(out);
}

/// A number field that may have to move into a PAX record.
trait NumField {
    fn get(&self) -> i128;
    fn set_zero(&mut self);
}

impl NumField for i64 {
    fn get(&self) -> i128 {
        i128::from(*self)
    }
    fn set_zero(&mut self) {
        *self = 0;
    }
}

impl NumField for i128 {
    fn get(&self) -> i128 {
        *self
    }
    fn set_zero(&mut self) {
        *self = 0;
    }
}

/// The PAX record block: `"%d %s=%s\n"` where the leading length counts
/// itself, preceded by `hdrcharset=BINARY` when a value is not UTF-8.
pub fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    if records.iter().any(|(_, v)| pystr::has_surrogates(v)) {
        out.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in records {
        let body = key.len() + value.len() + 3;
        let mut len = body;
        loop {
            let next = body + decimal_digits(len);
            if next == len {
                break;
            }
            len = next;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn decimal_digits(n: usize) -> usize {
    n.to_string().len()
}

/// Appends NUL bytes up to the next block boundary.
pub fn pad_to_block(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// Number of NUL bytes that follow `len` bytes of member data.
pub fn data_padding(len: u64) -> usize {
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// The end-of-archive marker plus the padding `tarfile` adds so that an
/// archive of `offset` bytes so far ends on a record boundary.
pub fn end_of_archive(offset: u64) -> Vec<u8> {
    let total = offset + 2 * BLOCK as u64;
    let rem = (total % RECORD as u64) as usize;
    let pad = if rem == 0 { 0 } else { RECORD - rem };
    vec![0; 2 * BLOCK + pad]
}

struct UstarFields<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    type_flag: u8,
    linkname: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
}

impl UstarFields<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + BLOCK, 0);
        let block = &mut out[start..];
        put_str(&mut block[0..100], self.name);
        put_octal(&mut block[100..108], u64::from(self.mode));
        put_octal(&mut block[108..116], self.uid);
        put_octal(&mut block[116..124], self.gid);
        put_octal(&mut block[124..136], self.size);
        put_octal(&mut block[136..148], self.mtime);
        block[148..156].fill(b' ');
        block[156] = self.type_flag;
        put_str(&mut block[157..257], self.linkname);
        block[257..265].copy_from_slice(b"ustar\x0000");
        put_str(&mut block[265..297], self.uname);
        put_str(&mut block[297..329], self.gname);
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let checksum = format!("{sum:06o}\0");
        block[148..155].copy_from_slice(checksum.as_bytes());
    }
}

fn put_str(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal with a trailing NUL; callers guarantee it fits.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    debug_assert_eq!(text.len(), digits, "octal field overflow");
    field[..digits].copy_from_slice(&text.as_bytes()[..digits]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8]) -> Header<'_> {
        Header {
            name,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1,
            entry_type: EntryType::Regular,
            linkname: b"",
            uname: b"root",
            gname: b"root",
            pax: &[],
        }
    }

    #[test]
    fn short_ascii_name_has_no_pax_header() {
        let mut out = Vec::new();
        encode(&header(b"/nix/store/x"), &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[136..148], b"00000000001\0");
        assert_eq!(out[155], b' ');
        assert_eq!(out[154], 0);
    }

    #[test]
    fn pax_length_counts_its_own_digits() {
        // Expected values from CPython 3.11's tarfile.
        let recs = pax_records(&[("a".into(), b"bcd".to_vec())]);
        assert_eq!(recs, b"8 a=bcd\n");
        // Records whose length crosses from 2 to 3 digits.
        for (n, want) in [(94, &b"101 k="[..]), (95, b"102 k=")] {
            let recs = pax_records(&[("k".into(), vec![b'v'; n])]);
            assert!(recs.starts_with(want), "{:?}", &recs[..8]);
            assert_eq!(recs.len(), 95 + n - 88);
        }
    }

    #[test]
    fn directory_name_of_100_chars_with_slash_moves_to_pax() {
        let name = vec![b'd'; 100];
        let mut h = header(&name);
        h.entry_type = EntryType::Directory;
        let mut out = Vec::new();
        encode(&h, &mut out);
        assert_eq!(&out[..14], b"././@PaxHeader");
        assert_eq!(out.len(), 3 * BLOCK);
    }

    #[test]
    fn negative_mtime_goes_to_pax_and_zero_in_ustar() {
        let mut h = header(b"f");
        h.mtime = -5;
        let mut out = Vec::new();
        encode(&h, &mut out);
        assert!(out[BLOCK..2 * BLOCK].starts_with(b"12 mtime=-5\n"));
        assert_eq!(&out[2 * BLOCK + 136..2 * BLOCK + 148], b"00000000000\0");
    }

    #[test]
    fn end_of_archive_pads_to_record() {
        assert_eq!(end_of_archive(0).len(), RECORD);
        assert_eq!(end_of_archive(512).len() + 512, RECORD);
        assert_eq!(end_of_archive((RECORD - 1024) as u64).len(), 1024);
    }
}
