//! Nix integration: `nix/core.nix` builds images as derivation build steps,
//! with the real `nix-build` and no nixpkgs.
//!
//! `tests/nix/images.nix` makes a few store paths with `derivation` (a static
//! busybox is the builder), then images of their closure with the core
//! builder, which runs this crate's binary inside the builds. The tests load
//! those images into docker (or podman) and run them, rebuild them to check
//! that the bytes do not change, change one store path and check which
//! layers survive, and parse every `.nix` file of the repository.
//!
//! Builds run as root with the sandbox off and no substituters, in the
//! machine's /nix/store. A missing nix-build, static busybox or docker
//! engine skips the tests, or fails them when CI is set.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
fn unavailable<T>(test: &str, reason: &str) -> Option<T> {
    let msg = format!("{test}: {reason} (scripts/install-deps installs the dependencies)");
    if under_ci() {
        panic!("{msg}; CI is set, so this is a failure");
    }
    eprintln!("SKIPPED {msg}");
    None
}

/// Skips the test for a reason that is not a missing CI dependency.
fn skip<T>(test: &str, reason: &str) -> Option<T> {
    eprintln!("SKIPPED {test}: {reason}");
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

fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// True when the ELF file at `path` has no program interpreter (is static).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a 64-bit little-endian ELF file
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        at + 4 <= bytes.len() && u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) != 3
    })
}

/// What the Nix tests need: nix-build, root, a static busybox.
struct Nix {
    busybox: PathBuf,
}

impl Nix {
    fn get(test: &str) -> Option<Nix> {
        for tool in ["nix-build", "nix-instantiate"] {
            if which(tool).is_none() {
                return unavailable(test, &format!("no {tool} on PATH (Debian: nix-bin)"));
            }
        }
        let uid = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if uid != 0 {
            return unavailable(
                test,
                "the Nix tests build as root in a single-user store (sandbox off, no build users)",
            );
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .chain(which("busybox"))
            .find(|p| p.is_file());
        let Some(busybox) = busybox else {
            return unavailable(test, "no busybox (Debian: busybox-static)");
        };
        let busybox = fs::canonicalize(&busybox).expect("canonical busybox path");
        if !is_static_elf(&busybox) {
            return unavailable(
                test,
                &format!(
                    "{} is not statically linked (Debian: busybox-static)",
                    busybox.display()
                ),
            );
        }
        Some(Nix { busybox })
    }

    fn command(&self, program: &str, attr: &str, args: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg(repo().join("tests/nix/images.nix"))
            .args(["--option", "sandbox", "false"])
            .args(["--option", "substituters", ""])
            .args(["--option", "build-users-group", ""]);
        // An `sli` among ARGS replaces this crate's binary.
        if !args.iter().any(|(name, _)| *name == "sli") {
            cmd.arg("--argstr").arg("sli").arg(BIN);
        }
        cmd.arg("--argstr")
            .arg("busybox")
            .arg(&self.busybox)
            .args(["-A", attr]);
        for (name, value) in args {
            cmd.args(["--argstr", name, value]);
        }
        cmd
    }

    /// `nix-build tests/nix/images.nix -A attr`: the output path.
    fn build(&self, attr: &str, args: &[(&str, &str)]) -> PathBuf {
        let mut cmd = self.command("nix-build", attr, args);
        cmd.arg("--no-out-link");
        let out = run(&mut cmd);
        let text = stdout_text(&out);
        let path = PathBuf::from(text.lines().last().unwrap_or_default());
        assert!(
            path.starts_with("/nix/store/") && path.exists(),
            "{}: no output path in {text:?}",
            describe(&cmd)
        );
        path
    }

    /// `nix-build --check`: builds attr again and fails unless the new output
    /// is bit for bit the one in the store.
    fn check_rebuild(&self, attr: &str, args: &[(&str, &str)]) {
        let mut cmd = self.command("nix-build", attr, args);
        cmd.args(["--check", "--no-out-link"]);
        run(&mut cmd);
    }

    /// The value of an attribute, as JSON (`nix-instantiate --eval --strict`).
    fn eval_json(&self, attr: &str, args: &[(&str, &str)]) -> Value {
        let mut cmd = self.command("nix-instantiate", attr, args);
        cmd.args(["--eval", "--strict", "--json"]);
        let out = run(&mut cmd);
        serde_json::from_slice(&out.stdout).expect("nix-instantiate --json")
    }

    /// The value of a string attribute.
    fn eval_string(&self, attr: &str) -> String {
        let mut cmd = self.command("nix-instantiate", attr, &[]);
        cmd.args(["--eval", "--json"]);
        let out = run(&mut cmd);
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("nix-instantiate --json")
            .as_str()
            .expect("a string")
            .to_string()
    }
}

/// Runs a streaming script and returns the image bytes.
fn stream_bytes(script: &Path, extra: &[&str]) -> Vec<u8> {
    run(Command::new(script).args(extra).arg("--quiet")).stdout
}

/// A docker-archive read into memory: the config and each layer's digest
/// and store paths.
struct Image {
    repo_tag: String,
    config: Value,
    /// (diff_id, store paths in the layer, member names)
    layers: Vec<(String, BTreeSet<String>, Vec<String>)>,
    /// Entries of the last layer: (name, uid, gid, mode).
    last_layer: Vec<(String, u64, u64, u32)>,
}

impl Image {
    fn read(bytes: &[u8]) -> Image {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut ar = tar::Archive::new(bytes);
        for entry in ar.entries().expect("archive entries") {
            let mut entry = entry.expect("archive entry");
            let name = entry.path().expect("name").to_string_lossy().into_owned();
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).expect("read member");
            files.insert(name, buf);
        }
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
        let config_name = manifest[0]["Config"].as_str().expect("Config");
        let config: Value = serde_json::from_slice(&files[config_name]).expect("config");
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let names: Vec<&str> = manifest[0]["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names.len(), diff_ids.len(), "manifest and config disagree");
        let mut layers = Vec::new();
        let mut last_layer = Vec::new();
        for (i, (name, id)) in names.iter().zip(&diff_ids).enumerate() {
            let mut paths = BTreeSet::new();
            let mut members = Vec::new();
            let mut layer = tar::Archive::new(&files[*name][..]);
            for entry in layer.entries().expect("layer entries") {
                let entry = entry.expect("layer entry");
                let member = entry.path().expect("name").to_string_lossy().into_owned();
                let clean = member.trim_start_matches("./").trim_start_matches('/');
                let parts: Vec<&str> = clean.split('/').filter(|p| !p.is_empty()).collect();
                if parts.len() >= 3 && parts[0] == "nix" && parts[1] == "store" {
                    paths.insert(format!("/nix/store/{}", parts[2]));
                }
                if i + 1 == names.len() {
                    let h = entry.header();
                    last_layer.push((
                        clean.trim_end_matches('/').to_string(),
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                        h.mode().unwrap(),
                    ));
                }
                members.push(member);
            }
            layers.push((id.clone(), paths, members));
        }
        Image {
            repo_tag: manifest[0]["RepoTags"][0]
                .as_str()
                .unwrap_or("")
                .to_string(),
            config,
            layers,
            last_layer,
        }
    }

    fn diff_ids(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.0.as_str()).collect()
    }

    fn store_paths(&self) -> BTreeSet<String> {
        self.layers
            .iter()
            .flat_map(|l| l.1.iter().cloned())
            .collect()
    }

    fn last_entry(&self, name: &str) -> (u64, u64, u32) {
        let e = self
            .last_layer
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in the customisation layer: {:?}",
                    self.last_layer
                )
            });
        (e.1, e.2, e.3)
    }
}

/// The container engine to load and run images with: docker when its
/// engine answers, else podman.
fn engine(test: &str) -> Option<&'static str> {
    if which("docker").is_some() {
        let ok = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some("docker");
        }
    }
    if which("podman").is_some() {
        eprintln!("{test}: the docker engine does not answer; using podman");
        return Some("podman");
    }
    unavailable(test, "neither a docker engine nor podman")
}

/// Removes an image from the engine when dropped.
struct Loaded {
    engine: &'static str,
    tag: String,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Command::new(self.engine)
            .args(["rmi", "-f", &self.tag])
            .stdin(Stdio::null())
            .output();
    }
}

fn load(engine: &'static str, image: &Path, tag: &str) -> Loaded {
    let loaded = Loaded {
        engine,
        tag: tag.to_string(),
    };
    let out = run(Command::new(engine).args(["load", "-i"]).arg(image));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(tag),
        "{engine} load did not report {tag}: {said}"
    );
    loaded
}

fn container_output(engine: &str, tag: &str, cmd: &[&str]) -> String {
    let out = run(Command::new(engine)
        .args(["run", "--rm", "--network", "none", tag])
        .args(cmd));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_nix_file_parses() {
    let test = "every_nix_file_parses";
    if which("nix-instantiate").is_none() {
        unavailable::<()>(test, "no nix-instantiate on PATH (Debian: nix-bin)");
        return;
    }
    let mut files = Vec::new();
    let mut dirs = vec![repo().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
            } else if name.ends_with(".nix") {
                files.push(path);
            }
        }
    }
    files.sort();
    for must in [
        "flake.nix",
        "nix/core.nix",
        "nix/nixpkgs.nix",
        "tests/nix/images.nix",
    ] {
        assert!(files.contains(&repo().join(must)), "{must} not found");
    }
    for file in &files {
        run(Command::new("nix-instantiate").arg("--parse").arg(file));
    }
    eprintln!("{test}: {} files parse", files.len());
}

/// Evaluates `tests/nix/overlay-unit.nix`: the overlay applied to a
/// package set made from the recorded dockerTools interface of one shape of
/// nixpkgs. Returns the result and what Nix printed on stderr (warnings).
fn overlay_unit(shape: &str, overlay: &str) -> (Value, String) {
    let out = run(Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join("tests/nix/overlay-unit.nix"))
        .args(["--argstr", "shape", shape, "--argstr", "overlay", overlay]));
    (
        serde_json::from_slice(&out.stdout).expect("nix-instantiate --json"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Unit test of the overlays (`nix/overlays.nix`), on recorded descriptions
/// of nixpkgs' dockerTools interface (`tests/nix/nixpkgs-dockertools.nix`):
/// the default overlay replaces exactly the streaming script
/// (`writePython3 "stream"`), passing every other writer and function
/// through; `with-layering` also replaces dockerAutoLayer where nixpkgs has
/// it; a dockerTools without the hook is left as it is, with a warning.
#[test]
fn overlay_swaps_only_the_engine() {
    let test = "overlay_swaps_only_the_engine";
    if which("nix-instantiate").is_none() {
        unavailable::<()>(test, "no nix-instantiate on PATH (Debian: nix-bin)");
        return;
    }
    let ours = "ln -s /sli/bin/stream-layered-image $out\n";
    for shape in [
        "writeReferencesToFile-era",
        "writeClosure-era",
        "auto-layer-era",
    ] {
        let (r, stderr) = overlay_unit(shape, "default");
        assert_eq!(r["stream_script_kind"], "runCommand", "{shape}: {r}");
        assert_eq!(r["stream_script_name"], "stream", "{shape}");
        assert_eq!(r["stream_script"], ours, "{shape}");
        assert_eq!(r["other_writer_is_nixpkgs"], true, "{shape}");
        assert_eq!(r["passed_through"], true, "{shape}");
        assert_eq!(r["has_package"], true, "{shape}");
        let layering = if shape == "auto-layer-era" {
            "nixpkgs-auto-layer"
        } else {
            "popularity"
        };
        assert_eq!(
            r["layers"], layering,
            "{shape}: the default overlay keeps nixpkgs' layering"
        );
        assert!(!stderr.contains("warning"), "{shape}: {stderr}");
    }

    let (r, stderr) = overlay_unit("auto-layer-era", "with-layering");
    assert_eq!(r["stream_script"], ours);
    assert_eq!(r["layers"], "runCommand");
    let script = r["layers_script"].as_str().unwrap();
    assert!(
        script.contains("stream-layered-image layers --graph \"$NIX_ATTRS_JSON_FILE\"")
            && script.contains("--strategy auto")
            && script.contains("--exclude \"$excludePathsFile\""),
        "{script}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let (r, stderr) = overlay_unit("writeClosure-era", "with-layering");
    assert_eq!(r["layers"], "popularity");
    assert!(stderr.contains("has no dockerAutoLayer"), "{stderr}");

    // No writePython3 argument: nothing is replaced, and it says so.
    for overlay in ["default", "with-layering"] {
        let (r, stderr) = overlay_unit("writers-argument", overlay);
        assert_eq!(r["stream_script_kind"], "nixpkgs-writePython3");
        assert_eq!(r["same_as_nixpkgs"], true);
        assert!(
            stderr.contains("takes no writePython3 argument"),
            "{overlay}: {stderr}"
        );
    }
}

/// The streaming script's image loads into docker (or podman), and the
/// container runs the closure's program; extraCommands and
/// fakeRootCommands shaped the customisation layer.
#[test]
fn streamed_image_loads_and_runs() {
    let test = "streamed_image_loads_and_runs";
    let Some(nix) = Nix::get(test) else { return };
    let Some(engine) = engine(test) else { return };

    let script = nix.build("stream", &[]);
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#!/nix/store/"), "not a script: {text}");

    let tag = format!("sli-nix-test-{}:stream", std::process::id());
    let bytes = stream_bytes(&script, &["-t", &tag]);
    let image = Image::read(&bytes);
    assert_eq!(image.repo_tag, tag);
    // maxLayers 4: at most 3 store layers and the customisation layer.
    assert!(image.layers.len() <= 4, "{} layers", image.layers.len());
    let (uid, gid, _) = image.last_entry("var/empty");
    assert_eq!((uid, gid), (1000, 100), "fakeRootCommands' chown");
    assert_eq!(
        image.last_entry("tmp").2 & 0o7777,
        0o1777,
        "fakeRootCommands' chmod"
    );
    image.last_entry("etc-note");
    image.last_entry("bin/hello");

    let dir = temp_dir(test);
    let file = dir.join("image.tar");
    fs::write(&file, &bytes).unwrap();
    let _loaded = load(engine, &file, &tag);
    let out = container_output(engine, &tag, &[]);
    assert_eq!(out, "hello from variant 1\n200\n", "the image's Cmd");

    let busybox = nix.eval_string("bb");
    let out = container_output(
        engine,
        &tag,
        &[&busybox, "stat", "-c", "%u:%g %a %n", "/var/empty", "/tmp"],
    );
    assert_eq!(out, "1000:100 755 /var/empty\n0:0 1777 /tmp\n");
    let _ = fs::remove_dir_all(&dir);
}

/// The customisation layer is made as nixpkgs makes it: `contents` merged
/// with lndir's semantics (a relative symlink is copied as it is, not
/// pointed at the store), and extraCommands run as in a stdenv builder (sed
/// on PATH, no `set -u`, NIX_BUILD_TOP set).
#[test]
fn customisation_layer_as_nixpkgs_makes_it() {
    let test = "customisation_layer_as_nixpkgs_makes_it";
    let Some(nix) = Nix::get(test) else { return };
    let layer = nix.build("stream.customisationLayer", &[]);
    let data = nix.build("data", &[]);
    let bytes = fs::read(layer.join("layer.tar")).unwrap();
    let mut links = BTreeMap::new();
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_owned();
        if let Some(target) = entry.link_name().unwrap() {
            links.insert(name, target.to_string_lossy().into_owned());
        } else {
            let mut text = String::new();
            let _ = entry.read_to_string(&mut text);
            files.insert(name, text);
        }
    }
    // data has etc/link.conf -> data.conf: lndir copies the link, so it
    // resolves to the image's /etc/data.conf, itself a link into data.
    assert_eq!(links["etc/link.conf"], "data.conf", "{links:?}");
    assert_eq!(
        links["etc/data.conf"],
        format!("{}/etc/data.conf", data.display())
    );
    assert_eq!(
        files["stdenv-note"], "hello sed\nunset: []\nbuild top bound\n",
        "extraCommands did not run as in a stdenv builder"
    );
}

/// The closure's graph comes from Nix with __structuredAttrs, as nixpkgs
/// exports it: every path with the narSize Nix records for it, which
/// `layers` takes instead of measuring files.
#[test]
fn graph_has_nix_nar_sizes() {
    let test = "graph_has_nix_nar_sizes";
    let Some(nix) = Nix::get(test) else { return };
    let graph = nix.build("stream.conf.graph", &[]);
    let json: Value = serde_json::from_slice(&fs::read(&graph).unwrap()).unwrap();
    let nodes = json["graph"].as_array().expect("a \"graph\" list");
    let app = nix.build("app", &[]);
    assert!(
        nodes.iter().any(|n| n["path"] == app.to_str().unwrap()),
        "the app is not in the graph"
    );
    for node in nodes {
        let path = node["path"].as_str().unwrap();
        let size = run(Command::new("nix-store").args(["--query", "--size", path]));
        assert_eq!(
            node["narSize"].as_u64(),
            stdout_text(&size).trim().parse::<u64>().ok(),
            "{path}"
        );
    }
}

/// The passthru of nixpkgs' streamLayeredImage and buildLayeredImage: conf
/// with imageName and imageTag, streamScript, isExe, the user's passthru;
/// buildLayeredImage's stream.
#[test]
fn passthru_as_nixpkgs() {
    let test = "passthru_as_nixpkgs";
    let Some(nix) = Nix::get(test) else { return };
    let tag = nix.eval_json("stream.imageTag", &[]);
    assert_eq!(nix.eval_json("stream.conf.imageTag", &[]), tag);
    assert_eq!(nix.eval_json("stream.conf.imageName", &[]), "sli-nix-test");
    assert_eq!(nix.eval_json("stream.imageName", &[]), "sli-nix-test");
    assert_eq!(nix.eval_json("stream.isExe", &[]), true);
    assert_eq!(nix.eval_json("stream.sliTest", &[]), "user passthru");
    let script = nix.eval_json("stream.streamScript", &[]);
    assert!(
        script.as_str().unwrap().ends_with("stream-layered-image"),
        "{script}"
    );
    assert_eq!(nix.eval_json("image.imageTag", &[]), tag);
    assert_eq!(
        nix.eval_json("image.stream.outPath", &[]),
        nix.eval_json("stream.outPath", &[])
    );
}

/// A rebuilt tool changes the layering and streaming steps, not the
/// customisation layer: its store path, which the image's history names,
/// stays, and with it the image ID.
#[test]
fn customisation_layer_does_not_depend_on_the_tool() {
    let test = "customisation_layer_does_not_depend_on_the_tool";
    let Some(nix) = Nix::get(test) else { return };
    let dir = temp_dir(test);
    // Another binary: the same program with one more byte at its end.
    let other = dir.join("stream-layered-image");
    let mut bytes = fs::read(BIN).unwrap();
    bytes.push(0);
    fs::write(&other, bytes).unwrap();
    let other = other.to_str().unwrap();
    let path = |attr: &str, sli: Option<&str>| {
        let args: Vec<(&str, &str)> = sli.map(|s| vec![("sli", s)]).unwrap_or_default();
        nix.eval_json(&format!("{attr}.outPath"), &args)
    };
    assert_eq!(
        path("stream.customisationLayer", None),
        path("stream.customisationLayer", Some(other))
    );
    assert_ne!(path("stream.conf", None), path("stream.conf", Some(other)));
    let _ = fs::remove_dir_all(&dir);
}

/// Rebuilding gives the same bytes (`nix-build --check`), and the streaming
/// script, buildLayeredImage and its gzip output hold the same image.
#[test]
fn builds_are_reproducible() {
    let test = "builds_are_reproducible";
    let Some(nix) = Nix::get(test) else { return };

    let image = nix.build("image", &[]);
    for attr in [
        "image",
        "image.stream",
        "image.stream.conf",
        "image.stream.customisationLayer",
        "imageGz",
    ] {
        nix.build(attr, &[]);
        nix.check_rebuild(attr, &[]);
    }
    let stored = fs::read(&image).unwrap();
    let script = nix.build("stream", &[]);
    let first = stream_bytes(&script, &[]);
    let second = stream_bytes(&script, &[]);
    assert!(first == second, "two runs of the streaming script differ");
    assert!(
        first == stored,
        "buildLayeredImage's file is not what the script streams"
    );

    let gz = fs::read(nix.build("imageGz", &[])).unwrap();
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert!(unzipped == stored, "the gzipped image differs");
    eprintln!(
        "{test}: {} bytes, sha256 {}",
        stored.len(),
        sha256_hex(&stored)
    );
}

/// When a store path changes (and with it the paths that refer to it), the
/// new image reuses every layer that holds none of the new paths.
#[test]
fn changed_store_path_keeps_the_other_layers() {
    let test = "changed_store_path_keeps_the_other_layers";
    let Some(nix) = Nix::get(test) else { return };

    let cases = [
        ("default", "4"),
        ("default", "5"),
        ("popularity", "4"),
        ("size", "4"),
    ];
    for (strategy, max) in cases {
        let args = [("layeringStrategy", strategy), ("maxLayers", max)];
        let old = Image::read(&fs::read(nix.build("image", &args)).unwrap());
        let args = [args[0], args[1], ("variant", "2")];
        let new = Image::read(&fs::read(nix.build("image", &args)).unwrap());
        assert!(new.layers.len() <= max.parse().unwrap());
        let old_paths = old.store_paths();
        let changed: BTreeSet<String> = new.store_paths().difference(&old_paths).cloned().collect();
        // "/nix/store/" and the 32-character hash and its dash: 44 bytes.
        let names: BTreeSet<&str> = changed.iter().map(|p| &p[44..]).collect();
        assert_eq!(
            names,
            BTreeSet::from(["sli-test-app", "sli-test-lib"]),
            "{strategy}: changed paths"
        );

        let old_ids: BTreeSet<&str> = old.diff_ids().into_iter().collect();
        let store_layers = &new.layers[..new.layers.len() - 1];
        let mut kept = 0;
        for (id, paths, _) in store_layers {
            if paths.is_disjoint(&changed) {
                assert!(
                    old_ids.contains(id.as_str()),
                    "{strategy}: layer {id} holds no changed path ({paths:?}) but is not in the old image"
                );
                kept += 1;
            } else {
                assert!(
                    !old_ids.contains(id.as_str()),
                    "{strategy}: layer {id} changed but kept its digest"
                );
            }
        }
        assert!(kept >= 1, "{strategy}: no layer was kept");
        let groups: Vec<Vec<&str>> = store_layers
            .iter()
            .map(|l| l.1.iter().map(|p| &p[44..]).collect())
            .collect();
        eprintln!(
            "{test}: {strategy}, maxLayers {max}: {kept} of {} store layers kept: {groups:?}",
            store_layers.len()
        );
    }
}

/// fromImage: its layers come first and count against maxLayers, and its
/// Env is merged into the config.
#[test]
fn from_image_layers_count_against_max_layers() {
    let test = "from_image_layers_count_against_max_layers";
    let Some(nix) = Nix::get(test) else { return };

    let base_gz = fs::read(nix.build("baseImage", &[])).unwrap();
    let mut base_bytes = Vec::new();
    flate2::read::GzDecoder::new(&base_gz[..])
        .read_to_end(&mut base_bytes)
        .unwrap();
    let base = Image::read(&base_bytes);
    assert_eq!(base.repo_tag, "sli-nix-test-base:base");
    assert!(
        base.layers.len() <= 3,
        "the base has {} layers",
        base.layers.len()
    );

    let image = Image::read(&fs::read(nix.build("onBase", &[])).unwrap());
    assert!(
        image.layers.len() <= 5,
        "maxLayers 5, {} layers",
        image.layers.len()
    );
    assert_eq!(
        image.diff_ids()[..base.layers.len()],
        base.diff_ids()[..],
        "the base layers come first"
    );
    // Everything left in one store layer, then the customisation layer.
    assert_eq!(image.layers.len(), base.layers.len() + 2);
    let env: Vec<&str> = image.config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM_BASE=1") && env.contains(&"PATH=/bin"),
        "Env {env:?}"
    );
}

/// layeringPipeline goes to `layers --pipeline`; includeStorePaths = false
/// leaves only the customisation layer.
#[test]
fn layering_pipeline_and_no_store_paths() {
    let test = "layering_pipeline_and_no_store_paths";
    let Some(nix) = Nix::get(test) else { return };

    let piped = Image::read(&fs::read(nix.build("piped", &[])).unwrap());
    assert_eq!(
        piped.layers.len(),
        3,
        "limit_layers 2 and the customisation layer"
    );
    assert_eq!(piped.store_paths().len(), 5, "{:?}", piped.store_paths());

    let bare = Image::read(&fs::read(nix.build("noStore", &[])).unwrap());
    assert_eq!(bare.repo_tag, "sli-nix-test:nostore");
    assert_eq!(bare.layers.len(), 1);
    assert!(bare.store_paths().is_empty());
}

/// The same images from a GNU userland: bash, GNU tar under fakeroot (the
/// tools nixpkgs passes), zstd. The store layers are the busybox build's,
/// and fakeRootCommands still set the owners.
#[test]
fn gnu_tools_and_fakeroot_build_the_same_store_layers() {
    let test = "gnu_tools_and_fakeroot_build_the_same_store_layers";
    let Some(nix) = Nix::get(test) else { return };
    let mut prefix = None;
    for tool in [
        "bash",
        "tar",
        "fakeroot",
        "zstd",
        "find",
        "date",
        "sha256sum",
    ] {
        match which(tool) {
            None => return skip(test, &format!("no {tool} on PATH")).unwrap_or(()),
            Some(p) if tool == "tar" => {
                let version = run(Command::new(&p).arg("--version"));
                if !stdout_text(&version).contains("GNU tar") {
                    return skip(test, "tar is not GNU tar").unwrap_or(());
                }
                prefix = p.parent().and_then(Path::parent).map(Path::to_path_buf);
            }
            Some(_) => {}
        }
    }
    let prefix = prefix.unwrap();
    let (bash, prefix) = (
        which("bash").unwrap(),
        prefix.to_string_lossy().into_owned(),
    );
    for tool in ["fakeroot", "zstd", "find", "date", "sha256sum"] {
        if !Path::new(&prefix).join("bin").join(tool).exists() {
            return skip(test, &format!("{tool} is not in {prefix}/bin with tar")).unwrap_or(());
        }
    }
    let host = [
        ("tools", "host"),
        ("hostShell", bash.to_str().unwrap()),
        ("hostPrefix", prefix.as_str()),
    ];

    let script = nix.build("stream", &host);
    assert!(fs::read_to_string(&script)
        .unwrap()
        .starts_with(&format!("#!{}", bash.display())));
    let gnu_bytes = stream_bytes(&script, &[]);
    let gnu = Image::read(&gnu_bytes);
    let busybox = Image::read(&stream_bytes(&nix.build("stream", &[]), &[]));
    let n = gnu.layers.len();
    assert_eq!(n, busybox.layers.len());
    assert_eq!(
        gnu.diff_ids()[..n - 1],
        busybox.diff_ids()[..n - 1],
        "store layers"
    );
    assert_eq!(gnu.last_entry("var/empty").0, 1000);
    assert_eq!(gnu.last_entry("var/empty").1, 100);
    assert_eq!(gnu.last_entry("tmp").2 & 0o7777, 0o1777);

    let zst = nix.build("imageZstd", &host);
    nix.check_rebuild("imageZstd", &host);
    nix.check_rebuild("stream.customisationLayer", &host);
    let out = run(Command::new("zstd").args(["-d", "-c", "-q"]).arg(&zst));
    assert!(
        out.stdout == gnu_bytes,
        "the zstd image is not what the script streams"
    );
}

/// `layeringHints` reaches `stream-layered-image layers --hints`: the tool's
/// `hints` command learns a hints file from the app's references graph, and
/// the image is built with it (default strategy) and runs.
#[test]
fn layering_hints_reach_layers() {
    let test = "layering_hints_reach_layers";
    let Some(nix) = Nix::get(test) else { return };
    let graph = nix.build("appGraph", &[]);
    let dir = temp_dir(test);
    let hints = dir.join("hints.json");
    run(Command::new(BIN)
        .args(["hints", "--graph"])
        .arg(&graph)
        .arg("-o")
        .arg(&hints));
    let hints = hints.to_str().unwrap();
    let with = nix.build("image", &[("layeringHints", hints)]);
    let without = nix.build("image", &[]);
    let conf = |image: &Path| {
        // The image's derivation depends on the hints file only through
        // conf.json's layering.
        let drv = run(Command::new("nix-store")
            .arg("--query")
            .arg("--deriver")
            .arg(image));
        stdout_text(&drv)
    };
    assert_ne!(
        conf(&with),
        conf(&without),
        "the hints file changed nothing"
    );
    let image = Image::read(&fs::read(&with).unwrap());
    assert!(!image.diff_ids().is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn multi_platform_image_script_writes_an_index() {
    let test = "multi_platform_image_script_writes_an_index";
    let Some(nix) = Nix::get(test) else { return };
    if which("skopeo").is_none() {
        unavailable::<()>(test, "no skopeo on PATH");
        return;
    }
    let script = nix.build("multi", &[]);
    let dir = temp_dir(test);
    let archive = dir.join("multi.tar");
    let out = Command::new(&script)
        .args(["--quiet", "--format", "oci-archive", "-o"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:multi", archive.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            [&p["os"], &p["architecture"], &p["variant"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
}

/// layerDigests: one `digest` derivation per store layer, whose records
/// conf.json carries. Rebuilding after a change digests again only the
/// layers that hold a changed store path; the image is the same bytes as
/// without records, streamed in one pass.
#[test]
fn layer_digests_are_rebuilt_only_for_changed_layers() {
    let test = "layer_digests_are_rebuilt_only_for_changed_layers";
    let Some(nix) = Nix::get(test) else { return };
    // Variants of this run only: app and lib are new store paths, built
    // (and digested) for the first time.
    let unique = format!(
        "digests-{}-{}",
        std::process::id(),
        sha256_hex(BIN.as_bytes())
    );
    let first = format!("{unique}-a");
    let second = format!("{unique}-b");
    let digests_built = |variant: &str| -> (PathBuf, usize) {
        let mut cmd = nix.command("nix-build", "digested", &[("variant", variant)]);
        cmd.arg("--no-out-link");
        let out = run(&mut cmd);
        let log = String::from_utf8_lossy(&out.stderr);
        let built = log
            .lines()
            .filter(|l| {
                l.starts_with("building '") && l.contains("-stream-layered-image-layer-digest.drv")
            })
            .count();
        let script = PathBuf::from(stdout_text(&out).lines().last().unwrap_or_default());
        (script, built)
    };
    let (_, _) = digests_built(&first);
    let (script, built) = digests_built(&second);

    // The conf the script streams holds one record per store layer.
    let text = fs::read_to_string(&script).unwrap();
    let conf = text
        .split_whitespace()
        .find(|w| w.ends_with("-conf.json"))
        .expect("the script names its conf.json");
    let conf: Value = serde_json::from_slice(&fs::read(conf).unwrap()).unwrap();
    let layers = conf["store_layers"].as_array().expect("store_layers");
    let records = conf["store_layer_digests"]
        .as_array()
        .expect("store_layer_digests");
    assert_eq!(records.len(), layers.len());
    for r in records {
        assert!(r["blobs"]["gzip:5"]["digest"].is_string(), "{r}");
        assert!(r["blobs"]["zstd:3"]["digest"].is_string(), "{r}");
    }
    let changed = layers
        .iter()
        .filter(|l| {
            l.as_array().unwrap().iter().any(|p| {
                let p = p.as_str().unwrap();
                p.ends_with("-sli-test-app") || p.ends_with("-sli-test-lib")
            })
        })
        .count();
    assert!(changed >= 1 && changed < layers.len(), "{layers:?}");
    assert_eq!(
        built,
        changed,
        "the second build digested {built} layers; {changed} of {} hold a changed store path",
        layers.len()
    );

    // The same image as without records, and the records were used.
    let plain = nix.build("stream", &[("variant", &second)]);
    let out = run(Command::new(&script).args(["--progress", "plain"]));
    assert!(
        out.stdout == stream_bytes(&plain, &[]),
        "other bytes with layerDigests"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        log.matches("from store_layer_digests").count(),
        layers.len(),
        "{log}"
    );
    eprintln!(
        "{test}: {} store layers; the second build digested {built}",
        layers.len()
    );
}
