//! Hardening: hostile base images, faults while running, hostile names,
//! scale, and determinism.
//!
//! Every failure must be one clear line on stderr naming the problem, exit
//! status 1 and no panic; no hostile input may make memory grow with the
//! sizes it claims; and no run may write an image whose bytes differ from
//! its digests. (The fuzz targets in `fuzz/` cover the parsers; the
//! 1,000,000-file run is `scripts/scale-test`.)

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

// ---------------------------------------------------------------------------
// Scaffolding
// ---------------------------------------------------------------------------

/// A scratch directory with a store (`<tmp>/store`) and a spec writer.
struct Scratch {
    dir: tempfile::TempDir,
}

const HELLO: &str = "0000000000000000000000000000000a-hello";

impl Scratch {
    /// A store with one small store path, [`HELLO`].
    fn new() -> Scratch {
        let s = Scratch::empty();
        let hello = s.path(HELLO);
        fs::create_dir_all(hello.join("bin")).unwrap();
        fs::write(hello.join("bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
        s
    }

    fn empty() -> Scratch {
        let s = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(s.store()).unwrap();
        s
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }

    /// A spec whose layers hold the named store paths, plus `extra` JSON
    /// members (starting with a comma).
    fn spec(&self, layers: &[Vec<String>], extra: &str) -> PathBuf {
        let layers: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|n| self.path(n).display().to_string())
                    .collect()
            })
            .collect();
        let text = format!(
            r#"{{"architecture": "amd64", "config": {{"Env": ["A=1"]}},
                "created": "1970-01-01T00:00:01Z", "store_dir": {store:?},
                "store_layers": {layers:?}, "repo_tag": "t:1"{extra}}}"#,
            store = self.store().display().to_string(),
        );
        let p = self.dir.path().join("spec.json");
        fs::write(&p, text).unwrap();
        p
    }

    /// The spec of [`Scratch::new`]'s store path.
    fn hello_spec(&self, extra: &str) -> PathBuf {
        self.spec(&[vec![HELLO.into()]], extra)
    }
}

fn run(args: &[&OsStr]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn run_spec(spec: &Path) -> Output {
    run(&[spec.as_os_str()])
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure: exit status 1, exactly one error line, holding
/// every needle, and no panic. Returns the line.
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let stderr = stderr_of(out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("stream-layered-image: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "want one error line, got: {stderr}");
    for needle in needles {
        assert!(errors[0].contains(needle), "{needle:?} not in {stderr:?}");
    }
    errors[0].to_owned()
}

fn assert_succeeds(out: &Output) {
    assert!(out.status.success(), "{}", stderr_of(out));
    assert!(!stderr_of(out).contains("panicked"));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether we run as root (who reads any file, and may `mknod`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Runs the tool as `nobody` when we are root, so permissions apply.
fn run_unprivileged(s: &Scratch, spec: &Path) -> Output {
    if !is_root() {
        return run_spec(spec);
    }
    // Tempdirs are 0700: let nobody reach the scratch tree.
    let mut dir = Some(s.dir.path());
    while let Some(d) = dir.filter(|d| d.starts_with(std::env::temp_dir())) {
        let mode = fs::metadata(d).unwrap().permissions().mode();
        fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o005)).unwrap();
        dir = d.parent().filter(|p| *p != std::env::temp_dir());
    }
    fs::set_permissions(spec, fs::Permissions::from_mode(0o644)).unwrap();
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg(spec)
        .output()
        .expect("setpriv (util-linux) runs the tool as nobody")
}

/// Peak resident set size, in KiB, of the tool run on `args`, with its
/// output discarded.
fn peak_rss_kib(args: &[&OsStr]) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(BIN)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("GNU time (/usr/bin/time, Debian package `time`)");
    let text = fs::read_to_string(report.path()).unwrap();
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS in {text:?}"));
    (out, kib)
}

/// Runs Python 3 on `script` with `args`; returns its stdout.
fn python(script: &str, args: &[&OsStr]) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONUTF8", "1")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// Base images, built member by member so that every field can be hostile
// ---------------------------------------------------------------------------

/// One member of a hand-built archive.
#[derive(Clone)]
struct Member {
    name: Vec<u8>,
    kind: tar::EntryType,
    link: Vec<u8>,
    data: Vec<u8>,
    /// A size for the header other than `data.len()`.
    claimed: Option<u64>,
    /// PAX records to put in an extended header in front of the member.
    pax: Vec<(String, String)>,
}

fn file(name: &str, data: &[u8]) -> Member {
    Member {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        link: Vec::new(),
        data: data.to_vec(),
        claimed: None,
        pax: Vec::new(),
    }
}

/// A ustar header with the fields written directly, so that names with
/// `..` or a leading `/` (which `tar::Builder` refuses) are possible.
fn header(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let u = h.as_ustar_mut().unwrap();
        u.name[..name.len()].copy_from_slice(name);
        u.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_cksum();
    h
}

/// `"%d %s=%s\n"` records whose length counts itself.
fn pax_data(records: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        out.extend(format!("{len} {k}={v}\n").into_bytes());
    }
    out
}

/// The archive of `members`: header, data, padding, and two zero blocks.
fn archive(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        if !m.pax.is_empty() {
            let data = pax_data(&m.pax);
            let h = header(
                b"././@PaxHeader",
                tar::EntryType::XHeader,
                b"",
                data.len() as u64,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&data);
            out.resize(out.len().next_multiple_of(512), 0);
        }
        let h = header(
            &m.name,
            m.kind,
            &m.link,
            m.claimed.unwrap_or(m.data.len() as u64),
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&m.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A layer tar holding one file.
fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

/// The parts of a valid base image: manifest first, then the config, then
/// two layers (so that a cut anywhere in a layer leaves the JSON readable).
struct Base {
    layers: Vec<(String, Vec<u8>)>,
    diff_ids: Vec<String>,
    manifest_layers: Vec<String>,
    config_name: String,
}

impl Base {
    fn new() -> Base {
        let layers: Vec<(String, Vec<u8>)> = [
            ("etc/base-one", vec![b'1'; 3000]),
            ("etc/base-two", vec![b'2'; 9000]),
        ]
        .into_iter()
        .map(|(file, content)| {
            let tar = layer_tar(file, &content);
            (format!("{}/layer.tar", sha256_hex(&tar)), tar)
        })
        .collect();
        Base {
            diff_ids: layers
                .iter()
                .map(|(_, t)| format!("sha256:{}", sha256_hex(t)))
                .collect(),
            manifest_layers: layers.iter().map(|(n, _)| n.clone()).collect(),
            config_name: "c0ffee.json".into(),
            layers,
        }
    }

    fn config(&self) -> Vec<u8> {
        format!(
            r#"{{"architecture": "amd64", "config": {{"Env": ["BASE=1"]}}, "rootfs": {{"type": "layers", "diff_ids": {:?}}}}}"#,
            self.diff_ids
        )
        .into_bytes()
    }

    fn manifest(&self) -> Vec<u8> {
        format!(
            r#"[{{"Config": {:?}, "RepoTags": ["base:1"], "Layers": {:?}}}]"#,
            self.config_name, self.manifest_layers
        )
        .into_bytes()
    }

    fn members(&self) -> Vec<Member> {
        let mut out = vec![
            file("manifest.json", &self.manifest()),
            file(&self.config_name, &self.config()),
        ];
        out.extend(self.layers.iter().map(|(n, t)| file(n, t)));
        out
    }
}

/// A spec for the hello store path with `archive` as its base image.
fn with_base(s: &Scratch, archive: &[u8]) -> (PathBuf, PathBuf) {
    let base = s.dir.path().join("base.tar");
    fs::write(&base, archive).unwrap();
    let spec = s.hello_spec(&format!(
        r#", "from_image": {:?}"#,
        base.display().to_string()
    ));
    (spec, base)
}

/// Runs the tool on a base image that must be refused: one error line that
/// names the archive and holds every needle, and no manifest written.
fn assert_base_refused(archive: &[u8], needles: &[&str]) -> String {
    let s = Scratch::new();
    let (spec, base) = with_base(&s, archive);
    let out = run_spec(&spec);
    let mut all = vec![base.to_str().unwrap(), "base image"];
    all.extend_from_slice(needles);
    let line = assert_fails(&out, &all);
    assert!(
        !contains(&out.stdout, b"manifest.json"),
        "a manifest was written"
    );
    line
}

#[test]
fn valid_base_image_is_accepted_plain_and_gzipped() {
    let base = Base::new();
    let tar = archive(&base.members());
    for data in [tar.clone(), gzip(&tar)] {
        let s = Scratch::new();
        let (spec, _) = with_base(&s, &data);
        let out = run_spec(&spec);
        assert_succeeds(&out);
        // The base layers come first, named as in the base image.
        let mut a = tar::Archive::new(&out.stdout[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names[..2], base.manifest_layers[..]);
    }
}

#[test]
fn truncated_base_image_is_refused_wherever_it_is_cut() {
    let base = Base::new();
    let full = archive(&base.members());
    // Everything up to the end of the last member's data is needed; what
    // follows is padding and the end-of-archive blocks.
    let last = base.layers.last().unwrap();
    let data_end = full.len() - 1024 - (512 - last.1.len() % 512) % 512;
    let mut cuts: BTreeSet<usize> = (1..data_end).step_by(509).collect();
    cuts.extend((512..data_end).step_by(512));
    cuts.insert(data_end - 1);
    let mut kinds = BTreeSet::new();
    for cut in cuts {
        let line = assert_base_refused(&full[..cut], &[]);
        let known = [
            "past the end of the archive",
            "archive is truncated",
            "has no member",
            "not a readable tar archive",
        ];
        let kind = known.iter().find(|k| line.contains(*k));
        assert!(kind.is_some(), "cut at {cut}: unclear error: {line}");
        kinds.insert(*kind.unwrap());
    }
    // A cut inside a layer is named as such.
    let cut = full.len() - 1024 - 600;
    let line = assert_base_refused(&full[..cut], &["past the end of the archive"]);
    assert!(line.contains(&last.0), "{line}");

    let gz = gzip(&full);
    // Cuts in the deflate stream, and in the trailer (CRC and length),
    // which the tar reader alone never reaches.
    for cut in [
        gz.len() / 5,
        gz.len() / 2,
        gz.len() - 30,
        gz.len() - 8,
        gz.len() - 4,
    ] {
        let line = assert_base_refused(&gz[..cut], &[]);
        assert!(
            [
                "truncated",
                "unexpected end of file",
                "incomplete deflate stream"
            ]
            .iter()
            .any(|k| line.contains(k)),
            "gzip cut at {cut}: {line}"
        );
    }
}

#[test]
fn gzipped_base_image_with_a_wrong_checksum_is_refused() {
    let mut gz = gzip(&archive(&Base::new().members()));
    let crc = gz.len() - 8;
    gz[crc] ^= 1;
    assert_base_refused(&gz, &["checksum"]);
}

const TERABYTE: u64 = 1 << 40;

#[test]
fn absurd_sizes_are_refused_without_memory_growing() {
    let base = Base::new();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    // A layer claiming 1 TiB, through a PAX size record, in a 30 KB file.
    let mut m = base.members();
    m[3].pax = vec![("size".into(), TERABYTE.to_string())];
    cases.push(("pax size", archive(&m), "past the end of the archive"));

    // The same through the GNU base-256 size field.
    let mut m = base.members();
    m[3].claimed = Some(TERABYTE);
    cases.push(("base-256 size", archive(&m), "past the end of the archive"));

    // manifest.json claiming 1 TiB.
    let mut m = base.members();
    m[0].pax = vec![("size".into(), TERABYTE.to_string())];
    cases.push(("manifest size", archive(&m), "past the end of the archive"));

    // The same, gzipped: there is no file size to compare with.
    let mut m = base.members();
    m[3].pax = vec![("size".into(), TERABYTE.to_string())];
    cases.push((
        "gzipped pax size",
        gzip(&archive(&m)),
        "not a readable tar archive",
    ));
    let mut m = base.members();
    m[0].pax = vec![("size".into(), TERABYTE.to_string())];
    cases.push((
        "gzipped manifest size",
        gzip(&archive(&m)),
        "not a readable tar archive",
    ));

    // An extended header that itself claims 1 TiB.
    let mut bad = archive(&[file("x", b"")]);
    let h = header(b"././@PaxHeader", tar::EntryType::XHeader, b"", TERABYTE);
    bad[..512].copy_from_slice(h.as_bytes());
    cases.push(("pax header size", bad, "not a readable tar archive"));

    // A global header claiming 1 TiB.
    let mut bad = archive(&[file("x", b"")]);
    let h = header(
        b"pax_global_header",
        tar::EntryType::XGlobalHeader,
        b"",
        TERABYTE,
    );
    bad[..512].copy_from_slice(h.as_bytes());
    cases.push(("global header size", bad, "not a readable tar archive"));

    for (what, data, needle) in cases {
        let s = Scratch::new();
        let (spec, base_path) = with_base(&s, &data);
        let started = Instant::now();
        let (out, rss) = peak_rss_kib(&[spec.as_os_str()]);
        assert_fails(&out, &["base image", base_path.to_str().unwrap(), needle]);
        assert!(rss < 64 * 1024, "{what}: peak RSS {rss} KiB");
        assert!(
            started.elapsed().as_secs() < 10,
            "{what}: took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn layer_names_that_leave_the_archive_are_refused() {
    for name in [
        "../escape/layer.tar",
        "/abs/layer.tar",
        "a/../../b/layer.tar",
        "a/..",
    ] {
        let mut base = Base::new();
        let tar = base.layers[0].1.clone();
        base.layers[0].0 = name.into();
        base.manifest_layers[0] = name.into();
        let mut m = base.members();
        m[2] = file(name, &tar);
        assert_base_refused(&archive(&m), &["escapes the archive", name]);
    }
}

#[test]
fn config_named_outside_the_archive_is_read_from_the_archive_only() {
    // A config name with `..` or an absolute path is looked up among the
    // members, never on disk, even when a file of that name exists there
    // (next to the archive and in the working directory). Members with
    // such names that the manifest does not list are never copied.
    let s = Scratch::new();
    let img = s.dir.path().join("img");
    fs::create_dir(&img).unwrap();
    let base_path = img.join("base.tar");
    let on_disk = s.dir.path().join("outside.json");
    let mut decoy = Base::new().config();
    decoy = String::from_utf8(decoy)
        .unwrap()
        .replace("BASE=1", "ON_DISK=1")
        .into_bytes();
    fs::write(&on_disk, &decoy).unwrap();
    let spec = s.hello_spec(&format!(
        r#", "from_image": {:?}"#,
        base_path.display().to_string()
    ));
    let run_in_img = || {
        Command::new(BIN)
            .arg(&spec)
            .current_dir(&img)
            .output()
            .unwrap()
    };
    for config_name in ["../outside.json", on_disk.to_str().unwrap()] {
        let mut base = Base::new();
        base.config_name = config_name.into();

        let mut m = base.members();
        m.remove(1);
        fs::write(&base_path, archive(&m)).unwrap();
        let out = run_in_img();
        assert_fails(&out, &["base image", "has no member", config_name]);
        assert!(!contains(&out.stdout, b"manifest.json"));

        let mut m = base.members();
        m.push(file("../../evil", b"evil"));
        m.push(file("/etc/evil", b"evil"));
        fs::write(&base_path, archive(&m)).unwrap();
        let out = run_in_img();
        assert_succeeds(&out);
        assert!(contains(&out.stdout, b"BASE=1"), "{config_name}");
        assert!(!contains(&out.stdout, b"ON_DISK"), "{config_name}");
        let mut names = Vec::new();
        let mut a = tar::Archive::new(&out.stdout[..]);
        for e in a.entries().unwrap() {
            names.push(e.unwrap().path_bytes().into_owned());
        }
        assert!(
            !names
                .iter()
                .any(|n| contains(n, b"evil") || contains(n, b"..")),
            "{names:?}"
        );
    }
}

#[test]
fn duplicate_members_are_refused() {
    let base = Base::new();
    // The same layer twice, and a second manifest.json that disagrees.
    let mut m = base.members();
    m.push(m[2].clone());
    assert_base_refused(&archive(&m), &["appears twice", &base.layers[0].0]);
    let mut m = base.members();
    m.push(file("manifest.json", b"[]"));
    assert_base_refused(&archive(&m), &["appears twice", "manifest.json"]);
}

#[test]
fn manifest_naming_missing_members_is_refused() {
    let mut base = Base::new();
    base.manifest_layers[1] = format!("{}/layer.tar", "f".repeat(64));
    assert_base_refused(
        &archive(&base.members()),
        &["has no member", &base.manifest_layers[1]],
    );

    let base = Base::new();
    let mut m = base.members();
    m.remove(1);
    assert_base_refused(&archive(&m), &["has no member", &base.config_name]);

    let m = base.members()[1..].to_vec();
    assert_base_refused(&archive(&m), &["has no member", "manifest.json"]);
}

#[test]
fn diff_id_count_must_match_layer_count() {
    let mut base = Base::new();
    base.diff_ids.pop();
    assert_base_refused(
        &archive(&base.members()),
        &["lists 2 layers but the config has 1 diff_ids"],
    );
    let mut base = Base::new();
    base.diff_ids.push(base.diff_ids[0].clone());
    assert_base_refused(
        &archive(&base.members()),
        &["lists 2 layers but the config has 3 diff_ids"],
    );
    let mut base = Base::new();
    base.diff_ids[1] = "md5:abc".into();
    assert_base_refused(&archive(&base.members()), &["md5:abc", "not a sha256"]);
}

#[test]
fn layer_whose_bytes_do_not_match_its_diff_id_is_refused() {
    let mut base = Base::new();
    let wrong = format!("sha256:{}", sha256_hex(b"something else"));
    base.diff_ids[1] = wrong.clone();
    let line = assert_base_refused(
        &archive(&base.members()),
        &[&base.layers[1].0, &wrong[7..], "diff_id"],
    );
    assert!(line.contains(&sha256_hex(&base.layers[1].1)), "{line}");
    // Gzipped: the same.
    assert_base_refused(
        &gzip(&archive(&base.members())),
        &[&base.layers[1].0, "diff_id"],
    );
}

#[test]
fn links_and_directories_where_layers_should_be_are_refused() {
    let base = Base::new();
    let name = base.layers[0].0.clone();
    let cases = [
        (
            tar::EntryType::Symlink,
            b"../other/layer.tar".to_vec(),
            "'2'",
        ),
        (
            tar::EntryType::Link,
            base.layers[1].0.clone().into_bytes(),
            "'1'",
        ),
        (tar::EntryType::Directory, Vec::new(), "'5'"),
        (tar::EntryType::Fifo, Vec::new(), "'6'"),
    ];
    for (kind, link, flag) in cases {
        let mut m = base.members();
        m[2] = Member {
            kind,
            link,
            data: Vec::new(),
            ..file(&name, b"")
        };
        assert_base_refused(&archive(&m), &[&name, "not a regular file", flag]);
    }
    // manifest.json as a symlink to a real one.
    let mut m = base.members();
    m.push(file("real.json", &base.manifest()));
    m[0] = Member {
        kind: tar::EntryType::Symlink,
        link: b"real.json".to_vec(),
        data: Vec::new(),
        ..file("manifest.json", b"")
    };
    assert_base_refused(&archive(&m), &["manifest.json", "not a regular file"]);
}

// ---------------------------------------------------------------------------
// References graphs: what fuzzing found
// ---------------------------------------------------------------------------

#[test]
fn graph_reference_count_is_not_trusted_for_memory() {
    use stream_layered_image::layering::graph;
    // A text record announcing 1.7 billion references (found by the
    // graph_gzip fuzz target) made the parser reserve 40 GB up front and
    // abort; usize::MAX overflowed the capacity and panicked.
    for count in ["1702919981", "18446744073709551615"] {
        let text = format!("/nix/store/aaaa-x\n\n{count}\n/nix/store/aaaa-x\n");
        let err = graph::parse_raw(text.as_bytes(), "g").unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("announces {count} references but the input ends")),
            "{err}"
        );
        // The same for a registration, and through the command line.
        let text = format!("/nix/store/aaaa-x\nsha256:00\n5\n\n{count}\n");
        assert!(graph::parse_raw(text.as_bytes(), "g").is_err());
        let s = Scratch::empty();
        let g = s.dir.path().join("graph");
        fs::write(&g, &text).unwrap();
        let (out, rss) = peak_rss_kib(&[
            "layers".as_ref(),
            "--graph".as_ref(),
            g.as_os_str(),
            "--max-layers".as_ref(),
            "3".as_ref(),
        ]);
        assert_fails(&out, &[count, "references but the input ends"]);
        assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
    }
}

#[test]
fn graph_compressed_twice_is_refused() {
    use stream_layered_image::layering::graph;
    // Each level of gzip multiplies what a small file expands to by up to
    // a thousand: 2 KB compressed twice held 1 GB.
    let json = br#"[{"path": "/nix/store/aaaa-x", "narSize": 1, "references": []}]"#;
    assert_eq!(graph::parse_raw(&gzip(json), "g").unwrap().len(), 1);
    let err = graph::parse_raw(&gzip(&gzip(json)), "g").unwrap_err();
    assert!(err.to_string().contains("compressed twice"), "{err}");
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// A store with a large file, so that the output outlasts a pipe's buffer.
fn big_scratch() -> (Scratch, PathBuf) {
    let s = Scratch::new();
    let big = s.path("0000000000000000000000000000000b-big");
    fs::create_dir_all(&big).unwrap();
    fs::write(big.join("blob"), vec![7u8; 8 << 20]).unwrap();
    let spec = s.spec(
        &[
            vec!["0000000000000000000000000000000b-big".into()],
            vec![HELLO.into()],
        ],
        "",
    );
    (s, spec)
}

/// Runs `cmd` (in its own process group, stderr captured) for at most
/// 30 s; a run that outlives that is killed with its whole group and the
/// test fails: a hang must not block the suite. Stdout must not be a pipe
/// nobody reads.
fn run_bounded(cmd: &mut Command) -> Output {
    use std::os::unix::process::CommandExt;
    let limit = std::time::Duration::from_secs(30);
    let mut child = cmd.process_group(0).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: a hang; stderr: {}",
                stderr_of(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn stdout_closed_early_ends_quietly() {
    let (_s, spec) = big_scratch();
    // Several times: how far the tool got when the reader left varies.
    for _ in 0..10 {
        let out = run_bounded(
            Command::new("bash")
                .arg("-c")
                .arg(r#"set -o pipefail; "$0" "$1" | head -c 100 >/dev/null"#)
                .arg(BIN)
                .arg(&spec)
                .stdout(Stdio::null()),
        );
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("error"), "{stderr}");
    }
}

#[test]
fn stdout_on_a_full_device_is_a_clear_error() {
    let (_s, spec) = big_scratch();
    for _ in 0..10 {
        let out = run_bounded(
            Command::new(BIN)
                .arg(&spec)
                .stdout(fs::File::options().write(true).open("/dev/full").unwrap()),
        );
        assert_fails(&out, &["writing the image", "No space left on device"]);
    }
}

#[test]
fn output_that_is_a_device_is_not_removed_on_failure() {
    // `-o /dev/null` with a failing spec must not delete /dev/null. A
    // private null device stands in for it.
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let dev = s.dir.path().join("null");
    let made = Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let spec = s.spec(&[vec!["00000000000000000000000000000000-gone".into()]], "");
    let out = run(&[spec.as_os_str(), "-o".as_ref(), dev.as_os_str()]);
    assert_fails(&out, &["-gone"]);
    assert!(
        fs::symlink_metadata(&dev).is_ok(),
        "the device node given as -o was deleted"
    );
}

/// Runs the tool on a spec whose first layer (8 MiB) blocks on a pipe
/// nobody reads; once both layers are hashed and layer 1 is streaming,
/// `mutate` changes `victim` (a file of layer 2, created with `content`).
/// Returns the run (stderr holds the progress) and what was written.
fn change_during_run(
    victim_name: &str,
    content: &[u8],
    mutate: impl FnOnce(&Path),
) -> (Output, Vec<u8>) {
    let (s, spec) = big_scratch();
    let victim = s.path(HELLO).join(victim_name);
    fs::write(&victim, content).unwrap();
    let (reader, writer) = os_pipe::pipe().unwrap();
    let mut child = Command::new(BIN)
        .arg(&spec)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let (mut hashed_two, mut streaming_one) = (false, false);
    while !(hashed_two && streaming_one) {
        let line = lines.next().expect("a progress line").unwrap();
        hashed_two |= line.contains("] hashed layer 2/2");
        streaming_one |= line.contains("] streaming layer 1/2");
        log.push_str(&line);
        log.push('\n');
    }
    mutate(&victim);
    let mut reader = reader;
    let drain = std::thread::spawn(move || {
        let mut stdout = Vec::new();
        reader.read_to_end(&mut stdout).unwrap();
        stdout
    });
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    let stdout = drain.join().unwrap();
    let out = Output {
        status,
        stdout: Vec::new(),
        stderr: log.into_bytes(),
    };
    (out, stdout)
}

fn assert_change_detected(out: &Output, image: &[u8], victim: &str) {
    assert_fails(out, &[victim, "changed while the image was being written"]);
    assert!(
        !contains(image, b"manifest.json"),
        "a manifest was written after a file changed"
    );
}

#[test]
fn small_file_that_shrinks_is_detected() {
    let (out, image) = change_during_run("small", &[5u8; 1000], |victim| {
        let f = fs::File::options().write(true).open(victim).unwrap();
        f.set_len(400).unwrap();
    });
    assert_change_detected(&out, &image, "small");
}

#[test]
fn large_file_that_shrinks_is_detected() {
    let (out, image) = change_during_run("large", &vec![5u8; 6 << 20], |victim| {
        let f = fs::File::options().write(true).open(victim).unwrap();
        f.set_len(1 << 20).unwrap();
    });
    assert_change_detected(&out, &image, "large");
}

#[test]
fn large_file_rewritten_in_place_is_detected() {
    // Over the read limit (256 KiB), so it is memory-mapped; same size and
    // the same mtime afterwards: only the ctime tells.
    let (out, image) = change_during_run("large", &vec![5u8; 1 << 20], |victim| {
        let mtime = fs::metadata(victim).unwrap().modified().unwrap();
        let mut f = fs::File::options().write(true).open(victim).unwrap();
        f.write_all(&vec![6u8; 1 << 20]).unwrap();
        f.set_modified(mtime).unwrap();
    });
    assert_change_detected(&out, &image, "large");
}

#[test]
fn large_file_replaced_by_another_is_detected() {
    let (out, image) = change_during_run("large", &vec![5u8; 1 << 20], |victim| {
        let tmp = victim.with_extension("new");
        fs::write(&tmp, vec![5u8; 1 << 20]).unwrap();
        fs::rename(&tmp, victim).unwrap();
    });
    assert_change_detected(&out, &image, "large");
}

#[test]
fn large_file_that_grows_is_detected() {
    let (out, image) = change_during_run("large", &vec![5u8; 1 << 20], |victim| {
        let mut f = fs::File::options().append(true).open(victim).unwrap();
        f.write_all(b"more").unwrap();
    });
    assert_change_detected(&out, &image, "large");
}

/// As [`assert_change_detected`], and the error says what changed.
fn assert_change_named(out: &Output, image: &[u8], victim: &str, what: &str) {
    assert_change_detected(out, image, victim);
    assert!(
        stderr_of(out).contains(what),
        "{what:?} not in {}",
        stderr_of(out)
    );
}

#[test]
fn small_file_that_vanishes_is_detected() {
    let (out, image) = change_during_run("small", &[5u8; 1000], |victim| {
        fs::remove_file(victim).unwrap();
    });
    assert_change_named(&out, &image, "small", "it was deleted");
}

#[test]
fn large_file_that_vanishes_is_detected() {
    let (out, image) = change_during_run("large", &vec![5u8; 1 << 20], |victim| {
        fs::remove_file(victim).unwrap();
    });
    assert_change_named(&out, &image, "large", "it was deleted");
}

#[test]
fn small_file_that_grows_is_detected() {
    let (out, image) = change_during_run("small", &[5u8; 1000], |victim| {
        let mut f = fs::File::options().append(true).open(victim).unwrap();
        f.write_all(b"more").unwrap();
    });
    assert_change_named(&out, &image, "small", "size 1000 became 1004");
}

#[test]
fn small_file_rewritten_in_place_is_detected() {
    // Read whole (under the read limit), same size, mtime put back: the
    // hashing pass skips its identity look for small files, so the
    // streaming pass must catch this.
    let (out, image) = change_during_run("small", &[5u8; 1000], |victim| {
        let mtime = fs::metadata(victim).unwrap().modified().unwrap();
        let mut f = fs::File::options().write(true).open(victim).unwrap();
        f.write_all(&[6u8; 1000]).unwrap();
        f.set_modified(mtime).unwrap();
    });
    assert_change_named(&out, &image, "small", "status change time");
}

#[test]
fn large_file_truncated_while_it_is_hashed_is_an_error() {
    // Truncation while a window of the file is mapped and being read: the
    // run must end with an error naming the file (not a signal), and -o
    // must not leave a file behind.
    let s = Scratch::empty();
    let root = s.path("0000000000000000000000000000000f-sparse");
    fs::create_dir(&root).unwrap();
    let victim = root.join("sparse");
    fs::File::create(&victim).unwrap().set_len(4 << 30).unwrap();
    let spec = s.spec(
        &[vec!["0000000000000000000000000000000f-sparse".into()]],
        "",
    );
    let image = s.dir.path().join("image.tar");
    let mut cmd = Command::new(BIN);
    cmd.arg(&spec).arg("-o").arg(&image);
    let truncate = std::thread::spawn({
        let victim = victim.clone();
        move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let f = fs::File::options().write(true).open(victim).unwrap();
            f.set_len(1 << 20).unwrap();
        }
    });
    let out = run_bounded(&mut cmd);
    truncate.join().unwrap();
    assert_fails(
        &out,
        &["sparse", "changed while the image was being written"],
    );
    assert!(!image.exists(), "a failed run left {image:?} behind");
}

#[test]
fn directories_that_cannot_be_read_are_named() {
    // Not listable (no read bit), and listable but not searchable (no
    // execute bit: the names are there, their metadata is not). As root,
    // the tool runs as nobody, to whom the "other" bits apply.
    let (no_read, no_search) = if is_root() {
        (0o003, 0o006)
    } else {
        (0o300, 0o600)
    };
    for (mode, needle) in [(no_read, "listing directory"), (no_search, "inspecting")] {
        let s = Scratch::new();
        let dir = s.path(HELLO).join("locked");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("inside"), b"x").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let spec = s.hello_spec("");
        let out = run_unprivileged(&s, &spec);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_fails(&out, &["locked", needle, "Permission denied"]);
        assert!(out.stdout.is_empty());
    }
}

/// Creates `depth` nested directories named `name` under `root`, then a
/// file `leaf`, through directory descriptors, as a path longer than
/// PATH_MAX cannot be named whole.
fn deep_tree(root: &Path, name: &str, depth: usize) {
    python(
        r#"
import os, sys
root, name, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    os.mkdir(name, dir_fd=fd)
    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = sub
leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(leaf, b"deep\n")
"#,
        &[root.as_os_str(), name.as_ref(), depth.to_string().as_ref()],
    );
}

#[test]
fn tree_deeper_than_path_max_is_a_clear_error() {
    let s = Scratch::new();
    let deep = s.path("0000000000000000000000000000000d-deep");
    fs::create_dir(&deep).unwrap();
    // 20 levels of 250-byte names: 5000 bytes, over Linux's 4096.
    deep_tree(&deep, &"d".repeat(250), 20);
    let out = run_spec(&s.spec(&[vec!["0000000000000000000000000000000d-deep".into()]], ""));
    assert_fails(&out, &["-deep/ddd", "File name too long"]);
    assert!(out.stdout.is_empty());
}

#[test]
fn tree_as_deep_as_path_max_allows_is_archived() {
    // Over 2000 levels of one-letter directories: the walk must not keep
    // one stack frame per level on a worker thread's small stack.
    let s = Scratch::new();
    let deep = s.path("0000000000000000000000000000000d-deep");
    fs::create_dir(&deep).unwrap();
    let depth = (4000 - deep.as_os_str().len()) / 2;
    assert!(depth > 1900, "temp dir path too long for this test");
    deep_tree(&deep, "a", depth);
    let out = run_spec(&s.spec(&[vec!["0000000000000000000000000000000d-deep".into()]], ""));
    assert_succeeds(&out);
    let mut names = Vec::new();
    for_each_layer(&out.stdout, |_, layer| {
        let mut a = tar::Archive::new(layer);
        for e in a.entries().unwrap() {
            names.push(e.unwrap().path_bytes().into_owned());
        }
    });
    let mut want = deep.as_os_str().as_bytes().to_vec();
    for _ in 0..depth {
        want.extend_from_slice(b"/a");
    }
    want.extend_from_slice(b"/leaf");
    assert_eq!(names.last().unwrap(), &want);
    let parents = s.store().components().count() - 1;
    assert_eq!(names.len(), parents + 1 + depth + 1);
}

/// Calls `f` with the name and bytes of each `layer.tar` in a docker-archive.
fn for_each_layer(image: &[u8], mut f: impl FnMut(&str, &[u8])) {
    let mut a = tar::Archive::new(image);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name.ends_with("/layer.tar") {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            f(&name, &data);
        }
    }
}

#[test]
fn names_with_newlines_and_control_characters_read_back_in_tarfile() {
    let s = Scratch::empty();
    let root = s.path("0000000000000000000000000000000e-names");
    fs::create_dir(&root).unwrap();
    let long = "long-\n".repeat(30);
    let names: &[&[u8]] = &[
        b"new\nline",
        b"\nleading-newline",
        b"trailing-newline\n",
        b"tab\there",
        b"cr\rhere",
        b"esc\x1b[31mred",
        b"bell\x07",
        b"del\x7f",
        b"c0\x01\x02\x03\x1f",
        b"not-utf8-\xff\xfe",
        b"back\\slash",
        b" spaced ",
        b"=equals=",
        b"12 path=fake\n",
        "c1-\u{85}-\u{9b}".as_bytes(),
        long.as_bytes(),
    ];
    let dir = root.join(OsStr::from_bytes(b"dir\nwith\x01control"));
    fs::create_dir(&dir).unwrap();
    let mut want: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    for name in names {
        fs::write(dir.join(OsStr::from_bytes(name)), name).unwrap();
        let mut p = dir.as_os_str().as_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        want.insert((p, Vec::new()));
    }
    let link = root.join(OsStr::from_bytes(b"link\n\x1b"));
    symlink(OsStr::from_bytes(b"tar\nget\x01\xff"), &link).unwrap();
    want.insert((
        link.as_os_str().as_bytes().to_vec(),
        b"tar\nget\x01\xff".to_vec(),
    ));
    let mut d = dir.as_os_str().as_bytes().to_vec();
    d.push(b'/');
    want.insert((d, Vec::new()));
    let mut r = root.as_os_str().as_bytes().to_vec();
    r.push(b'/');
    want.insert((r, Vec::new()));

    let spec = s.spec(&[vec!["0000000000000000000000000000000e-names".into()]], "");
    let image = s.dir.path().join("image.tar");
    let out = run(&[spec.as_os_str(), "-o".as_ref(), image.as_os_str()]);
    assert_succeeds(&out);

    // Python's tarfile reads every name and link target back, byte for
    // byte (names as os.fsencode gives them).
    let listing = python(
        r#"
import os, sys, tarfile
with tarfile.open(sys.argv[1]) as outer:
    for m in outer.getmembers():
        if m.name.endswith("/layer.tar"):
            with tarfile.open(fileobj=outer.extractfile(m)) as layer:
                for e in layer.getmembers():
                    name = os.fsencode(e.name) + (b"/" if e.isdir() else b"")
                    print(name.hex(), os.fsencode(e.linkname).hex())
"#,
        &[image.as_os_str()],
    );
    let got: BTreeSet<(Vec<u8>, Vec<u8>)> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, t) = l.split_once(' ').unwrap();
            (unhex(n), unhex(t))
        })
        .filter(|(n, _)| n.starts_with(root.as_os_str().as_bytes()))
        .collect();
    assert_eq!(got, want);
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Tar headers, read back by CPython's tarfile
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift64*): a failing case is
/// reproduced by its number alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Bytes as hostile as a member name or record value can be, short of
    /// NUL (no path holds one) and a trailing slash (which tarfile strips
    /// from names).
    fn text(&mut self, max_pieces: usize) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"nix",
            b"store",
            b"0123456789abcdfghijklmnpqrsvwxyz-hello-2.12",
            b"..",
            b".",
            "\u{e9}".as_bytes(),
            "\u{65e5}\u{672c}".as_bytes(),
            "\u{1f980}".as_bytes(),
            "\u{85}\u{2028}".as_bytes(),
            b"\xff\xfe",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\n",
            b"\r\t",
            b"\x01\x1b\x1f\x7f",
            b" ",
            b"=",
            b"12 path=x\n",
            b"21 hdrcharset=BINARY\n",
            b"\\'\"",
        ];
        let mut out = Vec::new();
        for i in 0..=self.below(max_pieces) {
            if i > 0 && self.below(3) == 0 {
                out.push(b'/');
            }
            if self.below(8) == 0 {
                let n = self.below(300);
                out.extend(vec![b'x'; n]);
            } else {
                out.extend_from_slice(self.pick(PIECES));
            }
        }
        while out.last() == Some(&b'/') {
            out.pop();
        }
        if out.is_empty() {
            out.push(b'x');
        }
        out
    }

    fn number(&mut self) -> i64 {
        let any = self.next() as i64;
        self.pick(&[
            0,
            1,
            0o7777777,
            0o10000000,
            0o77777777777,
            0o100000000000,
            -1,
            i64::MIN,
            i64::MAX,
            any,
            any & 0xffff_ffff,
        ])
    }
}

struct HeaderCase {
    name: Vec<u8>,
    link: Vec<u8>,
    uname: Vec<u8>,
    gname: Vec<u8>,
    mode: u32,
    uid: i64,
    gid: i64,
    size: u64,
    mtime: i64,
    kind: stream_layered_image::tar::header::EntryType,
    /// Records the member carries itself, as a base image member may.
    pax: Vec<(String, Vec<u8>)>,
}

impl HeaderCase {
    fn generate(rng: &mut Rng) -> HeaderCase {
        use stream_layered_image::tar::header::EntryType;
        let kind = rng.pick(&[
            EntryType::Regular,
            EntryType::Regular,
            EntryType::Directory,
            EntryType::Symlink,
            EntryType::Other(b'1'),
            EntryType::Other(b'3'),
            EntryType::Other(b'4'),
            EntryType::Other(b'6'),
            EntryType::Other(b'7'),
            EntryType::Other(0),
        ]);
        let name_or_empty = |rng: &mut Rng, pieces| {
            if rng.below(2) == 0 {
                Vec::new()
            } else {
                rng.text(pieces)
            }
        };
        let mut pax = Vec::new();
        for _ in 0..rng.pick(&[0, 0, 0, 1, 3]) {
            let key = rng.pick(&[
                "path",
                "linkpath",
                "uname",
                "gname",
                "comment",
                "atime",
                "SCHILY.xattr.user.k",
            ]);
            if !pax.iter().any(|(k, _)| k == key) {
                pax.push((key.to_owned(), rng.text(6)));
            }
        }
        // ASCII around a field's length (100 for names, 32 for owners),
        // where the value moves from the field to a record.
        let around = |rng: &mut Rng, limit: usize| {
            let mut v = vec![b'n'; limit - 2 + rng.below(5)];
            v[limit / 2] = b'/';
            v
        };
        let name = match rng.below(6) {
            0 => around(rng, 100),
            _ => rng.text(12),
        };
        let link = match rng.below(6) {
            0 => around(rng, 100),
            _ => name_or_empty(rng, 12),
        };
        let owner = |rng: &mut Rng| match rng.below(4) {
            0 => around(rng, 32),
            1 => rng.text(2),
            _ => rng.pick(&[&b""[..], b"root", b"nixbld"]).to_vec(),
        };
        HeaderCase {
            name,
            link,
            uname: owner(rng),
            gname: owner(rng),
            mode: rng.next() as u32,
            uid: rng.number(),
            gid: rng.number(),
            size: rng
                .pick(&[0, 1, 0o77777777777, 0o100000000000, 9 << 30, u64::MAX])
                .max(if rng.below(4) == 0 { rng.next() } else { 0 }),
            mtime: rng.number(),
            kind,
            pax,
        }
    }

    fn encode(&self) -> Vec<u8> {
        use stream_layered_image::tar::header::{self as tarheader, Header};
        let mut out = Vec::new();
        tarheader::encode(
            &Header {
                name: &self.name,
                mode: self.mode,
                uid: self.uid,
                gid: self.gid,
                size: self.size,
                mtime: self.mtime,
                entry_type: self.kind,
                linkname: &self.link,
                uname: &self.uname,
                gname: &self.gname,
                pax: &self.pax,
            },
            &mut out,
        );
        out
    }

    /// The member's own record for `key`, else what we gave the encoder.
    fn given<'a>(&'a self, key: &str, ours: &'a [u8]) -> &'a [u8] {
        self.pax
            .iter()
            .find(|(k, _)| k == key)
            .map_or(ours, |(_, v)| v)
    }
}

const TARFILE_READ: &str = r#"
import io, sys, tarfile
def h(s):
    return s.encode("utf-8", "surrogateescape").hex()
for line in sys.stdin:
    data = bytes.fromhex(line.strip()) + bytes(1024)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:",
                          encoding="utf-8", errors="surrogateescape") as tf:
            t = tf.next()
            pax = ",".join(h(k) + ":" + h(v) for k, v in t.pax_headers.items())
            fields = [h(t.name), h(t.linkname), h(t.uname), h(t.gname),
                      str(t.mode), t.type.hex(), str(t.uid), str(t.gid),
                      str(t.size), str(t.mtime), pax]
    except Exception as e:
        fields = ["error", repr(e)]
    print("|".join(fields), flush=True)
"#;

#[test]
fn tar_headers_read_back_in_python_tarfile() {
    // tests/tarheader_compat.rs compares our headers with the ones tarfile
    // writes; this reads ours back with tarfile, including names and
    // values no store path has and the records base image members carry.
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let cases: Vec<HeaderCase> = (0..4000).map(|_| HeaderCase::generate(&mut rng)).collect();
    let mut child = Command::new("python3")
        .args(["-c", TARFILE_READ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let blobs: Vec<String> = cases.iter().map(|c| hex(&c.encode())).collect();
    let writer = std::thread::spawn(move || {
        for b in blobs {
            writeln!(stdin, "{b}").unwrap();
        }
    });
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines.len(), cases.len());

    let computed = [
        "hdrcharset",
        "path",
        "linkpath",
        "uname",
        "gname",
        "uid",
        "gid",
        "size",
        "mtime",
    ];
    for (i, (c, line)) in cases.iter().zip(&lines).enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        assert_ne!(
            f[0], "error",
            "case {i}: tarfile refuses our header: {line}"
        );
        let ctx = format!("case {i}, name {:?}", String::from_utf8_lossy(&c.name));
        assert_eq!(unhex(f[0]), c.given("path", &c.name), "{ctx}: name");
        assert_eq!(unhex(f[1]), c.given("linkpath", &c.link), "{ctx}: link");
        assert_eq!(unhex(f[2]), c.given("uname", &c.uname), "{ctx}: uname");
        assert_eq!(unhex(f[3]), c.given("gname", &c.gname), "{ctx}: gname");
        assert_eq!(f[4], (c.mode & 0o7777).to_string(), "{ctx}: mode");
        // tarfile reads the old regular type (NUL) as a directory when the
        // ustar name field ends with a slash, as a long name cut at 100
        // bytes may (its writer cuts it the same way).
        let block = c.encode();
        let ustar_name = block[block.len() - 512..][..100].split(|&b| b == 0).next();
        let want_type = match c.kind.flag() {
            0 if ustar_name.is_some_and(|n| n.ends_with(b"/")) => b'5',
            flag => flag,
        };
        assert_eq!(f[5], format!("{want_type:02x}"), "{ctx}: type");
        let records: Vec<(String, Vec<u8>)> = f[10]
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (k, v) = r.split_once(':').unwrap();
                (String::from_utf8(unhex(k)).unwrap(), unhex(v))
            })
            .collect();
        for (key, value) in &c.pax {
            let got = records.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            assert_eq!(got, Some(value), "{ctx}: the member's own {key:?} record");
        }
        for (key, _) in &records {
            assert!(
                computed.contains(&key.as_str()) || c.pax.iter().any(|(k, _)| k == key),
                "{ctx}: unexpected record {key:?}"
            );
        }
        // Numbers too large for their field (or negative) are in a
        // record, which tarfile reads as text; else in the field.
        let numbers = [
            ("uid", f[6], i128::from(c.uid)),
            ("gid", f[7], i128::from(c.gid)),
            ("size", f[8], i128::from(c.size)),
            ("mtime", f[9], i128::from(c.mtime)),
        ];
        for (key, field, want) in numbers {
            let got = match records.iter().find(|(k, _)| k == key) {
                Some((_, v)) => String::from_utf8(v.clone()).unwrap(),
                None => field.to_owned(),
            };
            assert_eq!(got, want.to_string(), "{ctx}: {key}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

/// Keeps the first `keep` bytes read through it and counts the rest.
struct Prefix<R> {
    inner: R,
    keep: usize,
    head: Vec<u8>,
    total: u64,
}

impl<R: Read> Read for Prefix<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = self.keep.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        self.total += n as u64;
        Ok(n)
    }
}

#[test]
fn sparse_9_gib_file_gets_a_pax_size_record_like_tarfile() {
    const SIZE: u64 = 9 << 30;
    let s = Scratch::empty();
    let root = s.path("0000000000000000000000000000000f-sparse");
    fs::create_dir(&root).unwrap();
    let big = root.join("sparse");
    let f = fs::File::create(&big).unwrap();
    f.set_len(SIZE).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .unwrap();
    drop(f);
    let spec = s.spec(
        &[vec!["0000000000000000000000000000000f-sparse".into()]],
        "",
    );

    // The header CPython's tarfile writes for this member (PAX format, as
    // the reference's tarfile.open(mode="w|") uses).
    let want = python(
        r#"
import sys, tarfile
info = tarfile.TarInfo(sys.argv[1])
info.size = int(sys.argv[2])
info.mode = 0o644
info.mtime = 1
info.uname = info.gname = "root"
sys.stdout.buffer.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
"#,
        &[big.as_os_str(), SIZE.to_string().as_ref()],
    );
    assert!(contains(&want, b"size=9663676416\n"));

    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg(&spec)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = Prefix {
        inner: child.stdout.take().unwrap(),
        keep: 64 << 10,
        head: Vec::new(),
        total: 0,
    };
    // Walk the outer archive and the layer inside it as a stream, with the
    // tar crate, which skips the 9 GiB by reading (and counting) them.
    let mut sizes = Vec::new();
    {
        let mut outer = tar::Archive::new(&mut stdout);
        for e in outer.entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().to_string_lossy().ends_with("/layer.tar") {
                let mut layer = tar::Archive::new(e);
                for inner in layer.entries().unwrap() {
                    let inner = inner.unwrap();
                    sizes.push((inner.path().unwrap().into_owned(), inner.size()));
                }
            }
        }
    }
    io::copy(&mut stdout, &mut io::sink()).unwrap();
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{}", stderr_of(&out));
    eprintln!(
        "9 GiB sparse file: {} bytes streamed in {:.1} s",
        stdout.total,
        elapsed.as_secs_f64()
    );
    assert!(sizes.contains(&(big.clone(), SIZE)), "{sizes:?}");
    assert!(stdout.total > SIZE);
    // Byte for byte, the member's header is tarfile's, on a block boundary.
    let at = stdout
        .head
        .windows(want.len())
        .position(|w| w == &want[..])
        .expect("tarfile's header for the 9 GiB member is in the stream");
    // The outer header block(s) come first; inside the layer, headers
    // start on 512-byte boundaries of the layer, which itself starts on a
    // block boundary of the outer archive.
    assert_eq!(at % 512, 0);
}

/// Creates store path `name` holding `count` files of 1 KiB, in
/// directories of 1000.
fn many_files(s: &Scratch, name: &str, count: usize) {
    let root = s.path(name);
    let data = vec![b'x'; 1024];
    for d in (0..count).step_by(1000) {
        let dir = root.join(format!("d{d:07}"));
        fs::create_dir_all(&dir).unwrap();
        for i in d..(d + 1000).min(count) {
            fs::write(dir.join(format!("f{i:07}")), &data).unwrap();
        }
    }
}

#[test]
fn memory_per_entry_stays_small() {
    // Peak RSS at 10,000 and 100,000 entries in one layer: the slope is
    // what each entry costs (its path and identity are kept between the
    // hashing and the streaming pass; its contents must not be). The
    // 1,000,000-file figures in the README come from scripts/scale-test.
    let s = Scratch::empty();
    let (small, big) = (10_000, 100_000);
    many_files(&s, "0000000000000000000000000000000s-small", small);
    many_files(&s, "0000000000000000000000000000000b-big", big);
    let measure = |name: &str| {
        let spec = s.spec(&[vec![name.into()]], "");
        let started = Instant::now();
        let (out, rss) = peak_rss_kib(&[spec.as_os_str(), "--quiet".as_ref()]);
        assert_succeeds(&out);
        (rss, started.elapsed())
    };
    let (small_rss, small_time) = measure("0000000000000000000000000000000s-small");
    let (big_rss, big_time) = measure("0000000000000000000000000000000b-big");
    let per_entry = (big_rss.saturating_sub(small_rss) * 1024) / (big - small) as u64;
    eprintln!(
        "peak RSS: {small} files {small_rss} KiB ({small_time:.1?}), \
         {big} files {big_rss} KiB ({big_time:.1?}): {per_entry} bytes per entry"
    );
    // Each file is 1 KiB: keeping contents would cost more than this.
    assert!(per_entry < 512, "{per_entry} bytes of peak RSS per entry");
    assert!(
        big_rss < 128 * 1024,
        "peak RSS {big_rss} KiB for {big} files"
    );
}

#[test]
fn more_than_125_layers_warns_about_docker() {
    let s = Scratch::empty();
    let mut layers = Vec::new();
    for i in 0..200 {
        let name = format!("{i:032}-p{i}");
        fs::create_dir(s.path(&name)).unwrap();
        fs::write(s.path(&name).join("f"), name.as_bytes()).unwrap();
        layers.push(vec![name]);
    }
    let out = run_spec(&s.spec(&layers, ""));
    assert_succeeds(&out);
    let stderr = stderr_of(&out);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("200 layers"), "{}", warnings[0]);
    assert!(warnings[0].contains("125"), "{}", warnings[0]);

    let out = run_spec(&s.spec(&layers[..125], ""));
    assert_succeeds(&out);
    assert!(!stderr_of(&out).contains("warning"), "{}", stderr_of(&out));
}

// ---------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------

/// What a store tree holds, in an order we choose to create it.
enum Node {
    Dir(&'static str, u32),
    File(&'static str, u32, usize),
    Link(&'static str, &'static str),
    HardLink(&'static str, &'static str),
}

fn tree() -> Vec<Node> {
    use Node::*;
    let long: &'static str = Box::leak(format!("p1/{}", "long-".repeat(30)).into_boxed_str());
    vec![
        Dir("p1", 0o755),
        Dir("p1/bin", 0o755),
        File("p1/bin/tool", 0o755, 4000),
        File("p1/bin/setuid", 0o4755, 10),
        Dir("p1/lib", 0o555),
        File("p1/lib/empty", 0o444, 0),
        File("p1/lib/one-block", 0o644, 512),
        File("p1/lib/mapped", 0o644, 300 << 10),
        File("p1/lib/windows", 0o644, (5 << 20) + 7),
        Link("p1/lib/libz.so", "mapped"),
        Link("p1/abs", "/nix/store/elsewhere"),
        Link("p1/dangling", "nowhere"),
        HardLink("p1/lib/hard", "p1/lib/one-block"),
        File(long, 0o644, 100),
        Dir("p1/é-ü", 0o700),
        File("p1/é-ü/日本", 0o600, 33),
        Dir("p2", 0o755),
        File("p2/a", 0o644, 1),
        File("p2/B", 0o644, 2),
        File("p2/a.b", 0o644, 3),
        File("p2/a-b", 0o644, 4),
        Dir("p3", 0o755),
        File("p3/data", 0o644, 70_000),
    ]
}

fn content(path: &str, len: usize) -> Vec<u8> {
    let seed = path
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
    (0..len)
        .map(|i| (seed.wrapping_add(i as u32 * 2_654_435_761) >> 13) as u8)
        .collect()
}

/// Creates the tree under `root` in `order`, parents always first.
fn build_tree(root: &Path, reverse: bool) {
    let nodes = tree();
    let mut order: Vec<&Node> = nodes.iter().collect();
    if reverse {
        // Children before siblings' earlier entries; parents still first.
        order.sort_by_key(|n| match n {
            Node::Dir(p, _) => (0, std::cmp::Reverse(*p)),
            Node::File(p, ..) | Node::Link(p, _) => (1, std::cmp::Reverse(*p)),
            Node::HardLink(p, _) => (2, std::cmp::Reverse(*p)),
        });
        order.sort_by_key(|n| match n {
            Node::Dir(p, _) => p.matches('/').count(),
            _ => usize::MAX,
        });
    }
    let mut dirs = Vec::new();
    for node in order {
        match node {
            Node::Dir(p, mode) => {
                fs::create_dir(root.join(p)).unwrap();
                dirs.push((root.join(p), *mode));
            }
            Node::File(p, mode, len) => {
                fs::write(root.join(p), content(p, *len)).unwrap();
                fs::set_permissions(root.join(p), fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Link(p, target) => symlink(target, root.join(p)).unwrap(),
            Node::HardLink(p, target) => fs::hard_link(root.join(target), root.join(p)).unwrap(),
        }
    }
    for (dir, mode) in dirs {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn remove_tree(root: &Path) {
    for entry in fs::read_dir(root).unwrap() {
        let p = entry.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            remove_tree(&p);
            fs::remove_dir(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

#[test]
fn same_spec_gives_identical_bytes() {
    let s = Scratch::empty();
    build_tree(&s.store(), false);
    let base = Base::new();
    let base_path = s.dir.path().join("base.tar.gz");
    fs::write(&base_path, gzip(&archive(&base.members()))).unwrap();
    let spec = s.spec(
        &[vec!["p1".into(), "p2".into()], vec!["p3".into()]],
        &format!(r#", "from_image": {:?}"#, base_path.display().to_string()),
    );
    let run_with = |env: &[(&str, &str)], umask: &str, to_file: bool| -> Vec<u8> {
        let file = s.dir.path().join("out.tar");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"umask "$1"; shift; exec "$@""#)
            .arg("sh")
            .arg(umask)
            .arg(BIN)
            .arg(&spec)
            .arg("--quiet");
        if to_file {
            cmd.arg("-o").arg(&file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_succeeds(&out);
        if to_file {
            fs::read(&file).unwrap()
        } else {
            out.stdout
        }
    };
    let first = run_with(&[], "022", false);
    assert!(first.len() > 5 << 20);
    let variants: [(&str, Vec<u8>); 7] = [
        ("a second run", run_with(&[], "022", false)),
        (
            "RAYON_NUM_THREADS=1",
            run_with(&[("RAYON_NUM_THREADS", "1")], "022", false),
        ),
        (
            "RAYON_NUM_THREADS=5",
            run_with(&[("RAYON_NUM_THREADS", "5")], "022", false),
        ),
        ("umask 077", run_with(&[], "077", false)),
        ("umask 000", run_with(&[], "000", false)),
        ("umask 077, -o", run_with(&[], "077", true)),
        ("umask 000, -o", run_with(&[], "000", true)),
    ];
    for (what, bytes) in variants {
        assert!(bytes == first, "{what}: different bytes");
    }

    // The same tree, created again in another order (so with other inode
    // numbers and directory order on disk).
    remove_tree(&s.store());
    build_tree(&s.store(), true);
    let again = run_with(&[], "022", false);
    assert!(again == first, "a tree created in another order differs");
}
