//! `--load` into the real Docker engine and podman (never mocks): the thin
//! load that leaves out the layers the engine holds, its image ID against
//! `docker load` of the full archive, the container it runs, the two ways
//! the engine may lack a layer (deleted before the run; deleted between the
//! question and the load, which the engine refuses), and the one-line
//! errors of a missing socket, a bad `DOCKER_HOST` and an engine that fails.
//!
//! The images come from the fixture store of `scripts/make-fixtures.py`
//! with its static busybox, the tool running in a private mount namespace
//! where the store is at `/nix/store`. Each test stamps its files with an
//! mtime of its own, so that its layers are its own: tests running at once
//! never hold (or delete) each other's layers.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;
#[path = "common/fixtures.rs"]
mod fixtures;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clients::{
    require, require_docker, run, run_json, run_text, unavailable, Archive, LoadedImage,
};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");
const BUSYBOX: &str = "/bin/busybox";

fn fixture_root(test: &str) -> Option<&'static Path> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        if !Path::new(BUSYBOX).is_file() {
            return Err(format!(
                "no static busybox at {BUSYBOX} (Debian: busybox-static)"
            ));
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-load-fixtures");
        fixtures::build_fixtures(&root, Some(Path::new(BUSYBOX)))?;
        Ok(root)
    });
    match root {
        Ok(root) => Some(root),
        Err(why) => {
            unavailable(test, &format!("no fixture store: {why}"));
            None
        }
    }
}

/// The fixture store, for a test that needs the docker engine.
fn docker_fixture_root(test: &str) -> Option<&'static Path> {
    if !require_docker(test) {
        return None;
    }
    fixture_root(test)
}

fn scratch(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{test}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir")
}

/// Two images of the runnable fixture, stamped with `day` (1 to 28) of
/// January 2001: A, and B, which adds one small store layer after A's
/// store layers. Returns the specs' paths and tags.
struct Pair {
    a: PathBuf,
    b: PathBuf,
    tag_a: String,
    tag_b: String,
}

fn pair(root: &Path, dir: &Path, day: u32) -> Pair {
    let mut spec: Value =
        serde_json::from_slice(&fs::read(root.join("specs/runnable.json")).expect("spec"))
            .expect("JSON");
    let stamp = format!("2001-01-{day:02}T00:00:00+00:00");
    spec["mtime"] = stamp.clone().into();
    spec["created"] = stamp.into();
    let tag_a = format!("{}:a", clients::unique_name("load"));
    let tag_b = format!("{}:b", clients::unique_name("load"));
    spec["repo_tag"] = tag_a.clone().into();
    let a = dir.join("a.json");
    fs::write(&a, serde_json::to_vec(&spec).unwrap()).unwrap();
    let basic: Value =
        serde_json::from_slice(&fs::read(root.join("specs/basic.json")).expect("spec"))
            .expect("JSON");
    // A small store path that the runnable image lacks.
    let small = basic["store_layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l[0].as_str().unwrap().ends_with("-symlinks"))
        .expect("the basic spec's symlinks layer")
        .clone();
    let layers = spec["store_layers"].as_array_mut().unwrap();
    layers.push(small);
    spec["repo_tag"] = tag_b.clone().into();
    let b = dir.join("b.json");
    fs::write(&b, serde_json::to_vec(&spec).unwrap()).unwrap();
    Pair { a, b, tag_a, tag_b }
}

/// `pair`, whose two tags docker drops when the guards go.
fn docker_pair(root: &Path, dir: &Path, day: u32) -> (Pair, [LoadedImage; 2]) {
    let p = pair(root, dir, day);
    let loaded = [&p.tag_a, &p.tag_b].map(|tag| LoadedImage {
        client: "docker",
        reference: tag.clone(),
    });
    (p, loaded)
}

/// The tool on `spec` with `args`, in the store namespace, with progress
/// lines; its output, whatever its status.
fn tool(root: &Path, spec: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = fixtures::store_namespace_command(root, TOOL);
    cmd.arg(spec).args(["--progress", "plain"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    clients::output_within(&mut cmd, std::time::Duration::from_secs(300))
}

/// `tool`, which must succeed; its stderr.
fn tool_ok(root: &Path, spec: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tool(root, spec, args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the tool failed ({}):\n{stderr}",
        out.status
    );
    stderr
}

/// The numbers of the layers the progress lines say were skipped.
fn skipped_layers(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split("--load docker: skipping layer ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The bytes the progress line says were sent (the last such line).
fn bytes_sent(stderr: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .filter(|l| l.contains("--load docker: sent "))
        .filter_map(|l| l.split(" layers, ").nth(1))
        .find_map(|rest| rest.split(" bytes").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no bytes sent in:\n{stderr}"))
}

fn image_id(client: &str, reference: &str) -> String {
    run_json(client, ["image", "inspect", reference])[0]["Id"]
        .as_str()
        .expect("Id")
        .trim_start_matches("sha256:")
        .to_owned()
}

/// The engine's socket, as the tool finds it: `DOCKER_HOST`'s `unix://`
/// path, or the default one.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => PathBuf::from(host.strip_prefix("unix://").unwrap_or("")),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// Whether the engine's socket is there for a proxy to pass requests on to.
fn require_engine_socket(test: &str) -> bool {
    if engine_socket().exists() {
        return true;
    }
    unavailable(test, "DOCKER_HOST names no unix:// socket that exists");
    false
}

/// Docker's image `tag` is the one in the archive at `full`.
fn assert_docker_has_the_archives_image(tag: &str, full: &Path) {
    assert_eq!(image_id("docker", tag), Archive::read(full).image_id());
}

fn runs(tag: &str) {
    let said = run_text("docker", ["run", "--rm", "--network=none", tag]);
    assert_eq!(said, "runnable-ok\n", "docker run {tag}");
}

#[test]
fn thin_load_sends_only_the_missing_layers_and_gives_docker_loads_id() {
    let test = "thin_load_sends_only_the_missing_layers_and_gives_docker_loads_id";
    let Some(root) = docker_fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 1);

    let first = tool_ok(root, &p.a, &["--load"], &[]);
    assert!(
        skipped_layers(&first).is_empty(),
        "a new image skips nothing:\n{first}"
    );
    assert!(
        first.contains(&format!("--load docker: Loaded image: {}", p.tag_a)),
        "{first}"
    );

    // B after A, with -o in the same run: the file is the full archive.
    let full = dir.path().join("b.tar");
    let second = tool_ok(
        root,
        &p.b,
        &["--load", "docker", "-o", full.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        skipped_layers(&second),
        ["1/4", "2/4"],
        "A's two store layers:\n{second}"
    );
    let sent = bytes_sent(&second);
    assert!(second.contains("sent 2 of 4 layers, "), "{second}");
    assert!(second.contains("; the engine had the other 2"), "{second}");
    let full_size = fs::metadata(&full).unwrap().len();
    assert!(
        sent * 20 < full_size,
        "sent {sent} bytes of a {full_size}-byte archive"
    );
    let archive = Archive::read(&full);
    let thin_id = image_id("docker", &p.tag_b);
    assert_eq!(
        thin_id,
        archive.image_id(),
        "the image ID is the config's digest"
    );
    runs(&p.tag_b);

    // The same image from `docker load` of the full archive.
    run(Command::new("docker").args(["rmi", &p.tag_b]));
    run(Command::new("docker").arg("load").arg("-i").arg(&full));
    assert_eq!(
        image_id("docker", &p.tag_b),
        thin_id,
        "docker load of the full archive"
    );
}

#[test]
fn deleted_base_image_means_every_layer_is_sent() {
    let test = "deleted_base_image_means_every_layer_is_sent";
    let Some(root) = docker_fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 2);
    tool_ok(root, &p.a, &["--load"], &[]);
    run(Command::new("docker").args(["rmi", &p.tag_a]));
    let full = dir.path().join("b.tar");
    let stderr = tool_ok(root, &p.b, &["-o", full.to_str().unwrap(), "--load"], &[]);
    assert!(
        skipped_layers(&stderr).is_empty(),
        "A's layers are gone:\n{stderr}"
    );
    let sent = bytes_sent(&stderr);
    assert_eq!(sent, fs::metadata(&full).unwrap().len(), "the full archive");
    assert_docker_has_the_archives_image(&p.tag_b, &full);
    runs(&p.tag_b);
}

/// A socket in front of the engine's that deletes `image` just before it
/// passes on each `POST /images/load`: the engine is asked which layers it
/// has while it has A's, and loses them before the load arrives.
fn deleting_proxy(socket: &Path, image: String) {
    let listener = UnixListener::bind(socket).expect("bind proxy socket");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            if head.starts_with(b"POST /images/load") {
                let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
            }
            let Ok(mut engine) = UnixStream::connect(engine_socket()) else {
                return;
            };
            engine.write_all(&head).unwrap();
            let (mut from_client, mut to_engine) =
                (client.try_clone().unwrap(), engine.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_engine);
            });
            let _ = std::io::copy(&mut engine, &mut client);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    });
}

#[test]
fn refused_thin_archive_falls_back_to_the_full_one() {
    let test = "refused_thin_archive_falls_back_to_the_full_one";
    if !require_docker(test) || !require_engine_socket(test) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 3);
    tool_ok(root, &p.a, &["--load"], &[]);
    let socket = dir.path().join("proxy.sock");
    deleting_proxy(&socket, p.tag_a.clone());
    let host = format!("unix://{}", socket.display());
    let full = dir.path().join("b.tar");
    let stderr = tool_ok(
        root,
        &p.b,
        &["--load", "-o", full.to_str().unwrap()],
        &[("DOCKER_HOST", &host)],
    );
    assert_eq!(
        skipped_layers(&stderr),
        ["1/4", "2/4"],
        "planned with A present:\n{stderr}"
    );
    let fallback: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused the archive without the layers it had"))
        .collect();
    assert_eq!(fallback.len(), 1, "one line says why:\n{stderr}");
    assert!(
        fallback[0].contains("layer.tar") && fallback[0].ends_with("sending the full archive"),
        "{}",
        fallback[0]
    );
    assert!(
        stderr.contains(&format!("--load docker: Loaded image: {}", p.tag_b)),
        "{stderr}"
    );
    assert_docker_has_the_archives_image(&p.tag_b, &full);
    let a_left = Command::new("docker")
        .args(["image", "inspect", &p.tag_a])
        .output()
        .unwrap();
    assert!(!a_left.status.success(), "the proxy deleted A");
    runs(&p.tag_b);
}

/// The one line of a failed run, which must exit with status 1.
fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "status; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("stream-layered-image: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    errors[0]
        .trim_start_matches("stream-layered-image: error: ")
        .to_owned()
}

#[test]
fn bad_sockets_hosts_and_options_are_one_line_errors() {
    let test = "bad_sockets_hosts_and_options_are_one_line_errors";
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let p = pair(root, dir.path(), 4);
    let not_a_socket = dir.path().join("plain-file");
    fs::write(&not_a_socket, "").unwrap();
    let missing = format!("unix://{}/none/docker.sock", dir.path().display());
    let file_host = format!("unix://{}", not_a_socket.display());
    for (env, args, says) in [
        (
            missing.as_str(),
            vec!["--load"],
            format!(
                "--load docker: GET /info on {}/none/docker.sock: No such file or directory",
                dir.path().display()
            ),
        ),
        (
            file_host.as_str(),
            vec!["--load"],
            format!(
                "--load docker: GET /info on {}: Connection refused",
                not_a_socket.display()
            ),
        ),
        (
            "tcp://127.0.0.1:2375",
            vec!["--load"],
            "--load docker: DOCKER_HOST=\"tcp://127.0.0.1:2375\": tcp:// is not supported".into(),
        ),
        (
            "",
            vec!["--load", "--format", "oci-archive"],
            "--load sends the engine a docker-archive; --format applies to -o FILE".into(),
        ),
        (
            "",
            vec!["--load", "--sbom", "spdx"],
            "--sbom: a docker-archive cannot hold an SBOM; add --sbom-out FILE".into(),
        ),
        (
            "",
            vec!["--load", "dokcer"],
            "--load \"dokcer\": expected one of docker, podman".into(),
        ),
    ] {
        let out = tool(root, &p.a, &args, &[("DOCKER_HOST", env)]);
        let line = one_line_error(&out);
        assert!(
            line.starts_with(&says),
            "{args:?} with DOCKER_HOST={env:?}: {line}"
        );
    }
    // Several specs make an index, which no engine loads.
    let out = tool(root, &p.a, &["--load", p.b.to_str().unwrap()], &[]);
    assert!(one_line_error(&out).starts_with("--load takes one spec"));
}

#[test]
fn engine_errors_are_not_refusals_to_fall_back_on() {
    let test = "engine_errors_are_not_refusals_to_fall_back_on";
    let Some(root) = docker_fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let p = pair(root, dir.path(), 5);
    let _a = LoadedImage {
        client: "docker",
        reference: p.tag_a.clone(),
    };
    tool_ok(root, &p.a, &["--load"], &[]);
    // The engine loads B's layers and config, then refuses its tag.
    let full = dir.path().join("b.tar");
    let upper = ["-t", "Upper/Case:1"];
    tool_ok(
        root,
        &p.b,
        &[&upper[..], &["-o", full.to_str().unwrap()]].concat(),
        &[],
    );
    let _b = LoadedImage {
        client: "docker",
        reference: Archive::read(&full).image_id(),
    };
    let out = tool(root, &p.b, &[&upper[..], &["--load"]].concat(), &[]);
    let line = one_line_error(&out);
    assert!(
        line.starts_with(&format!(
            "--load docker: POST /images/load on {}: ",
            engine_socket().display()
        )) && line.contains("must be lowercase"),
        "{line}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("sending the full archive"),
        "no fallback:\n{stderr}"
    );
}

#[test]
fn podman_load_gets_the_full_archive() {
    let test = "podman_load_gets_the_full_archive";
    if !require(test, &["podman"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let p = pair(root, dir.path(), 6);
    let _b = LoadedImage {
        client: "podman",
        reference: p.tag_b.clone(),
    };
    let full = dir.path().join("b.tar");
    let stderr = tool_ok(
        root,
        &p.b,
        &["--load", "podman", "-o", full.to_str().unwrap()],
        &[],
    );
    assert!(
        stderr.contains("--load podman: sent the full archive"),
        "{stderr}"
    );
    assert!(stderr.contains("--load podman: Loaded image"), "{stderr}");
    assert_eq!(
        image_id("podman", &p.tag_b),
        Archive::read(&full).image_id(),
        "podman's image ID"
    );

    // A podman that refuses the archive (a stand-in that reads nothing and
    // fails): its last line of stderr, not a closed pipe taken for success.
    let fake = dir.path().join("bin");
    fs::create_dir_all(&fake).unwrap();
    let script = fake.join("podman");
    fs::write(
        &script,
        "#!/bin/sh\necho 'Getting image source signatures' >&2\necho 'Error: payload does not match any of the supported image formats' >&2\nexit 125\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = tool(
        root,
        &p.b,
        &["--load", "podman"],
        &[("PATH", fake.to_str().unwrap())],
    );
    assert_eq!(
        one_line_error(&out),
        "--load podman: podman load: exit status: 125: Error: payload does not match any of the supported image formats"
    );

    // Without podman: one line naming the command.
    let out = tool(
        root,
        &p.b,
        &["--load", "podman"],
        &[("PATH", "/nonexistent")],
    );
    let line = one_line_error(&out);
    assert!(
        line.starts_with("--load podman: podman load: No such file or directory"),
        "{line}"
    );
}

#[test]
fn load_push_and_an_oci_file_in_one_run() {
    let test = "load_push_and_an_oci_file_in_one_run";
    if !require_docker(test) || !require(test, &["docker-registry", "skopeo"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 7);
    let alone = dir.path().join("alone.tar");
    tool_ok(root, &p.b, &["-o", alone.to_str().unwrap()], &[]);
    let alone = Archive::read(&alone);
    tool_ok(root, &p.a, &["--load"], &[]);

    let registry = clients::Registry::start();
    let pushed = format!("{}/app:1", registry.host());
    let oci = dir.path().join("b.oci.tar");
    let stderr = tool_ok(
        root,
        &p.b,
        &[
            "--push",
            &pushed,
            "--insecure",
            "--load",
            "-o",
            oci.to_str().unwrap(),
            "--format",
            "oci-archive",
        ],
        &[],
    );
    // The engine got the docker-archive's image, thin.
    assert_eq!(skipped_layers(&stderr), ["1/4", "2/4"], "{stderr}");
    assert_eq!(image_id("docker", &p.tag_b), alone.image_id());
    runs(&p.tag_b);
    // The registry and the file got the image too.
    let config = run_json(
        "skopeo",
        [
            "inspect",
            "--tls-verify=false",
            "--config",
            &format!("docker://{pushed}"),
        ],
    );
    assert_eq!(
        clients::strings(&config["rootfs"]["diff_ids"]),
        alone.diff_ids()
    );
    let layout = run_json(
        "skopeo",
        [
            "inspect",
            "--config",
            &format!("oci-archive:{}", oci.display()),
        ],
    );
    assert_eq!(
        clients::strings(&layout["rootfs"]["diff_ids"]),
        alone.diff_ids()
    );
}

#[test]
fn a_socket_the_user_may_not_open_is_a_one_line_error() {
    use std::os::unix::fs::PermissionsExt;
    let test = "a_socket_the_user_may_not_open_is_a_one_line_error";
    if !require(test, &["setpriv"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    // The user the tool runs as must read the spec, not the socket.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let p = pair(root, dir.path(), 8);
    let socket = dir.path().join("engine.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = fixtures::store_namespace_command(root, "/usr/bin/setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", TOOL])
        .arg(&p.a)
        .arg("--load")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()));
    let out = clients::output_within(&mut cmd, std::time::Duration::from_secs(60));
    let line = one_line_error(&out);
    assert_eq!(
        line,
        format!(
            "--load docker: GET /info on {}: Permission denied (os error 13); the socket needs root or membership of its group (usually docker)",
            socket.display()
        )
    );
}

/// Reads a request head and its chunked body from `stream`.
fn read_request(stream: &mut UnixStream) -> (String, Vec<u8>) {
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = Vec::new();
    if head.contains("Transfer-Encoding: chunked") {
        loop {
            let mut size = String::new();
            std::io::BufRead::read_line(&mut reader, &mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    }
    (head, body)
}

fn answer(stream: &mut UnixStream, body: &str) {
    let text = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).unwrap();
}

/// An engine with containerd's image store loads only whole archives: the
/// tool learns it from `GET /info`, says so, and sends the full archive,
/// byte for byte the one `-o` writes. (A stand-in engine on a socket of the
/// test's own: the engine here has no containerd store.)
#[test]
fn containerd_image_store_gets_the_full_archive() {
    let test = "containerd_image_store_gets_the_full_archive";
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let p = pair(root, dir.path(), 9);
    let socket = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let tag = p.tag_b.clone();
    let engine = std::thread::spawn(move || {
        let mut calls = Vec::new();
        let mut loaded = Vec::new();
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let (head, body) = read_request(&mut stream);
            let call = head.lines().next().unwrap().to_owned();
            if call.starts_with("GET /info ") {
                answer(
                    &mut stream,
                    r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#,
                );
            } else if call.starts_with("POST /images/load") {
                loaded = body;
                answer(
                    &mut stream,
                    &format!("{{\"stream\":\"Loaded image: {tag}\\n\"}}\n"),
                );
                calls.push(call);
                return (calls, loaded);
            } else {
                stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
            }
            calls.push(call);
        }
        (calls, loaded)
    });
    let host = format!("unix://{}", socket.display());
    let stderr = tool_ok(root, &p.b, &["--load"], &[("DOCKER_HOST", &host)]);
    let (calls, loaded) = engine.join().unwrap();
    assert_eq!(
        calls,
        ["GET /info HTTP/1.1", "POST /images/load?quiet=1 HTTP/1.1"],
        "no question about images that would not be used"
    );
    assert!(
        stderr.contains("warning: --load docker: the engine keeps images in containerd's image store, which loads only whole archives; sending every layer"),
        "{stderr}"
    );
    assert!(skipped_layers(&stderr).is_empty(), "{stderr}");
    let full = dir.path().join("b.tar");
    tool_ok(root, &p.b, &["-o", full.to_str().unwrap()], &[]);
    assert!(
        loaded == fs::read(&full).unwrap(),
        "the engine got the full archive"
    );
}

/// With `store_layer_digests`, the layers the engine has are not read: the
/// load skips them by their records and gives the same image.
#[test]
fn thin_load_with_layer_records() {
    let test = "thin_load_with_layer_records";
    let Some(root) = docker_fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 10);
    let mut cmd = fixtures::store_namespace_command(root, TOOL);
    cmd.arg("digest").arg(&p.b);
    let records: Value = serde_json::from_slice(&run(&mut cmd).stdout).expect("records");
    let mut spec: Value = serde_json::from_slice(&fs::read(&p.b).unwrap()).unwrap();
    spec["store_layer_digests"] = records;
    let with_records = dir.path().join("b-records.json");
    fs::write(&with_records, serde_json::to_vec(&spec).unwrap()).unwrap();

    tool_ok(root, &p.a, &["--load"], &[]);
    let stderr = tool_ok(root, &with_records, &["--load"], &[]);
    assert_thin_load_of_b(root, &p, dir.path(), &stderr);
}

/// B's load skipped A's two layers without hashing them, and gave the
/// image of B's full archive, which runs.
fn assert_thin_load_of_b(root: &Path, p: &Pair, dir: &Path, stderr: &str) {
    assert_eq!(skipped_layers(stderr), ["1/4", "2/4"], "{stderr}");
    assert!(
        !stderr.contains("hashing layer 1/4") && !stderr.contains("hashing layer 2/4"),
        "layers known from their records are not hashed:\n{stderr}"
    );
    let full = dir.join("b.tar");
    tool_ok(root, &p.b, &["-o", full.to_str().unwrap()], &[]);
    assert_docker_has_the_archives_image(&p.tag_b, &full);
    runs(&p.tag_b);
}

/// With `--cache` and no records in the spec, loading A fills the record
/// cache; B after it is thin, hashes only its new layer, and gives the
/// full archive's image.
#[test]
fn thin_load_with_the_record_cache() {
    let test = "thin_load_with_the_record_cache";
    let Some(root) = docker_fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let (p, _loaded) = docker_pair(root, dir.path(), 11);
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    tool_ok(root, &p.a, &["--load", "--cache", cache], &[]);
    let stderr = tool_ok(root, &p.b, &["--load", "--cache", cache], &[]);
    // A's two store layers known, B's new one hashed.
    assert!(
        stderr.contains("record cache: 2 of 3 store layers known, 1 hashed now"),
        "{stderr}"
    );
    assert_thin_load_of_b(root, &p, dir.path(), &stderr);
}

/// A store file that changes while a `--load` streams it stops the run,
/// and the engine, whose body is cut short, loads nothing. A socket in
/// front of the engine's passes the first MiB of the load on, then holds
/// the rest until the file has changed, so the change falls while the
/// tool is writing the file, whatever the timing.
#[test]
fn a_file_changed_during_a_load_loads_nothing() {
    use std::sync::mpsc;
    let test = "a_file_changed_during_a_load_loads_nothing";
    if !require_docker(test) || !require_engine_socket(test) {
        return;
    }
    let dir = scratch(test);
    let store = dir.path().join("store");
    let big = store.join("dddd-big");
    fs::create_dir_all(&big).unwrap();
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let blob = big.join("blob");
    fs::write(&blob, block.repeat(16)).unwrap();
    let tag = format!("{}:1", clients::unique_name("changed"));
    let spec = dir.path().join("spec.json");
    fs::write(
        &spec,
        serde_json::json!({
            "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
            "store_dir": store, "store_layers": [[big]], "repo_tag": tag,
        })
        .to_string(),
    )
    .unwrap();
    let whole = dir.path().join("whole.tar");
    let out = clients::output_within(
        Command::new(TOOL).arg(&spec).args(["-q", "-o"]).arg(&whole),
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success());
    let id = Archive::read(&whole).image_id();
    let _cleanup = LoadedImage {
        client: "docker",
        reference: id.clone(),
    };

    let socket = dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (held_tx, go_rx) = (held_tx, go_rx);
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut engine = UnixStream::connect(engine_socket()).unwrap();
            let mut first = [0u8; 32];
            let n = client.read(&mut first).unwrap();
            engine.write_all(&first[..n]).unwrap();
            let load = first.starts_with(b"POST /images/load");
            let mut back = engine.try_clone().unwrap();
            let mut front = client.try_clone().unwrap();
            let answer = std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut front);
                let _ = front.shutdown(std::net::Shutdown::Both);
            });
            if load {
                let mut passed = (&mut client).take(1 << 20);
                std::io::copy(&mut passed, &mut engine).unwrap();
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            }
            let _ = std::io::copy(&mut client, &mut engine);
            let _ = engine.shutdown(std::net::Shutdown::Write);
            let _ = answer.join();
        }
    });
    let mut cmd = Command::new(TOOL);
    cmd.arg(&spec)
        .args(["--progress", "plain", "--load"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()));
    let child = std::thread::spawn(move || {
        clients::output_within(&mut cmd, std::time::Duration::from_secs(120))
    });
    held_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the load began");
    // The same size, other bytes, near the end: not yet read for the load.
    let mut changed = block.repeat(16);
    changed[15 << 20] ^= 0xff;
    fs::write(&blob, changed).unwrap();
    go_tx.send(()).unwrap();
    let out = child.join().unwrap();
    let line = one_line_error(&out);
    assert!(
        line.contains("changed while the image was being written"),
        "{line}"
    );
    let loaded = Command::new("docker")
        .args(["image", "inspect", &id])
        .output()
        .unwrap();
    assert!(!loaded.status.success(), "the engine loaded the image");
}
