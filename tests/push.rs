//! `--push` against a real `docker-registry` on 127.0.0.1 (its own config
//! and storage in a temporary directory), read back with skopeo.
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

use clients::{require, run, run_json, strings, Archive};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A registry logging every request, so that uploads can be counted.
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
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
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
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        LoggingRegistry { child, port, dir }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap()
    }

    /// Upload sessions opened so far.
    fn uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }
}

impl Drop for LoggingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        format!(
            r#"{{"architecture": "amd64", "config": {{}}, "created": "1970-01-01T00:00:01Z",
                "store_dir": {store:?}, "store_layers": [[{a:?}], [{b:?}]], "repo_tag": "push:1"}}"#,
            store = store.display().to_string(),
            a = a.display().to_string(),
            b = b.display().to_string(),
        ),
    )
    .unwrap();
    spec
}

fn push(spec: &Path, target: &str, compress: &str) -> Output {
    Command::new(TOOL)
        .arg(spec)
        .args(["-q", "--insecure", "--compress", compress, "--push", target])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn push_then_pull_and_repush_uploads_nothing() {
    if !require("push", &["docker-registry", "skopeo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let docker_tar = dir.path().join("docker.tar");
    run(Command::new(TOOL)
        .arg(&spec)
        .arg("-q")
        .arg("-o")
        .arg(&docker_tar));
    let docker = Archive::read(&docker_tar);

    let registry = LoggingRegistry::start();
    let target = format!("docker://{}/sli/push:1", registry.host());
    let out = push(&spec, &target, "gzip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = format!("docker://{}/sli/push:1", registry.host());
    let config = run_json(
        "skopeo",
        ["inspect", "--tls-verify=false", "--config", &reference],
    );
    assert_eq!(strings(&config["rootfs"]["diff_ids"]), docker.diff_ids());
    let layout = dir.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &reference,
        &format!("oci:{}:1", layout.display()),
    ]));
    assert_eq!(clients::oci_diff_ids(&layout), docker.diff_ids());
    let uploads = registry.uploads();
    assert_eq!(uploads, 3, "two layers and the config:\n{}", registry.log());

    let out = push(&spec, &target, "gzip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(registry.uploads(), uploads, "a re-push started an upload");
}

#[test]
fn push_to_a_stopped_registry_fails_clearly() {
    if !require("push_stopped", &["docker-registry"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = scratch_store(dir.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = push(&spec, &format!("127.0.0.1:{port}/sli/none:1"), "zstd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pushing to 127.0.0.1:{port}")),
        "{err}"
    );
}
