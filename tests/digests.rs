//! Layer digests taken ahead of the build (`digest`, `store_layer_digests`):
//! the records match what a build without them finds; with them, outputs
//! are the same bytes in one pass; a stale record fails every output
//! without yielding an image; a record of another layer is refused; and,
//! against a real `docker-registry` on 127.0.0.1, a re-push of an unchanged
//! image reads no store file (its child's I/O counters, and the store moved
//! away) while a push where one layer changed uploads only that layer.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A store of three layers: an app, a library of many small files (read
/// with `read`, so counted by the I/O counters' `rchar`) and a large file
/// (mapped and, into a pipe, spliced).
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let s = Store { dir };
        let app = s.path("aaaa-app");
        fs::create_dir_all(app.join("bin")).unwrap();
        fs::write(app.join("bin/app"), b"#!/bin/sh\necho app 1\n").unwrap();
        std::os::unix::fs::symlink("../bbbb-lib/f0", app.join("lib")).unwrap();
        let lib = s.path("bbbb-lib");
        fs::create_dir_all(&lib).unwrap();
        // 64 files of 200 KiB: 12.5 MiB that only `read` brings in.
        for i in 0..64u32 {
            let data: Vec<u8> = (0..200 * 1024u32)
                .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
                .collect();
            fs::write(lib.join(format!("f{i}")), data).unwrap();
        }
        let big = s.path("cccc-big");
        fs::create_dir_all(&big).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        fs::write(big.join("blob"), data).unwrap();
        s
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The spec of the three layers, with `extra` JSON members.
    fn spec_with(&self, name: &str, layers: &[&[&str]], extra: &str) -> PathBuf {
        let layers: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|n| self.path(n).display().to_string())
                    .collect()
            })
            .collect();
        let spec = self.file(name);
        fs::write(
            &spec,
            format!(
                r#"{{"architecture": "amd64", "config": {{"Cmd": ["/bin/app"]}},
                    "created": "1970-01-01T00:00:01Z", "store_dir": {store:?},
                    "store_layers": {layers:?}, "repo_tag": "digests:1"{extra}}}"#,
                store = self.store().display().to_string(),
            ),
        )
        .unwrap();
        spec
    }

    fn spec(&self) -> PathBuf {
        self.spec_with("spec.json", LAYERS, "")
    }

    /// The spec with `store_layer_digests` from `digest` with `compress`.
    fn recorded_spec(&self, compress: &[&str]) -> PathBuf {
        let records = digest(&self.spec(), None, compress);
        self.spec_with(
            "recorded.json",
            LAYERS,
            &format!(", \"store_layer_digests\": {records}"),
        )
    }
}

const LAYERS: &[&[&str]] = &[&["aaaa-app"], &["bbbb-lib"], &["cccc-big"]];

/// `digest SPEC [--layer N] [--compress C]...`, parsed.
fn digest(spec: &Path, layer: Option<usize>, compress: &[&str]) -> Value {
    let mut cmd = Command::new(TOOL);
    cmd.arg("digest").arg(spec);
    if let Some(n) = layer {
        cmd.args(["--layer", &n.to_string()]);
    }
    for c in compress {
        cmd.args(["--compress", c]);
    }
    let out = clients::run(&mut cmd);
    serde_json::from_slice(&out.stdout).expect("digest prints JSON")
}

fn tool(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(TOOL);
    for a in args {
        cmd.arg(a);
    }
    cmd.stdin(Stdio::null());
    clients::output_within(&mut cmd, Duration::from_secs(120))
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One error line on stderr, exit status 1, containing every needle.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("stream-layered-image: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {:?}",
            lines[0]
        );
    }
}

/// The blob digests and sizes of the (single) image in an OCI layout.
fn oci_layer_blobs(layout: &Path) -> Vec<(String, u64)> {
    let read = |digest: &str| -> Value {
        let p = layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_owned();
            // The blob file itself, hashed here.
            let file = layout
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap());
            assert_eq!(format!("sha256:{}", clients::sha256_file(&file)), digest);
            (digest, l["size"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn records_are_what_a_build_without_them_finds() {
    let s = Store::new();
    let spec = s.spec();
    let records = digest(&spec, None, &["gzip", "zstd:3"]);
    let records = records.as_array().expect("a list of records");
    assert_eq!(records.len(), 3);

    // diff_ids and sizes, against a docker-archive built without records.
    let tar = s.file("plain.tar");
    assert_ok(&tool(&[&spec, &"-q", &"-o", &tar]));
    let archive = clients::Archive::read(&tar);
    let diff_ids = archive.diff_ids();
    let mut layers = Vec::new();
    let mut members = tar::Archive::new(fs::File::open(&tar).unwrap());
    for entry in members.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("layer.tar") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            layers.push(bytes);
        }
    }
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["diff_id"], diff_ids[i], "layer {i}");
        assert_eq!(
            record["size"].as_u64(),
            Some(layers[i].len() as u64),
            "layer {i}"
        );
        // What a one-pass stream checks the layer against.
        assert_eq!(
            record["xxh3_128"].as_str(),
            Some(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&layers[i])).as_str()),
            "layer {i}"
        );
    }

    // Blobs, against OCI layouts written without records.
    for (name, compress) in [("gzip:5", "gzip"), ("zstd:3", "zstd:3")] {
        let dir = s.file(&format!("oci-{compress}"));
        assert_ok(&tool(&[
            &spec,
            &"-q",
            &"--format",
            &"oci-dir",
            &dir,
            &"--compress",
            &compress,
        ]));
        for (i, (digest, size)) in oci_layer_blobs(&dir).into_iter().enumerate() {
            assert_eq!(
                records[i]["blobs"][name]["digest"],
                digest.as_str(),
                "{name} {i}"
            );
            assert_eq!(
                records[i]["blobs"][name]["size"].as_u64(),
                Some(size),
                "{name} {i}"
            );
        }
    }

    // One layer alone is the same record, and keys tell layers apart.
    for (i, record) in records.iter().enumerate() {
        assert_eq!(&digest(&spec, Some(i), &["gzip", "zstd:3"]), record);
    }
    assert_ne!(records[0]["key"], records[1]["key"]);
}

#[test]
fn with_records_every_output_has_the_same_bytes() {
    let s = Store::new();
    let spec = s.spec();
    let recorded = s.recorded_spec(&["gzip"]);
    for (name, args) in [
        ("docker-archive", &[][..]),
        (
            "oci-archive",
            &["--format", "oci-archive", "--compress", "gzip"][..],
        ),
        (
            "docker+oci",
            &["--format", "docker+oci", "--compress", "gzip"][..],
        ),
    ] {
        let plain = s.file(&format!("{name}-plain.tar"));
        let with = s.file(&format!("{name}-recorded.tar"));
        let mut cmd = Command::new(TOOL);
        clients::run(cmd.arg(&spec).arg("-q").args(args).arg("-o").arg(&plain));
        let mut cmd = Command::new(TOOL);
        let out = clients::run(cmd.arg(&recorded).arg("-o").arg(&with).args(args));
        assert!(
            fs::read(&plain).unwrap() == fs::read(&with).unwrap(),
            "{name}: the bytes differ with store_layer_digests"
        );
        // Taken from the records, not hashed.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("hashing layer"), "{name}: {err}");
        assert_eq!(err.matches("from store_layer_digests").count(), 3, "{err}");
    }
    // Through a pipe (large files spliced), too.
    let out = clients::run(Command::new(TOOL).arg(&spec).arg("-q"));
    let piped = clients::run(Command::new(TOOL).arg(&recorded).arg("-q"));
    assert!(
        out.stdout == piped.stdout,
        "stdout differs with store_layer_digests"
    );
    // A compression the records lack: that layer is hashed as usual.
    let plain = s.file("zstd-plain.tar");
    let with = s.file("zstd-recorded.tar");
    let zstd = ["--format", "oci-archive", "--compress", "zstd"];
    clients::run(
        Command::new(TOOL)
            .arg(&spec)
            .arg("-q")
            .args(zstd)
            .arg("-o")
            .arg(&plain),
    );
    let out = clients::run(
        Command::new(TOOL)
            .arg(&recorded)
            .args(zstd)
            .arg("-o")
            .arg(&with),
    );
    assert!(fs::read(&plain).unwrap() == fs::read(&with).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hashing layer 1/3"));
}

/// Changes a byte of a library file, keeping its size: what a store that
/// changed after `digest` (or a record copied from elsewhere) looks like.
fn make_stale(s: &Store) {
    let f = s.path("bbbb-lib").join("f7");
    let mut data = fs::read(&f).unwrap();
    data[1000] ^= 0xff;
    fs::write(&f, data).unwrap();
}

const STALE: &[&str] = &["layer 2:", "store_layer_digests[1]", "stale"];

/// The names of the members a (possibly cut short) tar stream holds.
fn member_names(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().unwrap().display().to_string()))
        .collect()
}

#[test]
fn a_stale_record_fails_every_output_without_an_image() {
    let s = Store::new();
    let recorded = s.recorded_spec(&["gzip"]);
    make_stale(&s);

    // stdout: the archive stops before its manifest.
    let out = tool(&[&recorded, &"-q"]);
    assert_one_line_error(&out, STALE);
    let names = member_names(&out.stdout);
    assert!(!names.iter().any(|n| n == "manifest.json"), "{names:?}");
    assert!(
        !out.stdout.is_empty(),
        "layer 1 was streamed before the check"
    );

    // -o, docker-archive and oci-archive: no file.
    for args in [
        &[][..],
        &["--format", "oci-archive", "--compress", "gzip"][..],
    ] {
        let target = s.file("stale.tar");
        let mut cmd = Command::new(TOOL);
        cmd.arg(&recorded)
            .arg("-q")
            .args(args)
            .arg("-o")
            .arg(&target);
        let out = clients::output_within(cmd.stdin(Stdio::null()), Duration::from_secs(60));
        assert_one_line_error(&out, STALE);
        assert!(!target.exists(), "{args:?}: -o left a file");
        let leftovers: Vec<_> = fs::read_dir(s.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("stale"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    // oci-archive on stdout: no index.json.
    let out = tool(&[
        &recorded,
        &"-q",
        &"--format",
        &"oci-archive",
        &"--compress",
        &"gzip",
    ]);
    assert_one_line_error(&out, STALE);
    let names = member_names(&out.stdout);
    assert!(!names.iter().any(|n| n == "index.json"), "{names:?}");
}

/// Records written before they held an XXH3-128: the one pass checks the
/// layer's SHA-256 instead, and a stale one still fails, naming the
/// diff_id; an XXH3-128 that is not the layer's fails, naming it.
#[test]
fn records_without_or_with_a_wrong_xxh3_are_checked() {
    let s = Store::new();
    let mut records = digest(&s.spec(), None, &["gzip"]);
    let with_records = |name: &str, records: &Value| {
        s.spec_with(
            name,
            LAYERS,
            &format!(", \"store_layer_digests\": {records}"),
        )
    };
    let mut wrong_xxh3 = records.clone();
    wrong_xxh3[1]["xxh3_128"] = Value::from("0".repeat(32));
    let wrong_xxh3 = with_records("wrong-xxh3.json", &wrong_xxh3);
    let out = tool(&[&wrong_xxh3, &"-q"]);
    assert_one_line_error(
        &out,
        &["layer 2:", "its XXH3-128", "store_layer_digests[1]"],
    );

    for record in records.as_array_mut().unwrap() {
        record.as_object_mut().unwrap().remove("xxh3_128");
    }
    let old = with_records("old.json", &records);
    let plain = tool(&[&s.spec(), &"-q"]);
    assert_ok(&plain);
    let out = tool(&[&old, &"-q"]);
    assert_ok(&out);
    assert!(out.stdout == plain.stdout, "other bytes from old records");
    make_stale(&s);
    let out = tool(&[&old, &"-q"]);
    assert_one_line_error(&out, &["its diff_id", "store_layer_digests[1]", "stale"]);
    let names = member_names(&out.stdout);
    assert!(!names.iter().any(|n| n == "manifest.json"), "{names:?}");
}

/// A record whose diff_id holds but whose blob does not (taken with
/// another compressor, or edited): the blob is checked as it is written.
#[test]
fn a_record_with_a_wrong_blob_fails_oci_outputs_and_pushes() {
    let s = Store::new();
    let records = digest(&s.spec(), None, &["gzip"]);
    let real = records[2]["blobs"]["gzip:5"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let edited = records.to_string().replace(&real, &wrong);
    let spec = s.spec_with(
        "wrong-blob.json",
        LAYERS,
        &format!(", \"store_layer_digests\": {edited}"),
    );
    let target = s.file("wrong.tar");
    let out = tool(&[
        &spec,
        &"-q",
        &"--format",
        &"oci-archive",
        &"--compress",
        &"gzip",
        &"-o",
        &target,
    ]);
    assert_one_line_error(
        &out,
        &[
            "layer 3:",
            "its gzip:5 blob",
            "store_layer_digests[2]",
            &real[7..],
        ],
    );
    assert!(!target.exists());
    // The docker-archive has no blobs: it is whole, and checked.
    assert_ok(&tool(&[&spec, &"-q", &"-o", &target]));

    let Some(registry) = LoggingRegistry::start_for(
        "a_record_with_a_wrong_blob_fails_oci_outputs_and_pushes",
        &["docker-registry", "python3"],
    ) else {
        return;
    };
    let (out, _) = push_counted(&spec, &registry.target("digests:1"), s.dir.path());
    assert_one_line_error(&out, &["layer 3/3", &wrong[7..], "store_layer_digests"]);
    assert!(
        registry.requests("PUT", "/manifests/").is_empty(),
        "{}",
        registry.log()
    );
    // The blob that is not the recorded one was never completed (the
    // final PUT of an upload names its digest), while the others were.
    let completed = registry.requests("PUT", "/blobs/uploads/");
    assert!(
        !completed.iter().any(|l| l.contains(&real[7..])),
        "{}",
        completed.join("\n")
    );
    assert!(
        completed.iter().any(|l| l.contains("digest=sha256")),
        "the log shows no upload's digest:\n{}",
        registry.log()
    );
}

#[test]
fn a_record_of_another_layer_is_refused() {
    let s = Store::new();
    let records = digest(&s.spec(), None, &[]);
    // The same records for the layers in another order.
    let swapped = s.spec_with(
        "swapped.json",
        &[&["bbbb-lib"], &["aaaa-app"], &["cccc-big"]],
        &format!(", \"store_layer_digests\": {records}"),
    );
    let out = tool(&[&swapped, &"-q", &"-o", &s.file("x.tar")]);
    assert_one_line_error(
        &out,
        &[
            "swapped.json",
            "store_layer_digests[0].key",
            "another layer",
        ],
    );
    assert!(!s.file("x.tar").exists());
    // Another mtime stamps other bytes: another layer too.
    let later = s.spec_with(
        "later.json",
        LAYERS,
        &format!(", \"mtime\": \"1970-01-01T00:00:02Z\", \"store_layer_digests\": {records}"),
    );
    let out = tool(&[&later, &"-q", &"--format", &"oci-archive"]);
    assert_one_line_error(&out, &["later.json", "store_layer_digests[0].key"]);
    // One record too few.
    let mut two = records.clone();
    two.as_array_mut().unwrap().pop();
    let short = s.spec_with(
        "short.json",
        LAYERS,
        &format!(", \"store_layer_digests\": {two}"),
    );
    let out = tool(&[&short, &"-q"]);
    assert_one_line_error(
        &out,
        &[
            "short.json",
            "\"store_layer_digests\"",
            "2 records",
            "3 layers",
        ],
    );
}

#[test]
fn bad_records_and_digest_arguments_are_one_line_errors() {
    let s = Store::new();
    let records = digest(&s.spec(), None, &["gzip"]);
    let first = records[0].to_string();
    let cases: Vec<(String, &str)> = vec![
        ("\"yes\"".into(), "\"store_layer_digests\""),
        ("[1, 2, 3]".into(), "\"store_layer_digests[0]\""),
        (
            records
                .to_string()
                .replacen("\"diff_id\":\"sha256:", "\"diff_id\":\"sha512:", 1),
            "\"store_layer_digests[0].diff_id\"",
        ),
        (
            records.to_string().replacen("\"size\":", "\"size\":-", 1),
            "\"store_layer_digests[0].size\"",
        ),
        (
            records.to_string().replacen("\"gzip:5\"", "\"gzip\"", 1),
            "\"store_layer_digests[0].blobs[\\\"gzip\\\"]\"",
        ),
        (
            format!("[{first}, {}, {first}]", first.replace("\"key\"", "\"id\"")),
            "\"store_layer_digests[1].key\"",
        ),
    ];
    for (value, key) in cases {
        let spec = s.spec_with(
            "bad.json",
            LAYERS,
            &format!(", \"store_layer_digests\": {value}"),
        );
        let out = tool(&[&spec, &"-q", &"-o", &s.file("bad.tar")]);
        assert_one_line_error(&out, &["bad.json", key]);
        assert!(!s.file("bad.tar").exists());
    }

    let spec = s.spec();
    let out = tool(&[&"digest", &spec, &"--layer", &"3"]);
    assert_one_line_error(&out, &["--layer 3", "spec.json", "3 store layers"]);
    assert!(out.stdout.is_empty());
    let empty = s.spec_with("empty.json", &[], "");
    let out = tool(&[&"digest", &empty, &"--layer", &"0"]);
    assert_one_line_error(&out, &["--layer 0", "empty.json", "no store layers"]);
    let out = tool(&[&"digest", &spec, &"--compress", &"lz4"]);
    assert_one_line_error(&out, &["--compress \"lz4\""]);
    let out = tool(&[&"digest", &s.file("missing.json")]);
    assert_one_line_error(&out, &["missing.json"]);
    fs::rename(s.path("cccc-big"), s.file("moved")).unwrap();
    let out = tool(&[&"digest", &spec]);
    assert_one_line_error(&out, &["cccc-big", "does not exist"]);
}

// ---------------------------------------------------------------------------
// Pushing

/// A registry that logs every request, so that uploads can be counted.
struct LoggingRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl LoggingRegistry {
    fn start() -> LoggingRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = LoggingRegistry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "no registry:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// A registry for `test`, if it has `needs` (the registry among them).
    fn start_for(test: &str, needs: &[&str]) -> Option<LoggingRegistry> {
        clients::require(test, needs).then(LoggingRegistry::start)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn target(&self, name: &str) -> String {
        format!("127.0.0.1:{}/{name}", self.port)
    }

    /// Access-log lines of requests with this method whose path holds
    /// `part`.
    fn requests(&self, method: &str, part: &str) -> Vec<String> {
        let prefix = format!("\"{method} /v2/");
        self.log()
            .lines()
            .filter(|l| l.contains(&prefix) && l.contains(part))
            .map(str::to_owned)
            .collect()
    }

    /// Upload sessions opened so far.
    fn uploads(&self) -> usize {
        self.requests("POST", "/blobs/uploads/").len()
    }
}

impl Drop for LoggingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a child's `/proc/PID/io` once it has exited and before it is
/// reaped (`waitid` with `WNOWAIT`), so the counters are the whole run's.
const IO_WRAPPER: &str = r#"
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
with open("/proc/%d/io" % child.pid) as f:
    counters = f.read()
with open(sys.argv[1], "w") as f:
    f.write(counters)
sys.exit(child.wait())
"#;

/// Pushes `spec` (plain progress lines, no credentials of the user's),
/// returning the output and the child's I/O counters.
fn push_counted(spec: &Path, target: &str, dir: &Path) -> (Output, Vec<(String, u64)>) {
    push_counted_with(spec, target, dir, &[])
}

/// [`push_counted`] with `extra` arguments.
fn push_counted_with(
    spec: &Path,
    target: &str,
    dir: &Path,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> (Output, Vec<(String, u64)>) {
    let io = dir.join("push.io");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(IO_WRAPPER)
        .arg(&io)
        .arg(TOOL)
        .arg(spec)
        .args([
            "--progress",
            "plain",
            "--insecure",
            "--compress",
            "gzip",
            "--push",
            target,
        ]);
    for a in extra {
        cmd.arg(a);
    }
    cmd.stdin(Stdio::null())
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR");
    let out = clients::output_within(&mut cmd, Duration::from_secs(300));
    let counters = fs::read_to_string(&io)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect();
    (out, counters)
}

fn counter(counters: &[(String, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {counters:?}"))
        .1
}

/// The manifest digest a push reported.
fn pushed_manifest(out: &Output) -> String {
    let rest = after_marker(out, "pushed sha256:");
    rest.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What follows `marker` on the first stderr line of `out` that holds it.
fn after_marker(out: &Output, marker: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split(marker).nth(1))
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{err}"))
        .to_owned()
}

#[test]
fn an_unchanged_repush_with_records_reads_no_store_file() {
    let Some(registry) = LoggingRegistry::start_for(
        "an_unchanged_repush_with_records_reads_no_store_file",
        &["docker-registry", "python3", "skopeo"],
    ) else {
        return;
    };
    let s = Store::new();
    let recorded = s.recorded_spec(&["gzip"]);
    let target = registry.target("digests:1");

    // The first push reads the layers: the counters can see a read.
    let (first, io_first) = push_counted(&recorded, &target, s.dir.path());
    assert_ok(&first);
    let uploads = registry.uploads();
    assert_eq!(
        uploads,
        4,
        "three layers and the config:\n{}",
        registry.log()
    );
    assert!(
        counter(&io_first, "rchar") > 12 << 20,
        "the first push read the 12.5 MiB library: {io_first:?}"
    );

    // The store goes away: a read of any store file would now fail.
    let moved = s.file("moved-store");
    fs::rename(s.store(), &moved).unwrap();
    let (again, io_again) = push_counted(&recorded, &target, s.dir.path());
    assert_ok(&again);
    assert!(!s.store().exists());
    assert_eq!(
        registry.uploads(),
        uploads,
        "nothing uploaded:\n{}",
        registry.log()
    );
    assert_eq!(pushed_manifest(&again), pushed_manifest(&first));
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.matches("/3: the registry has").count(), 3, "{err}");
    assert!(!err.contains("walked"), "a layer was walked: {err}");
    // The spec, the binary's own files and the registry's answers: far
    // less than any one layer.
    let rchar = counter(&io_again, "rchar");
    assert!(
        rchar < 2 << 20,
        "the re-push read {rchar} bytes: {io_again:?}"
    );

    // The image in the registry is the one the store makes.
    fs::rename(&moved, s.store()).unwrap();
    let out = clients::run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tar = s.file("image.tar");
    clients::run(
        Command::new(TOOL)
            .arg(s.spec())
            .arg("-q")
            .arg("-o")
            .arg(&tar),
    );
    let layers = clients::strings(&inspected["Layers"]);
    let records = digest(&s.spec(), None, &["gzip"]);
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(records[i]["blobs"]["gzip:5"]["digest"], layer.as_str());
    }
    assert_eq!(
        clients::Archive::read(&tar).diff_ids(),
        records
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["diff_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_push_where_one_layer_changed_uploads_only_that_layer() {
    let Some(registry) = LoggingRegistry::start_for(
        "a_push_where_one_layer_changed_uploads_only_that_layer",
        &["docker-registry", "python3"],
    ) else {
        return;
    };
    let s = Store::new();
    let target = registry.target("digests:1");
    let (first, _) = push_counted(&s.recorded_spec(&["gzip"]), &target, s.dir.path());
    assert_ok(&first);
    let uploads = registry.uploads();

    // A new app; its layer is digested again, the others keep theirs.
    fs::write(
        s.path("aaaa-app").join("bin/app"),
        b"#!/bin/sh\necho app 2\n",
    )
    .unwrap();
    let recorded = s.recorded_spec(&["gzip"]);
    // The unchanged layers are not read: they are not even there.
    fs::rename(s.path("bbbb-lib"), s.file("lib-away")).unwrap();
    fs::rename(s.path("cccc-big"), s.file("big-away")).unwrap();
    let (second, io) = push_counted(&recorded, &target, s.dir.path());
    assert_ok(&second);
    // The app's layer and the new config.
    assert_eq!(registry.uploads() - uploads, 2, "{}", registry.log());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("layer 1/3: uploaded"), "{err}");
    assert_eq!(err.matches("/3: the registry has").count(), 2, "{err}");
    assert!(counter(&io, "rchar") < 2 << 20, "{io:?}");
}

#[test]
fn a_stale_record_fails_a_push_and_leaves_no_tag() {
    let Some(registry) = LoggingRegistry::start_for(
        "a_stale_record_fails_a_push_and_leaves_no_tag",
        &["docker-registry", "python3"],
    ) else {
        return;
    };
    let s = Store::new();
    let recorded = s.recorded_spec(&["gzip"]);
    make_stale(&s);
    let (out, _) = push_counted(&recorded, &registry.target("digests:1"), s.dir.path());
    assert_one_line_error(&out, STALE);
    assert!(
        registry.requests("PUT", "/manifests/").is_empty(),
        "a manifest went up:\n{}",
        registry.log()
    );
    // The stale layer's upload was never completed (its final PUT names a
    // digest; the registry would hold the blob).
    let completed = registry.requests("PUT", "/blobs/uploads/");
    assert!(
        completed.len() <= 2,
        "more than the two good layers completed:\n{}",
        completed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Records from the cache (--cache, a spec without records)

/// The `record cache: ...` progress line of a run.
fn cache_line(out: &Output) -> String {
    after_marker(out, "] record cache: ")
}

/// A push with --cache learns each layer's record; the next push of the
/// unchanged store reads no store file (the directories are listed and
/// the files looked at, not read), and one after a change reads only the
/// changed layer. Each pushes the manifest a push without the cache does.
#[test]
fn the_record_cache_makes_repushes_read_only_changed_layers() {
    let Some(registry) = LoggingRegistry::start_for(
        "the_record_cache_makes_repushes_read_only_changed_layers",
        &["docker-registry", "python3"],
    ) else {
        return;
    };
    let s = Store::new();
    let spec = s.spec();
    let cache = s.file("cache");
    let target = registry.target("cached:1");
    let with_cache: [&dyn AsRef<std::ffi::OsStr>; 2] = [&"--cache", &cache];

    let (first, io_first) = push_counted_with(&spec, &target, s.dir.path(), &with_cache);
    assert_ok(&first);
    assert_eq!(
        cache_line(&first),
        "0 of 3 store layers known, 3 hashed now"
    );
    assert!(counter(&io_first, "rchar") > 12 << 20, "{io_first:?}");
    let uploads = registry.uploads();
    assert_eq!(uploads, 4, "three layers and the config");

    let (again, io_again) = push_counted_with(&spec, &target, s.dir.path(), &with_cache);
    assert_ok(&again);
    assert_eq!(
        cache_line(&again),
        "3 of 3 store layers known, 0 hashed now"
    );
    assert_eq!(registry.uploads(), uploads, "{}", registry.log());
    assert_eq!(pushed_manifest(&again), pushed_manifest(&first));
    let rchar = counter(&io_again, "rchar");
    assert!(rchar < 2 << 20, "the re-push read {rchar} bytes");

    // A new app: its layer alone is hashed and uploaded.
    fs::write(
        s.path("aaaa-app").join("bin/app"),
        b"#!/bin/sh\necho app 2\n",
    )
    .unwrap();
    let (changed, io) = push_counted_with(&spec, &target, s.dir.path(), &with_cache);
    assert_ok(&changed);
    assert_eq!(
        cache_line(&changed),
        "2 of 3 store layers known, 1 hashed now"
    );
    assert_eq!(registry.uploads() - uploads, 2, "{}", registry.log());
    assert!(counter(&io, "rchar") < 2 << 20, "{io:?}");
    let (plain, _) = push_counted(&spec, &registry.target("plain:1"), s.dir.path());
    assert_ok(&plain);
    assert_eq!(pushed_manifest(&changed), pushed_manifest(&plain));
}

/// Archives written with the cache are the bytes of those without, when
/// the records are taken, found, rewritten after damage, or taken again
/// after a file changed; an entry whose record is wrong for bytes that
/// kept their identity fails the layer, naming the entry.
#[test]
fn the_record_cache_keeps_the_bytes_and_distrusts_bad_entries() {
    let s = Store::new();
    let spec = s.spec();
    let cache = s.file("cache");
    let entries = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(cache.join("records"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let plain = tool(&[&spec, &"-q"]);
    assert_ok(&plain);
    let cached = |name: &str| -> Output {
        let out = tool(&[
            &spec,
            &"--progress",
            &"plain",
            &"--cache",
            &cache,
            &"-o",
            &s.file(name),
        ]);
        assert_ok(&out);
        assert!(
            fs::read(s.file(name)).unwrap() == plain.stdout,
            "{name}: other bytes"
        );
        out
    };
    assert_eq!(
        cache_line(&cached("taken.tar")),
        "0 of 3 store layers known, 3 hashed now"
    );
    assert_eq!(entries().len(), 3);
    assert_eq!(
        cache_line(&cached("found.tar")),
        "3 of 3 store layers known, 0 hashed now"
    );

    // Damaged entries: each a warning, the layer hashed again.
    for entry in entries() {
        fs::write(&entry, b"{\"key\": 1").unwrap();
    }
    let out = cached("damaged.tar");
    assert_eq!(cache_line(&out), "0 of 3 store layers known, 3 hashed now");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("warning: record cache: ignoring").count(),
        3,
        "{err}"
    );
    assert_eq!(
        cache_line(&cached("rewritten.tar")),
        "3 of 3 store layers known, 0 hashed now"
    );

    // A changed file has another ctime: its layer gets a new entry.
    make_stale(&s);
    let plain = tool(&[&spec, &"-q"]);
    assert_ok(&plain);
    let out = tool(&[
        &spec,
        &"--progress",
        &"plain",
        &"--cache",
        &cache,
        &"-o",
        &s.file("changed.tar"),
    ]);
    assert_ok(&out);
    assert_eq!(cache_line(&out), "2 of 3 store layers known, 1 hashed now");
    assert!(fs::read(s.file("changed.tar")).unwrap() == plain.stdout);
    assert_eq!(entries().len(), 4);

    // An entry that is wrong for its layer's bytes: the streamed layer is
    // checked against it, and fails.
    let newest = entries()
        .into_iter()
        .max_by_key(|e| fs::metadata(e).unwrap().modified().unwrap())
        .unwrap();
    let mut record: Value = serde_json::from_slice(&fs::read(&newest).unwrap()).unwrap();
    record["xxh3_128"] = Value::from("0".repeat(32));
    fs::write(&newest, record.to_string()).unwrap();
    let target = s.file("wrong.tar");
    let out = tool(&[&spec, &"-q", &"--cache", &cache, &"-o", &target]);
    let name = newest.file_name().unwrap().to_str().unwrap().to_owned();
    assert_one_line_error(
        &out,
        &[
            "layer 2:",
            "its XXH3-128",
            "record cache",
            &name,
            "remove the entry",
        ],
    );
    assert!(!target.exists());

    // A cache that cannot be made: one line naming it.
    let file = s.file("not-a-dir");
    fs::write(&file, b"").unwrap();
    let out = tool(&[&spec, &"-q", &"--cache", &file]);
    assert_one_line_error(&out, &["not-a-dir", "record cache"]);
}
