//! The tar header encoder against CPython 3.11's `tarfile`, on random
//! headers, and against the `tar` crate's reader.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use stream_layered_image::tar::header::{self as tarheader, EntryType, Header};

#[derive(Debug, Clone)]
struct Case {
    name: Vec<u8>,
    link: Vec<u8>,
    uname: String,
    gname: String,
    mode: u32,
    uid: i64,
    gid: i64,
    size: u64,
    mtime: i64,
    kind: EntryType,
}

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[a-z0-9._-]{1,12}".prop_map(String::into_bytes),
        1 => "[é日🦀 \\n'\"]{1,4}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(0x80u8..=0xff, 1..4),
        1 => Just(vec![b'x'; 60]),
    ];
    proptest::collection::vec(piece, 1..8).prop_map(|parts| {
        let mut out = b"/nix/store/".to_vec();
        out.extend(parts.join(&b'/'));
        out
    })
}

fn number(limit: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0..limit,
        1 => Just(limit - 1),
        1 => Just(limit),
        1 => limit..limit * 64,
        1 => -1000i64..0,
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        name_bytes(),
        prop_oneof![Just(Vec::new()), name_bytes()],
        prop_oneof!["[a-z]{0,40}", "[a-zé]{1,8}"],
        prop_oneof!["[a-z]{0,40}", "[a-zü]{1,8}"],
        0u32..0o10000,
        number(8i64.pow(7)),
        number(8i64.pow(7)),
        prop_oneof![
            0u64..100_000,
            Just(8u64.pow(11) - 1),
            Just(8u64.pow(11)),
            Just(9 << 30)
        ],
        number(8i64.pow(11)),
        prop_oneof![
            Just(EntryType::Regular),
            Just(EntryType::Directory),
            Just(EntryType::Symlink)
        ],
    )
        .prop_map(
            |(name, link, uname, gname, mode, uid, gid, size, mtime, kind)| Case {
                name,
                link,
                uname,
                gname,
                mode,
                uid,
                gid,
                size,
                mtime,
                kind,
            },
        )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ours(c: &Case) -> Vec<u8> {
    let mut out = Vec::new();
    tarheader::encode(
        &Header {
            name: &c.name,
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            size: c.size,
            mtime: c.mtime,
            entry_type: c.kind,
            linkname: &c.link,
            uname: c.uname.as_bytes(),
            gname: c.gname.as_bytes(),
            pax: &[],
        },
        &mut out,
    );
    out
}

const PYTHON: &str = r#"
import sys, json, tarfile
for line in sys.stdin:
    d = json.loads(line)
    t = tarfile.TarInfo(bytes.fromhex(d["name"]).decode("utf-8", "surrogateescape"))
    t.linkname = bytes.fromhex(d["link"]).decode("utf-8", "surrogateescape")
    for k in ("mode", "uid", "gid", "size", "mtime", "uname", "gname"):
        setattr(t, k, d[k])
    t.type = d["type"].encode()
    print(t.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape").hex(), flush=True)
"#;

fn python_311() -> Option<()> {
    let v = Command::new("python3").arg("--version").output().ok()?;
    String::from_utf8_lossy(&v.stdout)
        .starts_with("Python 3.11")
        .then_some(())
}

#[test]
fn headers_match_cpython_tarfile() {
    if python_311().is_none() {
        eprintln!(
            "skipping: python3 3.11 not found (CI installs it; the reference is CPython 3.11)"
        );
        return;
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    let cases: Vec<Case> = (0..3000)
        .map(|_| case().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PYTHON])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = cases.clone();
    let writer = std::thread::spawn(move || {
        for c in &feed {
            let kind = char::from(c.kind.flag());
            writeln!(
                stdin,
                r#"{{"name":"{}","link":"{}","uname":{:?},"gname":{:?},"mode":{},"uid":{},"gid":{},"size":{},"mtime":{},"type":"{}"}}"#,
                hex(&c.name), hex(&c.link), c.uname, c.gname, c.mode, c.uid, c.gid, c.size, c.mtime, kind
            )
            .unwrap();
        }
    });
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut checked = 0;
    for (c, line) in cases.iter().zip(lines) {
        let want = line.unwrap();
        assert_eq!(
            hex(&ours(c)),
            want,
            "header differs from tarfile's for {c:?}"
        );
        checked += 1;
    }
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(checked, cases.len());
}

proptest! {
    /// What we write, the `tar` crate reads back to the same fields.
    #[test]
    fn tar_crate_reads_back_what_we_write(c in case()) {
        // The tar crate splits PAX records at newlines instead of using
        // their lengths, so it misreads names holding one; CPython's reader
        // (the test above) covers those.
        prop_assume!(!c.name.contains(&b'\n') && !c.link.contains(&b'\n'));
        let mut block = ours(&c);
        block.resize(block.len() + c.size.min(4096) as usize, 0);
        let mut archive = tar::Archive::new(&block[..]);
        let mut entries = archive.entries().unwrap();
        let entry = entries.next().unwrap().unwrap();
        let mut name = c.name.clone();
        if c.kind == EntryType::Directory {
            name.push(b'/');
        }
        prop_assert_eq!(&*entry.path_bytes(), &name[..]);
        prop_assert_eq!(entry.size(), c.size);
        let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
        prop_assert_eq!(link, c.link.clone());
        let h = entry.header();
        prop_assert_eq!(h.mode().unwrap(), c.mode);
        prop_assert_eq!(h.entry_type().as_byte(), c.kind.flag());
        let pax: Vec<(String, String)> = entry_pax(&block);
        // A value that does not fit the header lives in a PAX record.
        let field = |key: &str, header: u64| -> i64 {
            pax.iter()
                .find(|(k, _)| k == key)
                .map_or(header as i64, |(_, v)| v.parse().unwrap())
        };
        prop_assert_eq!(field("uid", h.uid().unwrap()), c.uid);
        prop_assert_eq!(field("gid", h.gid().unwrap()), c.gid);
        prop_assert_eq!(field("mtime", h.mtime().unwrap()), c.mtime);
    }
}

/// The PAX records of the first entry, if it has an extended header.
fn entry_pax(block: &[u8]) -> Vec<(String, String)> {
    if block[156] != b'x' {
        return Vec::new();
    }
    let size = usize::from_str_radix(
        std::str::from_utf8(&block[124..135])
            .unwrap()
            .trim_matches('\0'),
        8,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut data = &block[512..512 + size];
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&data[..space])
            .unwrap()
            .parse()
            .unwrap();
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').unwrap();
        out.push((
            String::from_utf8_lossy(&record[..eq]).into_owned(),
            String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
        ));
        data = &data[len..];
    }
    out
}
