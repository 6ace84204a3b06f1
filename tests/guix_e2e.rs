//! Guix, end to end, on a real guix-daemon with the real Guix modules.
//!
//! `scripts/guix-daemon start` builds guix-daemon from a Guix source tree
//! (`GUIX_SOURCE`, a tarball; cached under `target/guix/`) and starts it.
//! Then `tests/guix/e2e.scm`, run by guile with the Guix tree on its load
//! path:
//!
//! - evaluates `guix.scm`, reports the package, and runs the build phases
//!   the package adds after cargo-build-system's real `configure` phase;
//! - builds a real profile of local-file directories (a static busybox, a
//!   small app, some data) and, with `(stream-layered-image pack)`, images
//!   of it: the build uses the real `#:references-graphs` file, this
//!   binary as the build step, Debian's guile, gzip and zstd, so that no
//!   package needs building; each image twice, from two derivations.
//!
//! This test checks the package against `Cargo.toml` and `Cargo.lock`, each
//! image's bytes, metadata and layers (against `guix pack -f docker
//! --max-layers`'s rule), and loads and runs the images with docker.
//! `tests/guix/check-modules.scm` checks, with the same Guix tree, that the
//! modules compile without unbound variables and that the documented
//! examples import every name they use.
//!
//! Needs root, docker, guile and the Debian packages of
//! `scripts/install-deps`, and `GUIX_SOURCE` unless the daemon is already
//! built. Without them the test is skipped locally and fails under CI.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn under_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"),
        Err(_) => false,
    }
}

/// Skips the test (returns None) or, under CI, fails it.
fn unavailable<T>(reason: &str) -> Option<T> {
    let msg = format!("guix_e2e: {reason}");
    if under_ci() {
        panic!("{msg}; CI is set, so this is a failure");
    }
    eprintln!("SKIPPED {msg}");
    None
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn run(cmd: &mut Command) -> Output {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn scheme_string(s: &str) -> String {
    format!("{s:?}")
}

/// What the test needs from the machine.
struct Tools {
    guile: PathBuf,
    guile_binary: PathBuf,
    busybox: PathBuf,
    gzip: PathBuf,
    zstd: PathBuf,
}

fn tools() -> Option<Tools> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("not root (guix-daemon runs as root, without build users)");
    }
    if !Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return unavailable("no docker engine (docker info fails)");
    }
    let Some(guile) = which("guile").or_else(|| which("guile-3.0")) else {
        return unavailable("no guile on PATH (Debian: guile-3.0)");
    };
    // The real binary, for the store: Debian's /usr/bin/guile is a symlink
    // chain to it.
    let guile_binary = fs::canonicalize(&guile).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(busybox) = busybox else {
        return unavailable("no static busybox (Debian: busybox-static)");
    };
    let (Some(gzip), Some(zstd)) = (which("gzip"), which("zstd")) else {
        return unavailable("no gzip or zstd on PATH");
    };
    Some(Tools {
        guile,
        guile_binary,
        busybox,
        gzip,
        zstd,
    })
}

/// Starts the daemon (building it first if needed); returns the Guix tree.
fn start_daemon() -> Option<PathBuf> {
    let script = repo().join("scripts/guix-daemon");
    let dir = Command::new(&script).arg("dir").output().unwrap();
    let built = dir.status.success()
        && Path::new(String::from_utf8_lossy(&dir.stdout).trim())
            .parent()
            .is_some_and(|top| top.join("built").exists());
    if std::env::var_os("GUIX_SOURCE").is_none() && !built {
        return unavailable(
            "GUIX_SOURCE is not set (the path of a Guix source tarball; scripts/guix-daemon builds guix-daemon from it)",
        );
    }
    let started = Instant::now();
    let out = run(Command::new(&script).arg("start"));
    eprintln!(
        "guix_e2e: guix-daemon ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let tree = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    Some(PathBuf::from(tree))
}

/// `guile --no-auto-compile -L TREE -L guix SCRIPT ARGS...` in the checkout.
fn guix_guile(tools: &Tools, tree: &Path, script: &str) -> Command {
    let mut cmd = Command::new(&tools.guile);
    cmd.current_dir(repo())
        .env("GUILE_AUTO_COMPILE", "0")
        .arg("--no-auto-compile")
        .arg("-L")
        .arg(tree)
        .arg("-L")
        .arg(repo().join("guix"))
        .arg(repo().join(script));
    cmd
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sli-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The value of `key = "..."` in Cargo.toml's [package] table.
fn cargo_toml_field(key: &str) -> String {
    let text = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(rest) = line.strip_prefix(&format!("{key} = \"")) {
                return rest.trim_end_matches('"').to_owned();
            }
        }
    }
    panic!("Cargo.toml: no {key} in [package]");
}

/// Cargo.lock's crates.io packages: (name, version, sha256).
fn locked_crates() -> BTreeSet<(String, String, String)> {
    let text = fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let mut out = BTreeSet::new();
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{key} = \""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            })
        };
        if field("source").is_some_and(|s| s.starts_with("registry+")) {
            out.insert((
                field("name").unwrap(),
                field("version").unwrap(),
                field("checksum").unwrap(),
            ));
        }
    }
    out
}

/// Guix's name for a crate's package (crate-name->package-name).
fn guix_crate_name(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    format!("rust-{mapped}")
}

fn check_package(report: &Value) {
    assert_eq!(report["name"], "stream-layered-image");
    assert_eq!(report["version"], cargo_toml_field("version").as_str());
    assert_eq!(report["build_system"], "cargo");
    assert_eq!(report["install_source"], false);
    assert_eq!(
        report["cargo_test_flags"],
        serde_json::json!(["--lib", "--bins"])
    );

    let origins: BTreeSet<(String, String, String)> = report["origins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["uri"].as_str().unwrap().to_owned(),
                o["file_name"].as_str().unwrap().to_owned(),
                o["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = locked_crates()
        .into_iter()
        .map(|(name, version, sum)| {
            (
                format!("https://crates.io/api/v1/crates/{name}/{version}/download"),
                format!("{}-{version}.tar.gz", guix_crate_name(&name)),
                sum,
            )
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        origins, expected,
        "the package's crate origins are Cargo.lock's crates, named as Guix names them"
    );

    // Regression: cargo-build-system sets ZSTD_SYS_USE_PKG_CONFIG=1 in its
    // configure phase, and zstd-sys then needs pkg-config and zstd's lib
    // output, which the package does not have. Its own phases, run after
    // the real configure phase, must undo that before the build.
    let zstd = &report["zstd"];
    let phases: Vec<&str> = zstd["phases"]
        .as_array()
        .expect("the package has #:phases")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let at = |name: &str| phases.iter().position(|p| *p == name);
    assert!(at("configure") < at("build"), "{phases:?}");
    assert!(
        zstd["zstd_sys_use_pkg_config_after_configure"].is_null(),
        "ZSTD_SYS_USE_PKG_CONFIG is still set when the build starts: {zstd}"
    );
}

/// The files of a docker-archive.
fn archive_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in tar::Archive::new(bytes).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

/// A layer's members: name (without `./` or a trailing slash) -> (type,
/// mode, link target).
fn layer_members(tar_bytes: &[u8]) -> BTreeMap<String, (u8, u32, String)> {
    let mut out = BTreeMap::new();
    for entry in tar::Archive::new(tar_bytes).entries().unwrap() {
        let entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        // Store layers name their members /gnu/store/..., as nixpkgs' do;
        // the customisation layer's names are relative.
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let h = entry.header();
        out.insert(
            name,
            (h.entry_type().as_byte(), h.mode().unwrap() & 0o7777, link),
        );
    }
    out
}

/// The store items a layer holds (`gnu/store/NAME` members).
fn layer_items(members: &BTreeMap<String, (u8, u32, String)>) -> BTreeSet<String> {
    members
        .keys()
        .filter_map(|m| {
            let rest = m.strip_prefix("gnu/store/")?;
            Some(format!("/gnu/store/{}", rest.split('/').next().unwrap()))
        })
        .collect()
}

/// Guix's size of a store item (guix build store-copy's file-size): the
/// lstat sizes of every file, symlink and directory in it.
fn guix_file_size(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    let mut size = meta.size();
    if meta.is_dir() {
        for child in fs::read_dir(path).unwrap() {
            size += guix_file_size(&child.unwrap().path());
        }
    }
    size
}

/// `guix pack -f docker --max-layers=N`'s split of ITEMS (guix docker's
/// size-sorted-store-items): the largest items a layer each, as many as
/// leave one layer for the rest and one for the customisation layer.
fn guix_pack_split(items: &[String], max_layers: usize) -> Vec<BTreeSet<String>> {
    let mut sized: Vec<(u64, &String)> = items
        .iter()
        .map(|i| (guix_file_size(Path::new(i)), i))
        .collect();
    // Stable, as Guix's sort: equal sizes keep the closure's order.
    sized.sort_by_key(|s| std::cmp::Reverse(s.0));
    let head = if items.len() >= max_layers {
        max_layers - 2
    } else {
        items.len() - 1
    };
    let mut layers: Vec<BTreeSet<String>> = sized[..head]
        .iter()
        .map(|(_, i)| BTreeSet::from([(*i).clone()]))
        .collect();
    layers.push(sized[head..].iter().map(|(_, i)| (*i).clone()).collect());
    layers
}

fn decompress(bytes: Vec<u8>, compressor: &str) -> Vec<u8> {
    match compressor {
        "none" => bytes,
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "zstd" => zstd::decode_all(&bytes[..]).unwrap(),
        other => panic!("unknown compressor {other}"),
    }
}

struct Image {
    tag: String,
}

/// Checks one image of the report; returns its repository tag.
fn check_image(image: &Value, profile: &str, closure: &[String]) -> Image {
    let name = image["name"].as_str().unwrap();
    let compressor = image["compressor"].as_str().unwrap();
    let max_layers = image["max_layers"].as_u64().unwrap() as usize;
    let output = image["output"].as_str().unwrap();
    let bytes = fs::read(output).unwrap();
    let again = fs::read(image["again"].as_str().unwrap()).unwrap();
    assert!(
        bytes == again,
        "{name}: a second build from scratch gave different bytes"
    );
    let ext = match compressor {
        "none" => ".tar",
        "gzip" => ".tar.gz",
        "zstd" => ".tar.zst",
        _ => unreachable!(),
    };
    assert!(output.ends_with(ext), "{name}: {output}");
    let tar_bytes = decompress(bytes, compressor);
    let files = archive_files(&tar_bytes);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let manifest = &manifest[0];
    let config: Value =
        serde_json::from_slice(&files[manifest["Config"].as_str().unwrap()]).unwrap();

    // The architecture of the system the image is for: this machine's
    // unless #:system says otherwise.
    let arch = if name == "img-arm" { "arm64" } else { "amd64" };
    assert_eq!(config["architecture"], arch, "{name}");
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([format!("{profile}/bin/app")])
    );
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&format!("PATH={profile}/bin").as_str()),
        "{env:?}"
    );
    let tag = manifest["RepoTags"][0].as_str().unwrap().to_owned();

    let layers: Vec<&str> = manifest["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        layers.len() <= max_layers,
        "{name}: {} layers",
        layers.len()
    );
    let (custom, store) = layers.split_last().unwrap();
    let store_layers: Vec<BTreeSet<String>> = store
        .iter()
        .map(|l| layer_items(&layer_members(&files[*l])))
        .collect();
    assert_eq!(
        store_layers,
        guix_pack_split(closure, max_layers),
        "{name}: the layers are not guix pack --max-layers={max_layers}'s"
    );

    // The customisation layer: as guix pack makes it, plus our symlinks.
    let members = layer_members(&files[*custom]);
    assert_eq!(members["tmp"], (b'5', 0o1777, String::new()), "{members:?}");
    assert_eq!(members["gnu/store"].0, b'5');
    assert_eq!(members["bin"], (b'2', 0o777, format!("{profile}/bin")));
    // A name that is not ASCII: the build runs in a UTF-8 locale.
    assert_eq!(
        members["café"],
        (b'2', 0o777, format!("{profile}/share/app"))
    );
    Image { tag }
}

/// The multi-platform image of the Guix module: an OCI archive whose index
/// names an amd64 and an arm64/v8 image, which skopeo copies whole, each
/// with its SBOM, whose components are the profile's closure.
fn check_multi_platform(image: &Value, closure: &[String], tmp: &Path) {
    assert_eq!(image["name"], "img-multi", "{image}");
    let output = image["output"].as_str().unwrap();
    let reference = format!("oci-archive:{output}:latest");
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &reference]));
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let variant = p["variant"]
                .as_str()
                .map(|v| format!("/{v}"))
                .unwrap_or_default();
            format!(
                "{}/{}{variant}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    let copy = tmp.join("multi-copy");
    run(Command::new("skopeo")
        .args(["copy", "--all", &reference])
        .arg(format!("oci:{}:copied", copy.display())));
    // The SBOMs, one per platform, listed in the archive's index.json.
    let unpacked = tmp.join("multi-unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(output)
        .arg("-C")
        .arg(&unpacked));
    let blob = |digest: &str| -> Value {
        let p = unpacked
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let listed: Value =
        serde_json::from_slice(&fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let artifacts: Vec<&Value> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == "application/spdx+json")
        .collect();
    assert_eq!(artifacts.len(), 2, "{listed}");
    for artifact in artifacts {
        let manifest = blob(artifact["digest"].as_str().unwrap());
        assert!(index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == manifest["subject"]["digest"]));
        let sbom = blob(manifest["layers"][0]["digest"].as_str().unwrap());
        let mut paths: Vec<String> = sbom["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["externalRefs"].as_array())
            .map(|refs| refs[0]["referenceLocator"].as_str().unwrap().to_owned())
            .collect();
        paths.sort();
        let mut want = closure.to_vec();
        want.sort();
        assert_eq!(paths, want, "the SBOM lists the closure");
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tests/guix/e2e.scm with BUILDS (Scheme data: a list of (NAME
/// COMPRESSOR MAX-LAYERS KEYWORD-ARGUMENTS...)), COMMAND_BUILDS and
/// EXTRA, more entries of its argument list (a hints file, multi-platform
/// builds); returns its report.
fn run_e2e(
    tools: &Tools,
    tree: &Path,
    tmp: &Path,
    builds: &str,
    command_builds: &str,
    extra: &str,
) -> Value {
    let result = tmp.join("result.json");
    let work = tmp.join("work");
    fs::create_dir_all(&work).unwrap();
    let args = format!(
        "((checkout . {checkout}) (work . {work}) (busybox . {busybox}) (tool . {tool})
          (guile . {guile}) (gzip . {gzip}) (zstd . {zstd}) (builds . {builds})
          (command-builds . {command_builds}) (result . {result}) {extra})",
        checkout = scheme_string(repo().to_str().unwrap()),
        work = scheme_string(work.to_str().unwrap()),
        busybox = scheme_string(tools.busybox.to_str().unwrap()),
        tool = scheme_string(BIN),
        guile = scheme_string(tools.guile_binary.to_str().unwrap()),
        gzip = scheme_string(tools.gzip.to_str().unwrap()),
        zstd = scheme_string(tools.zstd.to_str().unwrap()),
        result = scheme_string(result.to_str().unwrap()),
    );
    let started = Instant::now();
    run(guix_guile(tools, tree, "tests/guix/e2e.scm").arg(&args));
    eprintln!(
        "guix_e2e: package evaluated, profile and images built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    serde_json::from_slice(&fs::read(&result).unwrap()).unwrap()
}

#[test]
fn guix_images_on_a_real_daemon() {
    let Some(tools) = tools() else { return };
    let Some(tree) = start_daemon() else { return };
    let tmp = TempDir::new("guix-e2e");

    // The modules compile against the real Guix modules without unbound
    // variables, and the documented examples import what they use.
    let started = Instant::now();
    let out = run(guix_guile(&tools, &tree, "tests/guix/check-modules.scm").arg(repo()));
    eprintln!(
        "{}guix_e2e: modules and examples checked in {:.1} s",
        String::from_utf8_lossy(&out.stdout),
        started.elapsed().as_secs_f64()
    );

    let builds = r#"(("img-none" none 3)
                     ("img-gzip" gzip 4)
                     ("img-zstd" zstd 10 #:local-build? #t #:image-tag "sli-guix-e2e")
                     ("img-arm" none 3 #:system "aarch64-linux"))"#;
    // guix docker-layered's options for the image img-none is.
    let command_builds = format!(
        r#"(("cmd-none" "-m" "MANIFEST" "--max-layers=3" "-S" "/bin=bin" "-S" "/café=share/app"
                           "--entry-point=bin/app" "-C" "none" {tool}))"#,
        tool = scheme_string(&format!("--tool={BIN}"))
    );
    // One multi-platform image of the profile's specs for two systems,
    // with an SBOM each.
    let multi = r#"(multi-builds ("img-multi" ("x86_64-linux" "aarch64-linux") #:sbom (spdx)))"#;
    let report = run_e2e(&tools, &tree, &tmp.0, builds, &command_builds, multi);

    check_package(&report["package"]);

    let profile = report["profile"].as_str().unwrap();
    let closure: Vec<String> = report["closure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(closure.len(), 4, "{closure:?}");
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    let mut tags: Vec<(String, String)> = Vec::new();
    for image in images {
        let checked = check_image(image, profile, &closure);
        // guix pack's default repository: the manifest's friendly name.
        let expected_tag = match image["name"].as_str().unwrap() {
            "img-zstd" => "sli-guix-e2e:latest",
            _ => "app-busybox-data:latest",
        };
        assert_eq!(checked.tag, expected_tag);
        // #:local-build? is the caller's; guix pack's default is #f.
        let local = if image["name"] == "img-zstd" {
            Value::from("1")
        } else {
            Value::Null
        };
        assert_eq!(image["local_build"], local, "{image}");
        // An arm64 image does not run here.
        if image["name"] != "img-arm" {
            tags.push((image["output"].as_str().unwrap().to_owned(), checked.tag));
        }
    }

    check_multi_platform(&report["multi_platform_images"][0], &closure, &tmp.0);

    // guix docker-layered, given guix pack's options, makes img-none's bytes.
    let command = &report["command_images"][0];
    assert_eq!(command["name"], "cmd-none");
    let none = images.iter().find(|i| i["name"] == "img-none").unwrap();
    assert!(
        fs::read(command["output"].as_str().unwrap()).unwrap()
            == fs::read(none["output"].as_str().unwrap()).unwrap(),
        "guix docker-layered made another image than (stream-layered-image pack)"
    );

    for (output, tag) in &tags {
        let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        // docker load reads gzip but not every engine reads zstd.
        let input = if output.ends_with(".zst") {
            let plain = tmp.0.join("image.tar");
            fs::write(&plain, decompress(fs::read(output).unwrap(), "zstd")).unwrap();
            plain.to_str().unwrap().to_owned()
        } else {
            output.clone()
        };
        let loaded = docker(&["load", "-i", &input]);
        assert!(loaded.contains(tag.as_str()), "{loaded}");
        let said = docker(&["run", "--rm", tag]);
        assert_eq!(said, "app: hello from a Guix profile\n", "{tag}");
        let said = docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/cat",
            tag,
            "/café/message",
        ]);
        assert_eq!(said, "hello from a Guix profile\n", "{tag}");
        let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    }
}

/// `#:hints` reaches `stream-layered-image layers --hints` in a real build:
/// the tool's `hints` command learns a hints file from a graph of the same
/// package names, and an image is built with it and the `default`
/// strategy.
#[test]
fn guix_hints_reach_layers() {
    let Some(tools) = tools() else { return };
    let Some(tree) = start_daemon() else { return };
    let tmp = TempDir::new("guix-e2e-hints");
    // A references graph of the names the test profile holds, under other
    // hashes, as an older version would have them (exportReferencesGraph's
    // JSON, which carries the sizes: these paths are not on disk).
    let graph = tmp.0.join("graph.json");
    let item = |name: &str| format!("/gnu/store/{}-{name}", "0".repeat(32));
    let nodes: Vec<Value> = [
        ("profile", vec!["app", "busybox", "data"]),
        ("app", vec![]),
        ("busybox", vec![]),
        ("data", vec![]),
    ]
    .into_iter()
    .map(|(name, refs)| {
        serde_json::json!({
            "path": item(name),
            "narSize": 1000,
            "references": refs.into_iter().map(item).collect::<Vec<_>>(),
        })
    })
    .collect();
    fs::write(&graph, serde_json::to_vec(&nodes).unwrap()).unwrap();
    let hints = tmp.0.join("hints.json");
    run(Command::new(BIN)
        .args(["hints", "--graph"])
        .arg(&graph)
        .arg("-o")
        .arg(&hints));
    let builds = r#"(("img-hints" none 3 #:strategy default #:hints hints-file))"#;
    let hints = format!("(hints . {})", scheme_string(hints.to_str().unwrap()));
    let report = run_e2e(&tools, &tree, &tmp.0, builds, "()", &hints);
    let profile = report["profile"].as_str().unwrap();
    let output = report["images"][0]["output"].as_str().unwrap();
    let files = archive_files(&fs::read(output).unwrap());
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert!(manifest[0]["Layers"].as_array().unwrap().len() <= 3);
    assert!(manifest[0]["Config"].is_string(), "an image of {profile}");
}

/// The spec's `store_layers` and `store_layer_digests` of a spec directory.
fn spec_records(dir: &str) -> (Vec<Vec<String>>, Vec<Value>) {
    let spec: Value =
        serde_json::from_slice(&fs::read(Path::new(dir).join("spec.json")).unwrap()).unwrap();
    let layers = spec["store_layers"]
        .as_array()
        .expect("store_layers")
        .iter()
        .map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let records = spec["store_layer_digests"]
        .as_array()
        .unwrap_or_else(|| panic!("{dir}/spec.json has no store_layer_digests"))
        .clone();
    (layers, records)
}

/// `#:layer-digests? #t`: the spec holds one record per store layer, each
/// that of the layer the image holds; the image's bytes are those without
/// records; the tool streams the spec from its records. After one store
/// item changed, the second build builds the record derivations of the
/// layers that hold a changed item, and only those. And `guix
/// docker-layered --layer-digests` makes the same bytes as without.
#[test]
fn guix_layer_digests_are_rebuilt_only_for_changed_layers() {
    let Some(tools) = tools() else { return };
    let Some(tree) = start_daemon() else { return };
    let tmp = TempDir::new("guix-e2e-digests");
    // Data no earlier run put in the store, so that its layer's record is
    // not there yet.
    let token = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let builds = r#"(("img-none" none 3))"#;
    let command_builds = format!(
        r#"(("cmd-digests" "-m" "MANIFEST" "--max-layers=3" "-S" "/bin=bin" "-S" "/café=share/app"
                              "--entry-point=bin/app" "-C" "none" "--layer-digests" {tool}))"#,
        tool = scheme_string(&format!("--tool={BIN}"))
    );
    let extra = format!(
        r#"(layer-digests "img-digests" 4 {})"#,
        scheme_string(&token)
    );
    let report = run_e2e(&tools, &tree, &tmp.0, builds, &command_builds, &extra);
    let digests = &report["layer_digests"];

    // The image with records is the image without.
    let plain = fs::read(digests["plain"].as_str().unwrap()).unwrap();
    assert!(
        fs::read(digests["image"].as_str().unwrap()).unwrap() == plain,
        "other bytes with #:layer-digests?"
    );

    // One record per store layer, each of that layer's tar in the image.
    let spec = digests["spec"].as_str().unwrap();
    let (layers, records) = spec_records(spec);
    assert_eq!(layers.len(), 3, "{layers:?}");
    assert_eq!(records.len(), layers.len());
    let files = archive_files(&plain);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let tars = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(tars.len(), layers.len() + 1, "and the customisation layer");
    for (record, tar) in records.iter().zip(tars) {
        let bytes = &files[tar.as_str().unwrap()];
        assert_eq!(
            record["diff_id"],
            format!("sha256:{}", sha256_hex(bytes)),
            "{record}"
        );
        assert_eq!(record["size"], bytes.len() as u64, "{record}");
        for compression in ["gzip:5", "zstd:3"] {
            assert!(
                record["blobs"][compression]["digest"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("sha256:")),
                "{compression} in {record}"
            );
        }
    }

    // The tool streams the spec from the records, to the bytes it streams
    // without them. (Not the image's: a spec directory names its
    // customisation layer by another path, which the config's history
    // shows.)
    let spec_json = Path::new(spec).join("spec.json");
    let mut bare: Value = serde_json::from_slice(&fs::read(&spec_json).unwrap()).unwrap();
    bare.as_object_mut().unwrap().remove("store_layer_digests");
    let bare_json = tmp.0.join("bare-spec.json");
    fs::write(&bare_json, serde_json::to_vec(&bare).unwrap()).unwrap();
    let stream = |spec: &Path, name: &str| -> (Vec<u8>, String) {
        let out_file = tmp.0.join(name);
        let out = run(Command::new(BIN)
            .arg(spec)
            .arg("-o")
            .arg(&out_file)
            .args(["--progress", "plain"]));
        (
            fs::read(&out_file).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (with, log) = stream(&spec_json, "with-records.tar");
    let (without, _) = stream(&bare_json, "without-records.tar");
    assert!(with == without, "the records change the streamed bytes");
    assert_eq!(
        log.matches("from store_layer_digests").count(),
        layers.len(),
        "{log}"
    );

    // After one store item changed, only the layers holding a changed item
    // get a new record.
    let (changed_layers, changed_records) = spec_records(digests["changed_spec"].as_str().unwrap());
    assert_eq!(changed_records.len(), changed_layers.len());
    let before: BTreeSet<&String> = layers.iter().flatten().collect();
    let changed = changed_layers
        .iter()
        .filter(|l| l.iter().any(|p| !before.contains(p)))
        .count();
    assert!(
        changed >= 1 && changed < changed_layers.len(),
        "{changed_layers:?}"
    );
    let built = digests["changed_records_built"].as_u64().unwrap() as usize;
    assert_eq!(
        built,
        changed,
        "the second build built {built} record derivations; {changed} of {} layers hold a changed store item",
        changed_layers.len()
    );
    assert_eq!(
        digests["record_derivations"].as_array().unwrap().len(),
        changed_layers.len()
    );
    // The unchanged layers' records are the first build's.
    for (layer, record) in changed_layers.iter().zip(&changed_records) {
        if let Some(i) = layers.iter().position(|l| l == layer) {
            assert_eq!(record, &records[i], "{layer:?}");
        }
    }

    // A #:layer-digests? that is not a boolean: one line that names it.
    let err = digests["bad_keyword_error"].as_str().unwrap();
    assert!(
        err.contains("layer-digests? must be #t or #f")
            && err.contains("yes")
            && !err.contains('\n'),
        "{err}"
    );

    // guix docker-layered --layer-digests: img-none's bytes.
    let command = &report["command_images"][0];
    assert_eq!(command["name"], "cmd-digests");
    let none = &report["images"][0];
    assert_eq!(none["name"], "img-none");
    assert!(
        fs::read(command["output"].as_str().unwrap()).unwrap()
            == fs::read(none["output"].as_str().unwrap()).unwrap(),
        "guix docker-layered --layer-digests made other bytes"
    );
    eprintln!(
        "guix_e2e: {} store layers; the first build built {} record derivations, the second {built}",
        changed_layers.len(),
        digests["first_records_built"]
    );
}

/// The `guix docker-layered` command through the real `guix` script, as a
/// Guix extension (GUIX_EXTENSIONS_PATH): its help, and a bad option as a
/// one-line error.
#[test]
fn guix_docker_layered_command() {
    let Some(tools) = tools() else { return };
    let Some(tree) = start_daemon() else { return };
    let guix = |args: &[&str]| {
        Command::new(tree.join("pre-inst-env"))
            .arg("guix")
            .arg("docker-layered")
            .args(args)
            .env("GUILE_AUTO_COMPILE", "0")
            .env("GUIX_EXTENSIONS_PATH", repo().join("guix/guix/extensions"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let _ = &tools;
    let help = guix(&["--help"]);
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--max-layers=N",
        "--strategy=S",
        "-S, --symlink",
        "--entry-point",
        "-C, --compression",
        "--layer-digests",
    ] {
        assert!(text.contains(option), "{option} missing from:\n{text}");
    }
    let bad = guix(&["--max-layers=1", "hello"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("--max-layers: 1: expected an integer of at least 2"),
        "{err}"
    );
    let bad = guix(&["--compression=lz4", "hello"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--compression: lz4: expected gzip, zstd, xz or none"),
        "{bad:?}"
    );
}

/// Guix's `rust` (the default of cargo-build-system) is recent enough for
/// the rustc the package records as Cargo.lock's need (checked against the
/// crates by `guix_package_knows_the_rust_cargo_lock_needs`). Read from the
/// Guix tree's gnu/packages/rust.scm: loading it takes minutes. (The
/// crates are locked to what Cargo.toml's rust-version builds; a lock
/// needing a newer rustc fails here.)
#[test]
fn guix_rust_is_recent_enough_for_cargo_lock() {
    let Some(tree) = start_daemon() else { return };
    let rust_scm = fs::read_to_string(tree.join("gnu/packages/rust.scm")).unwrap();
    // (define-public rust
    //   (let ((base-rust rust-1.82))
    let after = rust_scm
        .split("(define-public rust\n")
        .nth(1)
        .expect("rust.scm defines rust");
    let guix_rust = after
        .split("(base-rust rust-")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("rust is an inherited rust-X.Y")
        .to_owned();
    let package = fs::read_to_string(repo().join("guix/stream-layered-image/package.scm")).unwrap();
    let needed = package
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("(define %locked-crates-rust-version \"")
                .map(|v| v.trim_end_matches("\")").to_owned())
        })
        .unwrap();
    let n = |v: &str| -> Vec<u64> { v.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    assert!(
        n(&guix_rust) >= n(&needed),
        "Guix's rust is {guix_rust}; Cargo.lock's crates need rustc {needed}"
    );
}
