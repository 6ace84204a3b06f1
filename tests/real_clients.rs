//! Images written by the tool, read by the real clients: skopeo, umoci,
//! podman, docker and a loopback docker-registry (never mocks); and the CLI's
//! behaviour on a closed pipe and a full disk, with real processes.
//!
//! The images come from the fixture store of `scripts/make-fixtures.py`
//! (built here with `--with-busybox` for the runnable image), the tool running
//! in a private mount namespace where the store is at `/nix/store`.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead. `scripts/install-deps` installs every client.

#[path = "common/clients.rs"]
mod clients;
#[path = "common/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use clients::{require, require_docker, run, run_json, run_text, unavailable, Archive};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A static busybox for the runnable image (Debian's busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// The fixture tree with the busybox extras, built once per test run.
fn fixture_root(test: &str) -> Option<&'static Path> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        if !Path::new(BUSYBOX).is_file() {
            return Err(format!(
                "no static busybox at {BUSYBOX} (Debian: busybox-static)"
            ));
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-clients-fixtures");
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

/// A temporary directory for one test, under the target directory (not a
/// tmpfs, as the images and unpacked trees can be large).
/// Set `SLI_KEEP_SCRATCH=1` to keep them for a look after a failure.
fn scratch(test: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("{test}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("scratch dir");
    if std::env::var_os("SLI_KEEP_SCRATCH").is_some() {
        dir.disable_cleanup(true);
        eprintln!("{test}: keeping {}", dir.path().display());
    }
    dir
}

fn spec_of(root: &Path, case: &str) -> Value {
    let path = root.join("specs").join(format!("{case}.json"));
    serde_json::from_slice(&fs::read(&path).expect("spec")).expect("spec is JSON")
}

/// Runs the tool on fixture `case` (store at /nix/store) writing `out`.
fn build_image(root: &Path, case: &str, out: &Path, extra: &[&str]) -> Archive {
    let mut cmd = fixtures::store_namespace_command(root, TOOL);
    cmd.arg(root.join("specs").join(format!("{case}.json")))
        .args(["--quiet", "-o"])
        .arg(out)
        .args(extra);
    run(&mut cmd);
    Archive::read(out)
}

/// Every layer of the archive reads cleanly with GNU tar (`tar -t`), which
/// names the place a malformed layer goes wrong.
fn gnu_tar_lists_every_layer(image: &Path, archive: &Archive) {
    for layer in &archive.layers {
        let out = run(Command::new("bash")
            .args([
                "-c",
                r#"set -o pipefail; tar -xOf "$1" "$2" | tar -tvf - > /dev/null"#,
                "bash",
            ])
            .arg(image)
            .arg(layer));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let noise = "tar: Removing leading `/' from member names";
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                !l.starts_with(noise)
                    && !l.contains("from hard link targets")
                    // PAX `hdrcharset=BINARY` (non-UTF-8 names), as Python
                    // writes it; GNU tar reads the names regardless.
                    && !l.contains("unknown extended header keyword 'hdrcharset'")
            })
            .collect();
        assert!(
            complaints.is_empty(),
            "GNU tar on {layer}:\n{}",
            complaints.join("\n")
        );
    }
}

fn docker_archive(path: &Path) -> String {
    format!("docker-archive:{}", path.display())
}

/// The store paths of a spec's layers (deduplicated, in order).
fn store_paths(spec: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for layer in spec["store_layers"].as_array().expect("store_layers") {
        for p in clients::strings(layer) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Compares `rootfs/nix/store` of an unpacked image with the fixture store:
/// exactly the spec's store paths, each with the same entries, contents,
/// permission bits and symlink targets; files owned by the spec's uid/gid and
/// stamped with the layers' mtime.
fn compare_rootfs(root: &Path, spec: &Value, rootfs: &Path, mtime: i64) {
    let paths = store_paths(spec);
    let mut expected = BTreeMap::new();
    for p in &paths {
        let rel = p.strip_prefix('/').expect("absolute store path");
        let base = Path::new(rel);
        for (sub, entry) in clients::walk_tree(&root.join(rel)) {
            expected.insert(base.join(sub), entry);
        }
    }
    // The parents of the store, as every layer carries them.
    for dir in ["nix", "nix/store"] {
        expected.insert(
            PathBuf::from(dir),
            clients::Entry {
                kind: clients::Kind::Dir,
                mode: 0o755,
            },
        );
    }
    let mut actual = BTreeMap::new();
    for (sub, entry) in clients::walk_tree(&rootfs.join("nix")) {
        actual.insert(Path::new("nix").join(sub), entry);
    }
    let diff = clients::tree_diff(&expected, &actual);
    assert!(
        diff.is_empty(),
        "unpacked image differs from the fixture store:\n{diff}"
    );
    assert!(expected.len() > 2, "the spec has store contents");

    let uid = spec["uid"].as_u64().unwrap_or(0) as u32;
    let gid = spec["gid"].as_u64().unwrap_or(0) as u32;
    let mut wrong = Vec::new();
    for rel in expected.keys() {
        let full = rootfs.join(rel);
        let meta = fs::symlink_metadata(&full).expect("lstat");
        if meta.uid() != uid || meta.gid() != gid {
            wrong.push(format!(
                "{}: owner {}:{}, expected {uid}:{gid}",
                rel.display(),
                meta.uid(),
                meta.gid()
            ));
        }
        if meta.file_type().is_file() && meta.mtime() != mtime {
            wrong.push(format!(
                "{}: mtime {}, expected {mtime}",
                rel.display(),
                meta.mtime()
            ));
        }
    }
    assert!(wrong.is_empty(), "ownership/mtime:\n{}", wrong.join("\n"));
}

/// The mtime the tool stamped on the first layer's members.
fn layer_mtime(archive_path: &Path, archive: &Archive) -> i64 {
    let file = fs::File::open(archive_path).expect("archive");
    let mut outer = tar::Archive::new(file);
    for entry in outer.entries().expect("entries") {
        let entry = entry.expect("entry");
        let name = entry.path().expect("name").to_string_lossy().into_owned();
        if name == archive.layers[0] {
            let mut inner = tar::Archive::new(entry);
            let first = inner
                .entries()
                .expect("layer entries")
                .next()
                .expect("a member")
                .expect("member");
            return first.header().mtime().expect("mtime") as i64;
        }
    }
    panic!("no layer {} in the archive", archive.layers[0]);
}

fn skopeo_copy(src: &str, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .arg("copy")
        .args(extra)
        .arg(src)
        .arg(dest));
}

/// Unpacks `layout:tag` with umoci; returns the root file system. A bundle
/// (`umoci unpack`, with a runtime config) unless the image's `User` has no
/// passwd entry in the image, where umoci cannot write that config: then the
/// root file system alone (`umoci raw unpack`).
fn umoci_unpack(layout: &Path, tag: &str, dest: &Path, has_user: bool) -> PathBuf {
    let image = format!("{}:{tag}", layout.display());
    if has_user {
        run(Command::new("umoci")
            .args(["raw", "unpack", "--image", &image])
            .arg(dest));
        dest.to_path_buf()
    } else {
        run(Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(dest));
        dest.join("rootfs")
    }
}

// ---------------------------------------------------------------------------
// skopeo, umoci

#[test]
fn skopeo_inspect_agrees_with_manifest() {
    let test = "skopeo_inspect_agrees_with_manifest";
    if !require(test, &["skopeo", "tar", "bash"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    for case in ["basic", "grouped", "runnable", "base-image"] {
        let image = dir.path().join(format!("{case}.tar"));
        let ours = build_image(root, case, &image, &[]);
        gnu_tar_lists_every_layer(&image, &ours);
        let spec = spec_of(root, case);
        let base_layers = if spec["from_image"].is_null() { 0 } else { 2 };
        let expected_layers = spec["store_layers"].as_array().unwrap().len() + 1 + base_layers;
        assert_eq!(
            ours.layers.len(),
            expected_layers,
            "{case}: layers in manifest"
        );

        let inspect = run_json("skopeo", ["inspect".into(), docker_archive(&image)]);
        let layers = clients::strings(&inspect["Layers"]);
        assert_eq!(
            layers.len(),
            expected_layers,
            "{case}: skopeo's layer count"
        );
        assert_eq!(
            layers,
            ours.diff_ids(),
            "{case}: skopeo's layers = our diff_ids"
        );
        assert_eq!(inspect["Architecture"], spec["architecture"], "{case}");
        assert_eq!(inspect["Os"], "linux", "{case}");

        let config = run_json(
            "skopeo",
            ["inspect".into(), "--config".into(), docker_archive(&image)],
        );
        assert_eq!(
            clients::strings(&config["rootfs"]["diff_ids"]),
            ours.diff_ids(),
            "{case}: config diff_ids"
        );
        assert_eq!(config["config"], ours.config["config"], "{case}: config");
        // The layer digests are what the archive's layer files hash to.
        for (name, diff_id) in ours.layers.iter().zip(ours.diff_ids()) {
            if let Some(hex) = name.strip_suffix("/layer.tar") {
                if spec["from_image"].is_null() {
                    assert_eq!(format!("sha256:{hex}"), diff_id, "{case}: {name}");
                }
            }
        }
    }
}

#[test]
fn skopeo_copy_then_umoci_unpack_reproduces_store() {
    let test = "skopeo_copy_then_umoci_unpack_reproduces_store";
    if !require(test, &["skopeo", "umoci"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    for case in ["basic", "nonroot", "runnable"] {
        let image = dir.path().join(format!("{case}.tar"));
        let ours = build_image(root, case, &image, &[]);
        let layout = dir.path().join(format!("oci-{case}"));
        skopeo_copy(
            &docker_archive(&image),
            &format!("oci:{}:{case}", layout.display()),
            &[],
        );
        assert_eq!(
            clients::oci_diff_ids(&layout),
            ours.diff_ids(),
            "{case}: OCI diff_ids"
        );
        let spec = spec_of(root, case);
        let has_user = spec["config"].get("User").is_some();
        let bundle = dir.path().join(format!("bundle-{case}"));
        let rootfs = umoci_unpack(&layout, case, &bundle, has_user);
        compare_rootfs(root, &spec, &rootfs, layer_mtime(&image, &ours));
    }
    // The customisation layer is there too.
    let passwd = dir.path().join("bundle-basic/rootfs/etc/passwd");
    assert_eq!(
        fs::read_to_string(&passwd).expect("etc/passwd from the customisation layer"),
        "root:x:0:0::/root:/bin/sh\n"
    );
}

// ---------------------------------------------------------------------------
// podman

#[test]
fn podman_load_and_inspect() {
    let test = "podman_load_and_inspect";
    if !require(test, &["podman"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let name = clients::unique_name("podman");
    let tag = format!("{name}:v1");
    let image = dir.path().join("basic.tar");
    let ours = build_image(root, "basic", &image, &["-t", &tag]);
    assert_eq!(ours.repo_tag(), tag, "-t replaced the tag");

    let reference = format!("localhost/{tag}");
    let _cleanup = clients::LoadedImage {
        client: "podman",
        reference: reference.clone(),
    };
    let out = run(Command::new("podman").arg("load").arg("-i").arg(&image));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&tag), "podman load said:\n{said}");

    let inspect = run_json("podman", ["image", "inspect", &reference]);
    let info = &inspect[0];
    assert_eq!(
        info["Id"].as_str(),
        Some(ours.image_id().as_str()),
        "image ID"
    );
    assert_eq!(
        clients::strings(&info["RootFS"]["Layers"]),
        ours.diff_ids(),
        "podman's layers"
    );
    assert!(
        clients::strings(&info["RepoTags"]).contains(&reference),
        "RepoTags: {}",
        info["RepoTags"]
    );
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Config"]["Cmd"], ours.config["config"]["Cmd"]);
}

// ---------------------------------------------------------------------------
// docker

#[test]
fn docker_load_and_run() {
    let test = "docker_load_and_run";
    if !require_docker(test) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let tag = format!("{}:latest", clients::unique_name("docker"));
    let image = dir.path().join("runnable.tar");
    let ours = build_image(root, "runnable", &image, &["-t", &tag]);
    let _cleanup = clients::LoadedImage {
        client: "docker",
        reference: tag.clone(),
    };
    let out = run(Command::new("docker").arg("load").arg("-i").arg(&image));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&tag), "docker load said:\n{said}");

    let inspect = run_json("docker", ["image", "inspect", &tag]);
    let info = &inspect[0];
    assert_eq!(
        info["Id"].as_str(),
        Some(format!("sha256:{}", ours.image_id()).as_str()),
        "image ID"
    );
    assert_eq!(
        clients::strings(&info["RootFS"]["Layers"]),
        ours.diff_ids(),
        "docker's layers"
    );

    let spec = spec_of(root, "runnable");
    let busybox = store_paths(&spec)
        .into_iter()
        .find(|p| p.ends_with("-busybox-static"))
        .expect("busybox store path in the runnable spec");
    let said = run_text(
        "docker",
        [
            "run",
            "--rm",
            "--network=none",
            &tag,
            &format!("{busybox}/bin/busybox"),
            "echo",
            "hello",
        ],
    );
    assert_eq!(said, "hello\n");
    // The image's own Cmd, through the customisation layer's /bin symlink.
    let said = run_text("docker", ["run", "--rm", "--network=none", &tag]);
    assert_eq!(said, "runnable-ok\n");
}

// ---------------------------------------------------------------------------
// registry

#[test]
fn registry_push_and_pull_keep_diff_ids() {
    let test = "registry_push_and_pull_keep_diff_ids";
    if !require(test, &["skopeo", "docker-registry", "umoci"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let image = dir.path().join("basic.tar");
    let ours = build_image(root, "basic", &image, &[]);

    let registry = clients::Registry::start();
    let remote = format!("docker://{}/sli-test/basic:v1", registry.host());
    skopeo_copy(
        &docker_archive(&image),
        &remote,
        &["--dest-tls-verify=false"],
    );
    let config = run_json(
        "skopeo",
        ["inspect", "--tls-verify=false", "--config", &remote],
    );
    assert_eq!(
        clients::strings(&config["rootfs"]["diff_ids"]),
        ours.diff_ids(),
        "diff_ids in the registry; registry log:\n{}",
        registry.log()
    );

    let layout = dir.path().join("pulled");
    skopeo_copy(
        &remote,
        &format!("oci:{}:pulled", layout.display()),
        &["--src-tls-verify=false"],
    );
    assert_eq!(
        clients::oci_diff_ids(&layout),
        ours.diff_ids(),
        "pulled diff_ids"
    );
    let rootfs = umoci_unpack(&layout, "pulled", &dir.path().join("bundle"), false);
    compare_rootfs(
        root,
        &spec_of(root, "basic"),
        &rootfs,
        layer_mtime(&image, &ours),
    );
}

// ---------------------------------------------------------------------------
// CLI behaviour with real processes

/// `stream-layered-image SPEC | head -c 100`: the tool sees its reader go
/// away, and stops quietly with success.
#[test]
fn closed_pipe_is_a_quiet_success() {
    let test = "closed_pipe_is_a_quiet_success";
    if !require(test, &["head"]) {
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    for quiet in [false, true] {
        let mut cmd = fixtures::store_namespace_command(root, TOOL);
        cmd.arg(root.join("specs/basic.json"));
        if quiet {
            cmd.arg("--quiet");
        }
        let mut tool = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the tool");
        let head = Command::new("head")
            .args(["-c", "100"])
            .stdin(Stdio::from(tool.stdout.take().expect("piped stdout")))
            .stdout(Stdio::piped())
            .output()
            .expect("run head");
        assert!(head.status.success());
        assert_eq!(head.stdout.len(), 100, "head got 100 bytes");
        let mut tool_stderr = tool.stderr.take().expect("piped stderr");
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = tool_stderr.read_to_string(&mut text);
            text
        });
        let status = clients::wait_within(
            &mut tool,
            Duration::from_secs(60),
            "the tool after its reader went away",
        );
        let stderr = stderr_reader.join().expect("stderr reader");
        assert_eq!(
            status.code(),
            Some(0),
            "quiet={quiet}: exit status {status:?} (signal {:?}); stderr:\n{stderr}",
            status.signal()
        );
        let lower = stderr.to_lowercase();
        for bad in ["panick", "broken pipe", "os error", "error"] {
            assert!(
                !lower.contains(bad),
                "quiet={quiet}: stderr mentions {bad:?}:\n{stderr}"
            );
        }
        if quiet {
            assert_eq!(stderr, "", "--quiet prints nothing");
        }
    }
}

/// `stream-layered-image SPEC > /dev/full`: a one-line error, non-zero exit.
#[test]
fn full_disk_is_a_one_line_error() {
    let test = "full_disk_is_a_one_line_error";
    if !Path::new("/dev/full").exists() {
        unavailable(test, "no /dev/full");
        return;
    }
    let Some(root) = fixture_root(test) else {
        return;
    };
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full")
    };
    for quiet in [true, false] {
        let mut cmd = fixtures::store_namespace_command(root, TOOL);
        cmd.arg(root.join("specs/basic.json"));
        if quiet {
            cmd.arg("--quiet");
        }
        let out = clients::stderr_within(
            cmd.stdin(Stdio::null()).stdout(full()),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "quiet={quiet}: expected a non-zero exit, got {:?}; stderr:\n{stderr}",
            out.status
        );
        assert!(
            !stderr.contains("panicked"),
            "quiet={quiet}: a panic:\n{stderr}"
        );
        let last = stderr.trim_end().lines().next_back().unwrap_or("");
        assert!(
            last.contains("No space left on device"),
            "quiet={quiet}: the error names the cause:\n{stderr}"
        );
        if quiet {
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "one line of error:\n{stderr}"
            );
        }
    }
}

/// `-o DEVICE` that fails must not unlink the device node (nor anything that
/// is not a file the tool created).
#[test]
fn failed_output_to_a_device_keeps_the_device() {
    let test = "failed_output_to_a_device_keeps_the_device";
    let Some(root) = fixture_root(test) else {
        return;
    };
    let dir = scratch(test);
    let node = dir.path().join("full");
    // A private /dev/full (char 1:7): removing it harms nothing.
    let made = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "7"])
        .status();
    if !made.is_ok_and(|s| s.success()) {
        unavailable(test, "cannot mknod a character device here");
        return;
    }
    let out = clients::stderr_within(
        fixtures::store_namespace_command(root, TOOL)
            .arg(root.join("specs/basic.json"))
            .arg("--quiet")
            .arg("-o")
            .arg(&node)
            .stdin(Stdio::null()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "writing to a full device fails");
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    let meta = fs::symlink_metadata(&node);
    assert!(
        meta.is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_char_device()
        }),
        "the tool removed the device node it was told to write to; stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// A generated store of its own

/// Writes a deterministic tree mixing file sizes (around the 512-byte block,
/// the output buffers and beyond) with names of every length class (ustar
/// name, ustar prefix split, PAX path), non-ASCII names, symlinks with long
/// targets, hard links and modes, in the order that stresses the encoder:
/// large files directly followed by entries that need PAX headers.
fn generate_store(store: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    const SIZES: [usize; 12] = [
        0, 1, 511, 512, 513, 4095, 65_537, 131_073, 262_143, 300_001, 524_289, 1_048_577,
    ];
    const NAME_LENGTHS: [usize; 8] = [1, 40, 99, 100, 101, 120, 155, 200];
    let mut seed: u64 = 0x5eed_1234_abcd_ef01;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut paths = Vec::new();
    for p in 0..3 {
        let base = store.join(format!("{p:032}-mixed-{p}"));
        fs::create_dir_all(&base).unwrap();
        for i in 0..60 {
            let size = SIZES[(next() % SIZES.len() as u64) as usize];
            let name_len = NAME_LENGTHS[(next() % NAME_LENGTHS.len() as u64) as usize];
            let dir = base.join(if i % 3 == 0 {
                "d".repeat(60) + "/sub"
            } else {
                "flat".to_string()
            });
            fs::create_dir_all(&dir).unwrap();
            let stem = format!("{i:03}-{}", if i % 5 == 0 { "é" } else { "n" });
            let name: String = stem
                .chars()
                .chain(std::iter::repeat('x'))
                .take(name_len.max(stem.chars().count()))
                .collect();
            let file = dir.join(&name);
            let data: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            fs::write(&file, &data).unwrap();
            let mode = if i % 4 == 0 { 0o555 } else { 0o444 };
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
            if i % 7 == 0 {
                std::os::unix::fs::symlink(&file, dir.join(format!("{name}.link"))).unwrap();
            }
            if i % 11 == 0 {
                fs::hard_link(&file, dir.join(format!("hard-{i}"))).unwrap();
            }
        }
        paths.push(base.to_str().unwrap().to_string());
    }
    paths
}

#[test]
fn umoci_unpacks_a_generated_store_faithfully() {
    let test = "umoci_unpacks_a_generated_store_faithfully";
    if !require(test, &["skopeo", "umoci", "tar", "bash"]) {
        return;
    }
    let dir = scratch(test);
    let store = dir.path().join("store");
    let paths = generate_store(&store);
    let spec = serde_json::json!({
        "architecture": "amd64",
        "config": {},
        "created": "2020-01-01T00:00:00+00:00",
        "mtime": "2020-01-01T00:00:00+00:00",
        "uid": 0, "gid": 0, "uname": "root", "gname": "root",
        "store_dir": store.to_str().unwrap(),
        "from_image": null,
        "store_layers": [[paths[0]], [paths[1], paths[2]]],
        "customisation_layer": null,
        "repo_tag": "generated:latest",
    });
    let spec_path = dir.path().join("spec.json");
    fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let image = dir.path().join("image.tar");
    run(Command::new(TOOL)
        .arg(&spec_path)
        .args(["--quiet", "-o"])
        .arg(&image));
    let ours = Archive::read(&image);
    gnu_tar_lists_every_layer(&image, &ours);
    let layout = dir.path().join("oci");
    skopeo_copy(
        &docker_archive(&image),
        &format!("oci:{}:generated", layout.display()),
        &[],
    );
    assert_eq!(clients::oci_diff_ids(&layout), ours.diff_ids());
    let rootfs = umoci_unpack(&layout, "generated", &dir.path().join("rootfs"), true);
    let unpacked_store = rootfs.join(store.strip_prefix("/").unwrap());
    let mut names: Vec<String> = fs::read_dir(&unpacked_store)
        .expect("the store in the image")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let expected_names: Vec<String> = paths
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, expected_names);
    for p in &paths {
        let name = Path::new(p).file_name().unwrap();
        let diff = clients::tree_diff(
            &clients::walk_tree(Path::new(p)),
            &clients::walk_tree(&unpacked_store.join(name)),
        );
        assert!(diff.is_empty(), "{p} differs in the image:\n{diff}");
    }
}
