//! Bad input: every case must end with one clear line on stderr that names
//! the file, key or path at fault, a non-zero exit, and no image.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A scratch store with one small store path and a valid spec for it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch { dir };
        let hello = s.store().join("0000000000000000000000000000000a-hello");
        fs::create_dir_all(hello.join("bin")).unwrap();
        fs::write(hello.join("bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
        s
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }

    /// A spec whose store layers are `layers` (names inside the store),
    /// plus `extra` JSON members.
    fn spec(&self, layers: &[&[&str]], extra: &str) -> PathBuf {
        let layers: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|n| self.path(n).display().to_string())
                    .collect()
            })
            .collect();
        let text = format!(
            r#"{{"architecture": "amd64", "config": {{}}, "created": "1970-01-01T00:00:01Z",
                "store_dir": {store:?}, "store_layers": {layers:?}, "repo_tag": "t:1"{extra}}}"#,
            store = self.store().display().to_string(),
        );
        self.write("spec.json", &text)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

fn run(args: &[&Path]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Asserts a clean failure: exit 1, one line on stderr holding every
/// `needle`, no panic, nothing on stdout.
fn assert_fails(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(error_lines.len(), 1, "want one error line, got: {stderr}");
    for needle in needles {
        assert!(
            error_lines[0].contains(needle),
            "{needle:?} not in {stderr:?}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn assert_fails_without_output(out: &Output, needles: &[&str]) {
    assert_fails(out, needles);
    assert!(out.stdout.is_empty(), "wrote {} bytes", out.stdout.len());
}

#[test]
fn works_on_the_valid_scratch_spec() {
    let s = Scratch::new();
    let out = run(&[&s.spec(&[&["0000000000000000000000000000000a-hello"]], "")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[2], "manifest.json");
}

#[test]
fn missing_spec() {
    let s = Scratch::new();
    let missing = s.dir.path().join("nope.json");
    assert_fails_without_output(&run(&[&missing]), &["nope.json", "No such file"]);
}

#[test]
fn unreadable_spec() {
    let s = Scratch::new();
    // A directory cannot be read as a file, even by root.
    assert_fails_without_output(&run(&[s.dir.path()]), &["reading spec"]);
}

#[test]
fn invalid_json_names_line_and_column() {
    let s = Scratch::new();
    let spec = s.write(
        "bad.json",
        "{\n  \"created\": \"now\",\n  \"store_layers\": [,]\n}\n",
    );
    assert_fails_without_output(&run(&[&spec]), &["bad.json", "line 3, column 20"]);
}

#[test]
fn missing_key_is_named() {
    let s = Scratch::new();
    let spec = s.write(
        "k.json",
        r#"{"architecture": "amd64", "config": {}, "created": "now"}"#,
    );
    assert_fails_without_output(&run(&[&spec]), &["k.json", "\"store_layers\"", "missing"]);
}

#[test]
fn wrong_type_is_named() {
    let s = Scratch::new();
    let spec = s.spec(&[], r#", "uname": 7"#);
    assert_fails_without_output(&run(&[&spec]), &["\"uname\"", "expected a string"]);
    let spec = s.write(
        "t.json",
        r#"{"architecture": "amd64", "config": {}, "created": "now", "store_layers": [["/nix/store/a-x"], 3]}"#,
    );
    assert_fails_without_output(&run(&[&spec]), &["store_layers[1]"]);
    let spec = s.spec(&[], r#", "created": "yesterday""#);
    assert_fails_without_output(&run(&[&spec]), &["\"created\"", "yesterday"]);
}

#[test]
fn store_path_outside_store_dir() {
    let s = Scratch::new();
    let spec = s.spec(&[&["../etc"]], "");
    assert_fails_without_output(
        &run(&[&spec]),
        &[
            "spec.json",
            "store_layers[0][0]",
            "not inside store_dir",
            "etc",
        ],
    );
}

#[test]
fn store_path_that_does_not_exist() {
    let s = Scratch::new();
    let spec = s.spec(&[&["00000000000000000000000000000000-gone"]], "");
    assert_fails_without_output(&run(&[&spec]), &["-gone", "does not exist"]);
}

#[test]
fn unreadable_file() {
    let s = Scratch::new();
    let secret = s.path("0000000000000000000000000000000a-hello/secret");
    fs::write(&secret, b"x").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    // Root reads anything, so drop to an unprivileged user when we are root.
    let out = if is_root() {
        make_traversable(s.dir.path());
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .arg(&spec)
            .output()
            .expect("setpriv (util-linux) runs the tool as nobody")
    } else {
        run(&[&spec])
    };
    assert_fails_without_output(&out, &["secret", "Permission denied"]);
}

#[test]
fn unreadable_directory() {
    let s = Scratch::new();
    let locked = s.path("0000000000000000000000000000000a-hello/locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("f"), b"x").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    let out = if is_root() {
        make_traversable(s.dir.path());
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .arg(&spec)
            .output()
            .unwrap()
    } else {
        run(&[&spec])
    };
    assert_fails_without_output(&out, &["locked", "listing directory"]);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Lets another user reach the scratch tree (tempdirs are 0700).
fn make_traversable(dir: &Path) {
    let mut p = Some(dir);
    while let Some(d) = p {
        let mode = fs::metadata(d).unwrap().permissions().mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o005)).unwrap();
        }
        p = d
            .parent()
            .filter(|p| p.starts_with(std::env::temp_dir()) && *p != std::env::temp_dir());
    }
    for entry in walk(dir) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        if meta.is_dir() || meta.is_file() {
            let mode = meta.permissions().mode();
            if mode != 0o100000 && mode & 0o777 != 0 {
                fs::set_permissions(&entry, fs::Permissions::from_mode(mode | 0o005)).unwrap();
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&p));
            }
        }
    }
    out
}

#[test]
fn fifo_socket_and_device_are_rejected() {
    let s = Scratch::new();
    let base = s.path("0000000000000000000000000000000a-hello");
    let fifo = base.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    assert_fails_without_output(&run(&[&spec]), &["fifo", "inside a store path"]);
    fs::remove_file(&fifo).unwrap();

    let sock = base.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_fails_without_output(&run(&[&spec]), &["sock", "socket"]);
    fs::remove_file(&sock).unwrap();

    if is_root() {
        let dev = base.join("null");
        assert!(Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "3"])
            .status()
            .unwrap()
            .success());
        assert_fails_without_output(&run(&[&spec]), &["null", "character device"]);
    }
}

fn customisation(s: &Scratch, tar: Option<&[u8]>, checksum: &str) -> PathBuf {
    let dir = s.path("0000000000000000000000000000000c-custom");
    fs::create_dir_all(&dir).unwrap();
    if let Some(tar) = tar {
        fs::write(dir.join("layer.tar"), tar).unwrap();
    }
    fs::write(dir.join("checksum"), checksum).unwrap();
    s.spec(
        &[&["0000000000000000000000000000000a-hello"]],
        &format!(
            r#", "customisation_layer": {:?}"#,
            dir.display().to_string()
        ),
    )
}

#[test]
fn customisation_layer_without_layer_tar() {
    let s = Scratch::new();
    let spec = customisation(&s, None, &"0".repeat(64));
    assert_fails_without_output(&run(&[&spec]), &["custom", "layer.tar"]);
}

#[test]
fn customisation_layer_with_bad_checksum() {
    let s = Scratch::new();
    let tar = vec![0u8; 10240];
    let spec = customisation(&s, Some(&tar), "not-a-digest\n");
    assert_fails_without_output(&run(&[&spec]), &["custom", "64 hex digits"]);
    // Well-formed but wrong: caught while hashing.
    let spec = customisation(&s, Some(&tar), &"ab".repeat(32));
    assert_fails(&run(&[&spec]), &["custom", "checksum"]);
}

fn with_base(s: &Scratch, archive: &[u8]) -> PathBuf {
    let base = s.dir.path().join("base.tar");
    fs::write(&base, archive).unwrap();
    s.spec(
        &[&["0000000000000000000000000000000a-hello"]],
        &format!(r#", "from_image": {:?}"#, base.display().to_string()),
    )
}

fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn base_image_that_is_not_an_archive() {
    let s = Scratch::new();
    let spec = with_base(&s, &[7u8; 3000]);
    assert_fails_without_output(&run(&[&spec]), &["base.tar", "base image"]);
}

#[test]
fn base_image_without_manifest() {
    let s = Scratch::new();
    let spec = with_base(&s, &tar_of(&[("hello.txt", b"hi")]));
    assert_fails_without_output(&run(&[&spec]), &["base.tar", "manifest.json"]);
}

#[test]
fn base_image_naming_a_missing_layer() {
    let s = Scratch::new();
    let manifest = br#"[{"Config": "c.json", "RepoTags": null, "Layers": ["abc/layer.tar"]}]"#;
    let config = format!(
        r#"{{"config": {{}}, "rootfs": {{"type": "layers", "diff_ids": ["sha256:{}"]}}}}"#,
        "0".repeat(64)
    );
    let spec = with_base(
        &s,
        &tar_of(&[("manifest.json", manifest), ("c.json", config.as_bytes())]),
    );
    assert_fails_without_output(&run(&[&spec]), &["base.tar", "abc/layer.tar"]);
}

#[test]
fn output_file_is_removed_on_error() {
    let s = Scratch::new();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    let out_path = s.dir.path().join("image.tar");
    fs::remove_dir_all(s.path("0000000000000000000000000000000a-hello/bin")).unwrap();
    fs::write(s.path("0000000000000000000000000000000a-hello/x"), b"x").unwrap();
    let ok = run(&[Path::new("-o"), &out_path, &spec]);
    assert!(ok.status.success());
    assert!(out_path.exists());
    let spec = s.spec(&[&["00000000000000000000000000000000-gone"]], "");
    assert_fails(&run(&[Path::new("-o"), &out_path, &spec]), &["-gone"]);
    assert!(
        !out_path.exists(),
        "a failed run must not leave an image behind"
    );
}

/// Runs the tool on a spec whose first layer is large enough to block on a
/// pipe nobody reads; once every layer is hashed and the stream is stuck in
/// layer 1, `mutate` changes a file of layer 2. The run must fail naming
/// that file, and the output must hold no manifest.
fn change_during_run(mutate: impl FnOnce(&Path)) -> (Output, Vec<u8>) {
    let s = Scratch::new();
    let big = s.path("0000000000000000000000000000000b-big");
    fs::create_dir_all(&big).unwrap();
    fs::write(big.join("blob"), vec![1u8; 8 << 20]).unwrap();
    let victim = s.path("0000000000000000000000000000000a-hello/bin/hello");
    let spec = s.spec(
        &[
            &["0000000000000000000000000000000b-big"],
            &["0000000000000000000000000000000a-hello"],
        ],
        "",
    );
    let (reader, writer) = os_pipe::pipe().unwrap();
    let mut child = Command::new(BIN)
        .arg(&spec)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress lines arrive through a channel so that a run that never
    // reaches the expected point fails the test instead of hanging it (the
    // tool would wait forever on the pipe this test does not read yet).
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = crossbeam_channel::unbounded();
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if line_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let (mut hashed_two, mut streaming_one) = (false, false);
    while !(hashed_two && streaming_one) {
        let Ok(line) = line_rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("the run never hashed layer 2 while streaming layer 1:\n{log}");
        };
        hashed_two |= line.contains("] hashed layer 2/2");
        streaming_one |= line.contains("] streaming layer 1/2");
        log.push_str(&line);
        log.push('\n');
    }
    mutate(&victim);
    let mut stdout = Vec::new();
    let mut reader = reader;
    let drain = std::thread::spawn(move || {
        reader.read_to_end(&mut stdout).unwrap();
        stdout
    });
    for line in line_rx {
        log.push_str(&line);
        log.push('\n');
    }
    stderr_reader.join().unwrap();
    let status = child.wait().unwrap();
    let stdout = drain.join().unwrap();
    (
        Output {
            status,
            stdout: Vec::new(),
            stderr: log.into_bytes(),
        },
        stdout,
    )
}

fn assert_detected(out: &Output, image: &[u8]) {
    assert_fails(
        out,
        &["bin/hello", "changed while the image was being written"],
    );
    let needle = b"manifest.json";
    assert!(
        !image.windows(needle.len()).any(|w| w == needle),
        "a manifest was written after a file changed"
    );
}

#[test]
fn file_rewritten_with_same_size_and_mtime_is_detected() {
    let (out, image) = change_during_run(|victim| {
        let mtime = fs::metadata(victim).unwrap().modified().unwrap();
        fs::write(victim, b"#!/bin/sh\necho HELLO\n").unwrap();
        let f = fs::File::options().write(true).open(victim).unwrap();
        f.set_modified(mtime).unwrap();
    });
    assert_detected(&out, &image);
}

#[test]
fn file_that_grows_is_detected() {
    let (out, image) = change_during_run(|victim| {
        let mut f = fs::File::options().append(true).open(victim).unwrap();
        std::io::Write::write_all(&mut f, b"# more\n").unwrap();
    });
    assert_detected(&out, &image);
}

#[test]
fn file_that_vanishes_is_detected() {
    let (out, image) = change_during_run(|victim| fs::remove_file(victim).unwrap());
    assert_detected(&out, &image);
}

#[test]
fn quiet_silences_progress_and_default_reports_it() {
    let s = Scratch::new();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    let loud = run(&[&spec]);
    let stderr = String::from_utf8_lossy(&loud.stderr);
    assert!(stderr.contains("hashed layer 1/1"), "{stderr}");
    assert!(stderr.contains("streaming layer 1/1"), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("] done: 1 layers,") && last.contains("MiB/s"),
        "{last}"
    );
    let quiet = run(&[Path::new("--quiet"), &spec]);
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert_eq!(quiet.stdout, loud.stdout);
}

#[test]
fn help_explains_the_spec_keys() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "store_layers",
        "store_dir",
        "created",
        "mtime",
        "uid",
        "uname",
        "architecture",
        "config",
        "from_image",
        "customisation_layer",
        "repo_tag",
    ] {
        assert!(text.contains(key), "--help does not mention {key}");
    }
}

#[test]
fn repo_tag_flag_overrides_the_spec() {
    let s = Scratch::new();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    let out = run(&[&spec, Path::new("-t"), Path::new("other:tag")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"RepoTags\": [\n            \"other:tag\"\n        ]"));
}

/// Registry options without a --push are a usage error naming them; --cache
/// is not one of them, since every run keeps its layer records there.
#[test]
fn registry_options_without_a_push_are_refused() {
    let s = Scratch::new();
    let spec = s.spec(&[&["0000000000000000000000000000000a-hello"]], "");
    let dir = s.dir.path().join("certs");
    for extra in [
        vec!["--insecure"],
        vec!["--creds", "a:b"],
        vec!["--cert-dir", dir.to_str().unwrap()],
    ] {
        let out = Command::new(BIN).arg(&spec).args(&extra).output().unwrap();
        assert_fails_without_output(
            &out,
            &["--creds, --insecure and --cert-dir apply to --push only"],
        );
    }
    let cache = s.dir.path().join("cache");
    let out = Command::new(BIN)
        .arg(&spec)
        .arg("--cache")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cache.join("records").is_dir());
}
