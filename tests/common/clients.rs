//! Helpers for the tests that drive real container clients (skopeo, umoci,
//! podman, docker, a loopback docker-registry): finding the clients, skipping
//! or failing when one is missing, a registry on 127.0.0.1, image clean-up,
//! reading a docker-archive, and comparing two directory trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// True when running under CI (`CI` set to anything but "", "0" or "false"):
/// then a missing client is a failure, not a skip.
pub fn under_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"),
        Err(_) => false,
    }
}

/// The full path of `name` on PATH, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Reports that `test` cannot run because of `reason`: a skip (returns
/// false) normally, a panic under CI.
pub fn unavailable(test: &str, reason: &str) -> bool {
    let msg = format!("{test}: {reason} (scripts/install-deps installs the clients)");
    if under_ci() {
        panic!("{msg}; CI is set, so a missing client is a failure");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// True when every binary in `bins` is on PATH; otherwise skips (returns
/// false) or, under CI, fails.
pub fn require(test: &str, bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins
        .iter()
        .copied()
        .filter(|b| which(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    unavailable(test, &format!("no {} on PATH", missing.join(", ")))
}

/// Like [`require`] for docker, and also checks that the engine answers.
pub fn require_docker(test: &str) -> bool {
    if !require(test, &["docker"]) {
        return false;
    }
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => unavailable(
            test,
            &format!(
                "the docker engine does not answer: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        ),
        Err(e) => unavailable(test, &format!("cannot run docker: {e}")),
    }
}

/// Renders a command for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// How long one client command may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cmd` (stdout and stderr captured, stdin as set or null) and waits
/// at most `limit`; a command still running then is killed, and the test
/// fails saying so, rather than hanging the suite.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    stderr_within(cmd.stdout(Stdio::piped()), limit)
}

/// Like [`output_within`], leaving stdout as the caller set it (captured
/// only when piped).
pub fn stderr_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let stdout = child.stdout.take();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let status = wait_within(&mut child, limit, &what);
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// Waits for `child` at most `limit`; kills it and panics after that.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` still running after {} s: killed (hung?)",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion (within [`COMMAND_TIMEOUT`]) and panics with its
/// output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let what = describe(cmd);
    let out = output_within(cmd.stdin(Stdio::null()), COMMAND_TIMEOUT);
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// `run` for a program and its arguments; returns stdout as text.
pub fn run_text<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run(Command::new(program).args(args));
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// `run` for a program and its arguments; parses stdout as JSON.
pub fn run_json<I, S>(program: &str, args: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let text = run_text(program, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{program}: not JSON ({e}):\n{text}"))
}

/// A unique, lower-case image name for one test.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("sli-test-{prefix}-{}-{n}", std::process::id())
}

/// Runs `program` with `args` (for at most 5 minutes) as a user without
/// registry credentials of their own: an empty home, and none of the
/// variables that name auth files.
pub fn output_without_credentials<I, S>(program: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR");
    output_within(&mut cmd, Duration::from_secs(300))
}

/// A command's stderr as text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// ---------------------------------------------------------------------------
// Loopback registry

/// A `docker-registry` (distribution registry v2) listening on 127.0.0.1
/// only, with its storage and config in a temporary directory. Stopped when
/// dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until `/v2/`
    /// answers.
    pub fn start() -> Registry {
        let mut last_err = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(r) => return r,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start docker-registry: {last_err}");
    }

    fn try_start() -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("sli-registry")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            l.local_addr().map_err(|e| e.to_string())?.port()
        };
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).map_err(|e| e.to_string())?;
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: sli-test-only\n",
                storage.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start docker-registry: {e}"))?;
        let mut reg = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("docker-registry exited ({status}):\n{}", reg.log()));
            }
            if reg.v2_answers() {
                return Ok(reg);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry did not answer on 127.0.0.1:{port} in 30 s:\n{}",
                    reg.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn v2_answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf);
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Image clean-up

/// Removes an image from docker's or podman's store when dropped.
pub struct LoadedImage {
    pub client: &'static str,
    pub reference: String,
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        let _ = Command::new(self.client)
            .args(["rmi", "-f", &self.reference])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// docker-archive contents

/// The metadata of a docker-archive (docker save v1.2) file.
pub struct Archive {
    pub manifest: Value,
    pub config_name: String,
    pub config_bytes: Vec<u8>,
    pub config: Value,
    /// Layer file names from the manifest, in order.
    pub layers: Vec<String>,
    /// Every member name, in archive order.
    pub members: Vec<String>,
}

impl Archive {
    pub fn read(path: &Path) -> Archive {
        let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut ar = tar::Archive::new(std::io::BufReader::new(file));
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut members = Vec::new();
        for entry in ar.entries().expect("archive entries") {
            let mut entry = entry.expect("archive entry");
            let name = entry
                .path()
                .expect("member name")
                .to_string_lossy()
                .into_owned();
            members.push(name.clone());
            if name.ends_with(".json") {
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).expect("read member");
                files.insert(name, buf);
            }
        }
        let manifest: Value = serde_json::from_slice(
            files
                .get("manifest.json")
                .expect("archive has manifest.json"),
        )
        .expect("manifest.json is JSON");
        let config_name = manifest[0]["Config"]
            .as_str()
            .expect("manifest Config")
            .to_string();
        let config_bytes = files
            .get(&config_name)
            .unwrap_or_else(|| panic!("archive has no {config_name}"))
            .clone();
        let config: Value = serde_json::from_slice(&config_bytes).expect("config is JSON");
        let layers = manifest[0]["Layers"]
            .as_array()
            .expect("manifest Layers")
            .iter()
            .map(|l| l.as_str().expect("layer name").to_string())
            .collect();
        Archive {
            manifest,
            config_name,
            config_bytes,
            config,
            layers,
            members,
        }
    }

    /// `rootfs.diff_ids` of the image config.
    pub fn diff_ids(&self) -> Vec<String> {
        strings(&self.config["rootfs"]["diff_ids"])
    }

    /// The sha256 of the config file, as docker and podman report the image ID.
    pub fn image_id(&self) -> String {
        self.config_name.trim_end_matches(".json").to_string()
    }

    pub fn repo_tag(&self) -> String {
        self.manifest[0]["RepoTags"][0]
            .as_str()
            .expect("RepoTags[0]")
            .to_string()
    }
}

/// A JSON array of strings as a Vec.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The `rootfs.diff_ids` of the (single) image in an OCI layout directory.
pub fn oci_diff_ids(layout: &Path) -> Vec<String> {
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let p = layout.join("blobs/sha256").join(hex);
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .expect("blob is JSON")
    };
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "one image in {}", layout.display());
    let manifest = blob(manifests[0]["digest"].as_str().expect("digest"));
    let config = blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    strings(&config["rootfs"]["diff_ids"])
}

// ---------------------------------------------------------------------------
// Tree comparison

/// One file-system entry, as far as an image can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { len: u64, sha256: String },
    Symlink(PathBuf),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (07777); 0 for symlinks.
    pub mode: u32,
}

/// Every entry under `root` (not following symlinks), keyed by its path
/// relative to `root` ("" is `root` itself). Hard links appear as the regular
/// files they are.
pub fn walk_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk_into(root, Path::new(""), &mut out);
    out
}

fn walk_into(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let full = root.join(rel);
    let meta = fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    let ft = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let entry = if ft.is_symlink() {
        Entry {
            kind: Kind::Symlink(fs::read_link(&full).expect("readlink")),
            mode: 0,
        }
    } else if ft.is_dir() {
        Entry {
            kind: Kind::Dir,
            mode,
        }
    } else if ft.is_file() {
        Entry {
            kind: Kind::File {
                len: meta.len(),
                sha256: sha256_file(&full),
            },
            mode,
        }
    } else {
        Entry {
            kind: Kind::Other(format!("{ft:?}")),
            mode,
        }
    };
    let is_dir = entry.kind == Kind::Dir;
    out.insert(rel.to_path_buf(), entry);
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(&full)
            .unwrap_or_else(|e| panic!("{}: {e}", full.display()))
            .map(|d| d.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            walk_into(root, &rel.join(name), out);
        }
    }
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Differences between two walked trees, as lines ("" when equal).
pub fn tree_diff(expected: &BTreeMap<PathBuf, Entry>, actual: &BTreeMap<PathBuf, Entry>) -> String {
    let mut diff = String::new();
    for (path, e) in expected {
        match actual.get(path) {
            None => {
                let _ = writeln!(diff, "missing: {} ({:?})", path.display(), e.kind);
            }
            Some(a) if a != e => {
                let _ = writeln!(
                    diff,
                    "differs: {}: expected {:?} mode {:o}, got {:?} mode {:o}",
                    path.display(),
                    e.kind,
                    e.mode,
                    a.kind,
                    a.mode
                );
            }
            Some(_) => {}
        }
    }
    for (path, a) in actual {
        if !expected.contains_key(path) {
            let _ = writeln!(diff, "unexpected: {} ({:?})", path.display(), a.kind);
        }
    }
    diff
}

/// The push cache's blob entries in `cache`, sorted: its files (the layer
/// records have a directory of their own, `records`).
pub fn blob_cache_entries(cache: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
}
