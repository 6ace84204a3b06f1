//! The PAX/ustar header encoder, round-tripped through the `tar` crate's
//! reader: every field we write reads back as it went in. (CPython's
//! `tarfile` is compared byte for byte by `tests/tarheader_compat.rs`.)
#![no_main]

use std::io::Read;

use arbitrary::Arbitrary;
use stream_layered_image::tar::header::{self as tarheader, EntryType, Header, BLOCK};

#[derive(Debug, Arbitrary)]
enum Kind {
    Regular,
    Directory,
    Symlink,
    /// Copied from a base image member: hard link, character and block
    /// devices, fifo, contiguous file, and the old NUL regular type.
    Other(OtherKind),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum OtherKind {
    HardLink,
    Char,
    Block,
    Fifo,
    Contiguous,
    OldRegular,
}

/// Records a base image member may carry, which the encoder keeps in front
/// of the ones it computes.
#[derive(Debug, Arbitrary, Clone, Copy, PartialEq, Eq)]
enum PaxKey {
    Path,
    Linkpath,
    Uname,
    Gname,
    Comment,
    Atime,
    Xattr,
}

impl PaxKey {
    fn name(self) -> &'static str {
        match self {
            PaxKey::Path => "path",
            PaxKey::Linkpath => "linkpath",
            PaxKey::Uname => "uname",
            PaxKey::Gname => "gname",
            PaxKey::Comment => "comment",
            PaxKey::Atime => "atime",
            PaxKey::Xattr => "SCHILY.xattr.user.fuzz",
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    name: Vec<u8>,
    mode: u32,
    uid: i64,
    gid: i64,
    size: u64,
    mtime: i64,
    kind: Kind,
    linkname: Vec<u8>,
    uname: Vec<u8>,
    gname: Vec<u8>,
    pax: Vec<(PaxKey, Vec<u8>)>,
}

/// What a field reads back as: the member's own PAX record if it has one,
/// else the ustar field.
fn effective<'a>(records: &'a [(String, Vec<u8>)], key: &str, ustar: &'a [u8]) -> &'a [u8] {
    records
        .iter()
        .find(|(k, _)| k == key)
        .map_or(ustar, |(_, v)| v)
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let kind = match input.kind {
        Kind::Regular => EntryType::Regular,
        Kind::Directory => EntryType::Directory,
        Kind::Symlink => EntryType::Symlink,
        Kind::Other(o) => EntryType::Other(match o {
            OtherKind::HardLink => b'1',
            OtherKind::Char => b'3',
            OtherKind::Block => b'4',
            OtherKind::Fifo => b'6',
            OtherKind::Contiguous => b'7',
            OtherKind::OldRegular => 0,
        }),
    };
    // One record per key, as a base image member has them.
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, value) in &input.pax {
        if !pax.iter().any(|(k, _)| k == key.name()) {
            pax.push((key.name().to_owned(), value.clone()));
        }
    }
    let header = Header {
        name: &input.name,
        mode: input.mode,
        uid: input.uid,
        gid: input.gid,
        size: input.size,
        mtime: input.mtime,
        entry_type: kind,
        linkname: &input.linkname,
        uname: &input.uname,
        gname: &input.gname,
        pax: &pax,
    };
    let mut out = Vec::new();
    tarheader::encode(&header, &mut out);
    assert_eq!(out.len() % BLOCK, 0);
    let ustar = out[out.len() - BLOCK..].to_vec();
    assert_eq!(&ustar[257..265], b"ustar\x0000");

    let mut name = input.name.clone();
    if kind == EntryType::Directory && !name.ends_with(b"/") {
        name.push(b'/');
    }
    // What the tar crate cannot read back: a NUL ends a ustar string field
    // (a store path never holds one), the crate splits PAX records at
    // newlines instead of using their lengths, and it refuses sizes within
    // a block of 2^64 (it cannot compute where the next member starts).
    let texts = [&name, &input.linkname, &input.uname, &input.gname];
    let pax_values = pax.iter().map(|(_, v)| v);
    if texts.iter().any(|t| t.contains(&0))
        || texts
            .into_iter()
            .chain(pax_values)
            .any(|t| t.contains(&b'\n'))
        || input.size > u64::MAX / 2
    {
        return;
    }
    // Data for the entry is not written; the crate reads the header alone
    // (it only skips the data when asked for the next entry). Two zero
    // blocks end the archive should it look further.
    out.resize(out.len() + 2 * BLOCK, 0);
    let mut archive = tar::Archive::new(&out[..]);
    let mut entries = archive.entries().expect("entries");
    let mut entry = entries
        .next()
        .expect("one entry")
        .unwrap_or_else(|e| panic!("the tar crate refuses our header: {e}"));

    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(exts) = entry.pax_extensions().expect("pax records") {
        for ext in exts {
            let ext = ext.expect("a well-formed pax record");
            let key = String::from_utf8(ext.key_bytes().to_vec()).expect("a UTF-8 key");
            assert!(
                !records.iter().any(|(k, _)| *k == key),
                "record {key:?} written twice"
            );
            records.push((key, ext.value_bytes().to_vec()));
        }
    }
    // `hdrcharset=BINARY` first when a value is not UTF-8, then the
    // member's own records, unchanged.
    let binary = records.first().is_some_and(|(k, _)| k == "hdrcharset");
    if binary {
        assert_eq!(records[0].1, b"BINARY");
    }
    let own = &records[usize::from(binary)..];
    assert_eq!(&own[..pax.len().min(own.len())], &pax[..]);

    let given = |key: &str, computed: &[u8]| -> Vec<u8> {
        pax.iter()
            .find(|(k, _)| k == key)
            .map_or(computed.to_vec(), |(_, v)| v.clone())
    };
    assert_eq!(&*entry.path_bytes(), &given("path", &name)[..]);
    let link = entry.link_name_bytes().unwrap_or_default();
    assert_eq!(&*link, &given("linkpath", &input.linkname)[..]);
    let h = entry.header();
    assert_eq!(
        effective(&records, "uname", h.username_bytes().unwrap_or_default()),
        &given("uname", &input.uname)[..]
    );
    assert_eq!(
        effective(&records, "gname", h.groupname_bytes().unwrap_or_default()),
        &given("gname", &input.gname)[..]
    );
    assert_eq!(h.mode().unwrap(), input.mode & 0o7777);
    assert_eq!(h.as_bytes()[156], kind.flag());

    // Numbers: in the octal field when they fit, else 0 there and a decimal
    // PAX record.
    let number = |key: &str, field: std::ops::Range<usize>| -> i128 {
        let octal = std::str::from_utf8(&ustar[field.clone()])
            .unwrap()
            .trim_end_matches('\0');
        let octal = i128::from_str_radix(octal, 8).unwrap();
        match records.iter().find(|(k, _)| k == key) {
            Some((_, v)) => {
                assert_eq!(octal, 0, "{key} is in a record and in the ustar field");
                std::str::from_utf8(v).unwrap().parse().unwrap()
            }
            None => octal,
        }
    };
    assert_eq!(number("uid", 108..116), i128::from(input.uid));
    assert_eq!(number("gid", 116..124), i128::from(input.gid));
    assert_eq!(number("size", 124..136), i128::from(input.size));
    assert_eq!(number("mtime", 136..148), i128::from(input.mtime));
    assert_eq!(entry.size(), input.size);
    if input.uid >= 0 {
        assert_eq!(h.uid().unwrap(), input.uid as u64);
    }
    if input.gid >= 0 {
        assert_eq!(h.gid().unwrap(), input.gid as u64);
    }
    // Nothing of the entry's data is there to read.
    let mut probe = [0u8; 1];
    let _ = entry.read(&mut probe);
});
