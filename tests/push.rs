//! `--push` against a real `docker-registry` on 127.0.0.1 (its own config
//! and storage in a temporary directory), read back with skopeo and umoci:
//! anonymous, htpasswd (basic) and token (Bearer) auth, credentials from
//! auth files and a credential helper, TLS with `--cert-dir`, the layer
//! cache and cross-repository mounts, and a registry stopped mid-upload.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clients::{require, run, run_json, strings, Archive};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A registry logging every request, so that uploads can be counted; it
/// can be stopped and started again on the same port and storage.
struct LoggingRegistry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl LoggingRegistry {
    /// Starts a registry; `extra` is appended to its config (an `auth:`
    /// section, or `http:` settings indented under `http:`).
    fn start_with(auth: &str, http_extra: &str) -> LoggingRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n{http_extra}{auth}",
                storage.display()
            ),
        )
        .unwrap();
        let mut registry = LoggingRegistry {
            child: None,
            port,
            dir,
            tls: http_extra.contains("tls:"),
        };
        registry.resume();
        registry
    }

    fn start() -> LoggingRegistry {
        LoggingRegistry::start_with("", "")
    }

    /// Starts the registry process (again), appending to the same log.
    fn resume(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the registry process (SIGKILL: no clean shutdown).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Access-log lines of requests with this method whose path contains
    /// `part`.
    fn requests(&self, method: &str, part: &str) -> Vec<String> {
        let prefix = format!("\"{method} /v2/");
        self.log()
            .lines()
            .filter(|l| l.contains(&prefix) && l.contains(part))
            .map(str::to_owned)
            .collect()
    }

    /// Upload sessions opened so far (not counting mount requests).
    fn uploads(&self) -> usize {
        self.requests("POST", "/blobs/uploads/")
            .iter()
            .filter(|l| !l.contains("mount="))
            .count()
    }

    /// Chunks sent so far.
    fn patches(&self) -> usize {
        self.requests("PATCH", "/blobs/uploads/").len()
    }

    /// The reference for skopeo.
    fn reference(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.host())
    }

    fn skopeo_tls(&self) -> &'static str {
        if self.tls {
            "--tls-verify=true"
        } else {
            "--tls-verify=false"
        }
    }
}

impl Drop for LoggingRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn scratch_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let a = store.join("aaaa-app");
    let b = store.join("bbbb-lib");
    fs::create_dir_all(a.join("bin")).unwrap();
    fs::create_dir_all(&b).unwrap();
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    fs::write(a.join("bin/app"), &data).unwrap();
    let text: String = (0..100_000).map(|i| format!("{i}\n")).collect();
    fs::write(b.join("lib.txt"), text).unwrap();
    std::os::unix::fs::symlink("../bbbb-lib/lib.txt", a.join("link")).unwrap();
    write_spec(dir, &store, &[&a, &b])
}

fn write_spec(dir: &Path, store: &Path, layers: &[&Path]) -> PathBuf {
    let layers: Vec<String> = layers
        .iter()
        .map(|p| format!("[{:?}]", p.display().to_string()))
        .collect();
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        format!(
            r#"{{"architecture": "amd64", "config": {{}}, "created": "1970-01-01T00:00:01Z",
                "store_dir": {store:?}, "store_layers": [{}], "repo_tag": "push:1"}}"#,
            layers.join(", "),
            store = store.display().to_string(),
        ),
    )
    .unwrap();
    spec
}

/// A store with one layer of `mib` MiB of incompressible bytes.
fn big_store(dir: &Path, mib: usize) -> PathBuf {
    let store = dir.join("store");
    let big = store.join("cccc-big");
    fs::create_dir_all(&big).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut file = std::io::BufWriter::new(fs::File::create(big.join("blob")).unwrap());
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    write_spec(dir, &store, &[&big])
}

/// Runs a push; `args` come after the spec, `-q` and `--push TARGET`.
fn push_with(spec: &Path, target: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(TOOL);
    cmd.arg(spec)
        .args(["-q", "--push", target])
        .args(args)
        .stdin(Stdio::null())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR");
    // Never the real home's credentials.
    let home = tempfile::tempdir().unwrap();
    cmd.env("HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    clients::output_within(&mut cmd, Duration::from_secs(300))
}

fn push(spec: &Path, target: &str, compress: &str) -> Output {
    push_with(spec, target, &["--insecure", "--compress", compress], &[])
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn docker_archive(spec: &Path, dir: &Path) -> Archive {
    let tar = dir.join("docker.tar");
    run(Command::new(TOOL).arg(spec).arg("-q").arg("-o").arg(&tar));
    Archive::read(&tar)
}

/// The store paths of the spec, as they lie under `rootfs`, equal the
/// store.
fn assert_rootfs_is_store(rootfs: &Path, store: &Path) {
    let expected = clients::walk_tree(store);
    let actual = clients::walk_tree(&rootfs.join(store.strip_prefix("/").unwrap()));
    let diff = clients::tree_diff(&expected, &actual);
    assert!(diff.is_empty(), "the pulled rootfs differs:\n{diff}");
}

#[test]
fn push_then_pull_and_repush_uploads_nothing() {
    if !require("push", &["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let docker = docker_archive(&spec, dir.path());

    let registry = LoggingRegistry::start();
    let target = format!("docker://{}/sli/push:1", registry.host());
    assert_ok(&push(&spec, &target, "gzip"));
    let reference = registry.reference("sli/push:1");
    assert_eq!(pulled_diff_ids(&reference), docker.diff_ids());
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &reference,
        &format!("oci:{}:1", layout.display()),
    ]));
    assert_eq!(clients::oci_diff_ids(&layout), docker.diff_ids());
    let rootfs = dir.path().join("rootfs");
    run(Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&rootfs));
    assert_rootfs_is_store(&rootfs, &dir.path().join("store"));
    let uploads = registry.uploads();
    assert_eq!(uploads, 3, "two layers and the config:\n{}", registry.log());

    assert_ok(&push(&spec, &target, "gzip"));
    assert_eq!(registry.uploads(), uploads, "a re-push started an upload");
}

#[test]
fn push_to_a_stopped_registry_fails_clearly() {
    if !require("push_stopped", &["docker-registry"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let port = free_port();
    let out = push(&spec, &format!("127.0.0.1:{port}/sli/none:1"), "zstd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pushing to 127.0.0.1:{port}")),
        "{err}"
    );
    eprintln!("as expected: {}", err.trim_end());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// The cache: a re-push of unchanged layers neither compresses nor
/// uploads them (nor reads them: their records are in the cache too, see
/// tests/digests.rs); a push of the same
/// layers to another repository mounts them; a registry that lacks a
/// cached blob gets it uploaded.
#[test]
fn cache_skips_uploads_and_mounts_across_repositories() {
    if !require("push_cache", &["docker-registry", "skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let docker = docker_archive(&spec, dir.path());
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let args = ["--insecure", "--compress", "gzip", "--cache", cache_arg];

    let registry = LoggingRegistry::start();
    let target = format!("{}/sli/cached:1", registry.host());
    assert_ok(&push_with(&spec, &target, &args, &[]));
    assert_eq!(registry.uploads(), 3);
    assert_eq!(registry.patches(), 3, "one chunk each");
    let entries: Vec<String> = clients::blob_cache_entries(&cache)
        .iter()
        .map(|e| e.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "one entry per layer: {entries:?}");
    assert!(
        entries.iter().all(|e| e.ends_with(".gzip-5")),
        "{entries:?}"
    );

    let out = push_with(&spec, &target, &args, &[]);
    assert_ok(&out);
    assert_eq!(registry.uploads(), 3, "a re-push started an upload");

    let other = format!("{}/sli/other:2", registry.host());
    assert_ok(&push_with(&spec, &other, &args, &[]));
    let mounts = registry.requests("POST", "mount=");
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().all(|l| l.contains("\" 201 ")), "{mounts:?}");
    // Only the config was uploaded again: the layers were mounted.
    assert_eq!(registry.uploads(), 4);
    assert_eq!(
        pulled_diff_ids(&registry.reference("sli/other:2")),
        docker.diff_ids()
    );

    // A fresh registry lacks what the cache knows: everything is uploaded.
    let fresh = LoggingRegistry::start();
    assert_ok(&push_with(
        &spec,
        &format!("{}/sli/cached:1", fresh.host()),
        &args,
        &[],
    ));
    assert_eq!(fresh.uploads(), 3);
    assert_eq!(
        pulled_diff_ids(&fresh.reference("sli/cached:1")),
        docker.diff_ids()
    );
}

fn htpasswd_registry(dir: &Path, user: &str, pass: &str) -> LoggingRegistry {
    let htpasswd = dir.join("htpasswd");
    let out = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
    fs::write(&htpasswd, out.stdout).unwrap();
    LoggingRegistry::start_with(
        &format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            htpasswd.display()
        ),
        "",
    )
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn basic_auth_with_creds_and_auth_files() {
    if !require("push_basic", &["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let registry = htpasswd_registry(dir.path(), "alice", "s3cret");
    let host = registry.host();

    let out = push(&spec, &format!("{host}/sli/basic:1"), "gzip");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pushing to {host}")) && err.contains("credentials"),
        "{err}"
    );
    eprintln!("as expected: {}", err.trim_end());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    let wrong = push_with(
        &spec,
        &format!("{host}/sli/basic:1"),
        &["--insecure", "--creds", "alice:wrong"],
        &[],
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    eprintln!("as expected: {}", err.trim_end());
    assert!(err.contains("401") && err.contains("--creds"), "{err}");

    assert_ok(&push_with(
        &spec,
        &format!("{host}/sli/basic:1"),
        &["--insecure", "--creds", "alice:s3cret"],
        &[],
    ));

    // $REGISTRY_AUTH_FILE, in containers' format.
    let auth_file = dir.path().join("auth.json");
    fs::write(
        &auth_file,
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
            b64("alice:s3cret")
        ),
    )
    .unwrap();
    assert_ok(&push_with(
        &spec,
        &format!("{host}/sli/basic:2"),
        &["--insecure"],
        &[("REGISTRY_AUTH_FILE", &auth_file)],
    ));

    // $DOCKER_CONFIG/config.json naming a credential helper on PATH.
    let docker_config = dir.path().join("docker");
    let bin = dir.path().join("bin");
    fs::create_dir_all(&docker_config).unwrap();
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths": {{}}, "credHelpers": {{"{host}": "sli-test"}}}}"#),
    )
    .unwrap();
    let helper = bin.join("docker-credential-sli-test");
    let seen = dir.path().join("helper-saw");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread host\necho \"$host\" > {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}' \"$host\"\n",
            seen.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let path = PathBuf::from(path);
    assert_ok(&push_with(
        &spec,
        &format!("{host}/sli/basic:3"),
        &["--insecure"],
        &[("DOCKER_CONFIG", &docker_config), ("PATH", &path)],
    ));
    assert_eq!(fs::read_to_string(&seen).unwrap().trim(), host);

    for tag in ["1", "2", "3"] {
        run(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
            &registry.reference(&format!("sli/basic:{tag}")),
        ]));
    }
}

// ---------------------------------------------------------------------------
// Token auth

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The key ID docker-registry (libtrust) gives a public key: the first 240
/// bits of the SHA-256 of its DER, in base32, in groups of four.
fn libtrust_key_id(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(der);
    let mut bits = 0u64;
    let mut nbits = 0;
    let mut text = String::new();
    for &byte in &hash[..30] {
        bits = bits << 8 | u64::from(byte);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            text.push(ALPHABET[(bits >> nbits & 31) as usize] as char);
        }
    }
    text.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// A token signed (RS256) with `key` for `service`, issued by `issuer`,
/// granting pull and push on `repo`.
fn signed_token(dir: &Path, key: &Path, issuer: &str, service: &str, repo: &str) -> String {
    let der = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key))
    .stdout;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = format!(
        r#"{{"typ":"JWT","alg":"RS256","kid":"{}"}}"#,
        libtrust_key_id(&der)
    );
    let claims = format!(
        r#"{{"iss":"{issuer}","sub":"alice","aud":"{service}","exp":{},"nbf":{},"iat":{},"jti":"sli-test",
            "access":[{{"type":"repository","name":"{repo}","actions":["pull","push"]}}]}}"#,
        now + 3600,
        now - 60,
        now - 60
    );
    let input = format!(
        "{}.{}",
        base64url(header.as_bytes()),
        base64url(claims.as_bytes())
    );
    let input_file = dir.join("jwt-input");
    fs::write(&input_file, &input).unwrap();
    let signature = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&input_file))
    .stdout;
    format!("{input}.{}", base64url(&signature))
}

/// A token endpoint on 127.0.0.1: gives `token` to requests with basic
/// auth `user:pass`, 401 to others; records each request line.
fn token_endpoint(token: String, user_pass: &str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let expected = format!("Basic {}", b64(user_pass));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut authorized = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") && value.trim() == expected {
                        authorized = true;
                    }
                }
            }
            log.lock().unwrap().push(request.trim().to_owned());
            let (status, body) = if authorized {
                (
                    "200 OK",
                    format!(r#"{{"token": "{token}", "expires_in": 3600}}"#),
                )
            } else {
                (
                    "401 Unauthorized",
                    r#"{"details": "bad credentials"}"#.to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn bearer_token_flow() {
    if !require("push_bearer", &["docker-registry", "skopeo", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let key = dir.path().join("token.key");
    let cert = dir.path().join("token.crt");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=sli-test-token-issuer", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let (issuer, service, repo) = ("sli-test-issuer", "sli-test-registry", "sli/bearer");
    let token = signed_token(dir.path(), &key, issuer, service, repo);
    let (token_port, token_requests) = token_endpoint(token, "alice:s3cret");
    let registry = LoggingRegistry::start_with(
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: {service}\n    \
             issuer: {issuer}\n    rootcertbundle: {}\n",
            cert.display()
        ),
        "",
    );
    let target = format!("{}/{repo}:1", registry.host());

    // The token endpoint refuses anonymous requests.
    let out = push(&spec, &target, "gzip");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("as expected: {}", err.trim_end());
    assert!(
        err.contains(&format!("127.0.0.1:{token_port}/token")) && err.contains("401"),
        "{err}"
    );

    // Credentials from $XDG_RUNTIME_DIR/containers/auth.json go to the
    // token endpoint; the token goes to the registry.
    let runtime = dir.path().join("run");
    fs::create_dir_all(runtime.join("containers")).unwrap();
    fs::write(
        runtime.join("containers/auth.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host(),
            b64("alice:s3cret")
        ),
    )
    .unwrap();
    let out = push_with(
        &spec,
        &target,
        &["--insecure", "--compress", "gzip"],
        &[("XDG_RUNTIME_DIR", &runtime)],
    );
    assert_ok(&out);
    let requests = token_requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&format!("service={service}"))
                && r.contains("scope=repository%3Asli%2Fbearer%3Apull%2Cpush")),
        "{requests:?}"
    );
    let config = run_json(
        "skopeo",
        [
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
            "--config",
            &registry.reference(&format!("{repo}:1")),
        ],
    );
    assert_eq!(strings(&config["rootfs"]["diff_ids"]).len(), 2);
}

// ---------------------------------------------------------------------------
// A registry stopped mid-upload

/// Starts a push in the background.
fn spawn_push(spec: &Path, target: &str, args: &[&str]) -> Child {
    Command::new(TOOL)
        .arg(spec)
        .args(["-q", "--insecure", "--push", target])
        .args(args)
        .env("HOME", spec.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_patch(registry: &LoggingRegistry, push: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while registry.patches() == 0 {
        assert!(Instant::now() < deadline, "no PATCH in the registry's log");
        assert!(
            push.try_wait().unwrap().is_none(),
            "the push ended before its first chunk"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The diff_ids of the config that skopeo reads from `reference` (a
/// plain-HTTP registry).
fn pulled_diff_ids(reference: &str) -> Vec<String> {
    let config = run_json(
        "skopeo",
        ["inspect", "--tls-verify=false", "--config", reference],
    );
    strings(&config["rootfs"]["diff_ids"])
}

/// Waits (at most `seconds`) for a push started by [`spawn_push`]; its
/// exit status and its stderr.
fn finish_push(child: &mut Child, seconds: u64) -> (std::process::ExitStatus, String) {
    let status = clients::wait_within(child, Duration::from_secs(seconds), "the push");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

fn manifest_exists(registry: &LoggingRegistry, name: &str) -> bool {
    Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            registry.skopeo_tls(),
            &registry.reference(name),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn registry_killed_mid_upload_then_restarted() {
    if !require("push_killed", &["docker-registry", "skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = big_store(dir.path(), 320);
    let mut registry = LoggingRegistry::start();
    let name = "sli/big:1";
    let target = format!("{}/{name}", registry.host());

    let mut child = spawn_push(&spec, &target, &["--compress", "none"]);
    wait_for_patch(&registry, &mut child);
    registry.kill();
    let (status, err) = finish_push(&mut child, 60);
    assert!(!status.success(), "the push succeeded without its registry");
    eprintln!("as expected: {}", err.trim_end());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("pushing to {}", registry.host()))
            && err.contains("layer 1/1")
            && err.contains("gave up"),
        "{err}"
    );

    registry.resume();
    assert!(
        !manifest_exists(&registry, name),
        "a failed push left a manifest"
    );
    let out = push(&spec, &target, "none");
    assert_ok(&out);
    assert!(manifest_exists(&registry, name));
    let docker = docker_archive(&spec, dir.path());
    assert_eq!(
        pulled_diff_ids(&registry.reference(name)),
        docker.diff_ids()
    );
}

/// A registry back within the retries: the push resumes the upload from
/// the offset the registry reports, and succeeds in one run.
#[test]
fn registry_restarted_mid_upload_is_resumed() {
    if !require("push_resumed", &["docker-registry", "skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = big_store(dir.path(), 320);
    let mut registry = LoggingRegistry::start();
    let name = "sli/resumed:1";
    let target = format!("{}/{name}", registry.host());

    let mut child = spawn_push(&spec, &target, &["--compress", "zstd"]);
    wait_for_patch(&registry, &mut child);
    registry.kill();
    std::thread::sleep(Duration::from_millis(300));
    registry.resume();
    let (status, err) = finish_push(&mut child, 120);
    assert!(status.success(), "{err}");
    // The session went on: one upload for the layer, one for the config.
    assert_eq!(registry.uploads(), 2, "{}", registry.log());
    let statuses = registry.requests("GET", "/blobs/uploads/");
    assert!(!statuses.is_empty(), "no upload status was asked for");
    let docker = docker_archive(&spec, dir.path());
    assert_eq!(
        pulled_diff_ids(&registry.reference(name)),
        docker.diff_ids()
    );
}

// ---------------------------------------------------------------------------
// TLS

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both
/// signed by the CA.
fn make_certs(dir: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sli-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    fs::write(dir.join("client.ext"), "extendedKeyUsage = clientAuth\n").unwrap();
    for who in ["server", "client"] {
        ossl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=sli-test-{who}"),
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
        ]);
        ossl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
            "-out",
            &format!("{who}.pem"),
        ]);
    }
}

#[test]
fn tls_with_cert_dir() {
    if !require("push_tls", &["docker-registry", "skopeo", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let pki = dir.path().join("pki");
    fs::create_dir(&pki).unwrap();
    make_certs(&pki);
    let registry = LoggingRegistry::start_with(
        "",
        &format!(
            "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\n    clientcas:\n      - {0}/ca.pem\n",
            pki.display()
        ),
    );
    let target = format!("{}/sli/tls:1", registry.host());

    // The system roots do not know the CA.
    let out = push_with(&spec, &target, &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cert-dir") && err.contains("TLS"), "{err}");
    eprintln!("as expected: {}", err.trim_end());
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");

    // The CA alone: the registry wants a client certificate.
    let certs = dir.path().join("certs.d");
    fs::create_dir(&certs).unwrap();
    fs::copy(pki.join("ca.pem"), certs.join("ca.crt")).unwrap();
    let cert_dir = certs.to_str().unwrap();
    let out = push_with(&spec, &target, &["--cert-dir", cert_dir], &[]);
    assert!(!out.status.success());
    eprintln!(
        "as expected: {}",
        String::from_utf8_lossy(&out.stderr).trim_end()
    );

    fs::copy(pki.join("client.pem"), certs.join("client.cert")).unwrap();
    fs::copy(pki.join("client.key"), certs.join("client.key")).unwrap();
    assert_ok(&push_with(
        &spec,
        &target,
        &["--cert-dir", cert_dir, "--compress", "gzip"],
        &[],
    ));
    // skopeo reads the same layout.
    let config = run_json(
        "skopeo",
        [
            "inspect",
            "--cert-dir",
            cert_dir,
            "--config",
            &registry.reference("sli/tls:1"),
        ],
    );
    assert_eq!(strings(&config["rootfs"]["diff_ids"]).len(), 2);
}
