//! Guix integration, without Guix: the Guile modules under `guix/` that need
//! no Guix run under Debian's guile-3.0, and every `.scm` file of the
//! repository must read with Guile's reader (with the gexp syntax Guix
//! adds).
//!
//! `(stream-layered-image spec)` turns a references graph, as
//! `#:references-graphs` writes it, into an image: these tests run it on a
//! store made in a temporary directory, and on the closure of a Nix
//! derivation (the same graph format) whose image is then loaded into
//! docker (or podman) and run.
//!
//! A missing guile (or nix-build, static busybox, docker engine for the last
//! test) skips the tests, or fails them when CI is set.

use std::collections::BTreeSet;
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

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn guile(test: &str) -> Option<PathBuf> {
    match which("guile").or_else(|| which("guile-3.0")) {
        Some(g) => Some(g),
        None => unavailable(test, "no guile on PATH (Debian: guile-3.0)"),
    }
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

/// `guile --no-auto-compile -L guix ARGS...`, run in `cwd`.
fn guile_command(guile: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(guile);
    cmd.current_dir(cwd)
        .arg("--no-auto-compile")
        .arg("-L")
        .arg(repo().join("guix"));
    cmd
}

/// A Scheme string literal.
fn scheme_string(s: &str) -> String {
    format!("{:?}", s)
}

/// Runs tests/guix/build-image.scm: `(stream-layered-image spec)`'s
/// build-layered-image with `settings`, an association list (Scheme text).
fn build_image(guile: &Path, work: &Path, settings: &str) -> Output {
    run(guile_command(guile, work)
        .arg(repo().join("tests/guix/build-image.scm"))
        .arg(format!("({settings})")))
}

/// A layer of a docker-archive: its diff_id, and its members' names and
/// headers.
type Layer = (String, Vec<(String, tar::Header)>);

/// The manifest entry of a docker-archive, with the image config under
/// "config", and its layers.
fn layers(bytes: &[u8]) -> (Value, Vec<Layer>) {
    let mut files = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(bytes).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).unwrap();
        files.insert(name, buf);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config: Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
    let mut out = Vec::new();
    let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    for (name, id) in manifest[0]["Layers"].as_array().unwrap().iter().zip(ids) {
        let mut members = Vec::new();
        for entry in tar::Archive::new(&files[name.as_str().unwrap()][..])
            .entries()
            .unwrap()
        {
            let entry = entry.unwrap();
            let member = entry.path().unwrap().to_string_lossy().into_owned();
            members.push((member, entry.header().clone()));
        }
        out.push((id.as_str().unwrap().to_string(), members));
    }
    let mut top = manifest[0].clone();
    top["config"] = config;
    (top, out)
}

fn scm_files() -> Vec<PathBuf> {
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
            } else if name.ends_with(".scm") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_scm_file_reads() {
    let test = "every_scm_file_reads";
    let Some(guile) = guile(test) else { return };
    let files = scm_files();
    for must in [
        "guix.scm",
        "guix/stream-layered-image/spec.scm",
        "guix/stream-layered-image/pack.scm",
        "guix/stream-layered-image/package.scm",
    ] {
        assert!(files.contains(&repo().join(must)), "{must} not found");
    }
    let out = run(Command::new(&guile)
        .arg("--no-auto-compile")
        .arg(repo().join("tests/guix/read-all.scm"))
        .args(&files));
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

/// A file that does not read is reported: the check is not vacuous.
#[test]
fn a_broken_scm_file_is_reported() {
    let test = "a_broken_scm_file_is_reported";
    let Some(guile) = guile(test) else { return };
    let tmp = TempDir::new(test);
    let bad = tmp.0.join("bad.scm");
    fs::write(&bad, "(define (f x)\n  #~(list #$x)\n").unwrap();
    let out = Command::new(&guile)
        .arg("--no-auto-compile")
        .arg(repo().join("tests/guix/read-all.scm"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unclosed form was accepted");
}

#[test]
fn guile_unit_tests() {
    let test = "guile_unit_tests";
    let Some(guile) = guile(test) else { return };
    let tmp = TempDir::new(test); // SRFI-64 writes its log into the working directory
    let out = run(guile_command(&guile, &tmp.0)
        .arg(repo().join("tests/guix/unit.scm"))
        .arg(repo()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# of expected passes"), "{text}");
    assert!(!text.contains("unexpected"), "{text}");
}

/// The crate list the Guix package reads from Cargo.lock is every
/// crates.io package of the lock file.
#[test]
fn guix_package_crates_follow_cargo_lock() {
    let test = "guix_package_crates_follow_cargo_lock";
    let Some(guile) = guile(test) else { return };
    let tmp = TempDir::new(test);
    let out = run(guile_command(&guile, &tmp.0).arg("-c").arg(format!(
        "(use-modules (stream-layered-image cargo-lock) (ice-9 match))
         (for-each (match-lambda ((n v c) (format #t \"~a ~a ~a~%\" n v c)))
                   (call-with-input-file {} cargo-lock-registry-crates))",
        scheme_string(repo().join("Cargo.lock").to_str().unwrap())
    )));
    let from_guile: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();

    let lock = fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let mut expected = BTreeSet::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        if field("source").is_some_and(|s| s.starts_with("registry+")) {
            expected.insert(format!(
                "{} {} {}",
                field("name").unwrap(),
                field("version").unwrap(),
                field("checksum").unwrap()
            ));
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(from_guile, expected);
}

/// A store in a temporary directory: item name -> (size of its data file,
/// references).
fn make_store(root: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let store = root.join("gnu/store");
    fs::create_dir_all(&store).unwrap();
    let items = [
        ("0a", "big", 300_000usize),
        ("0b", "medium", 60_000),
        ("0c", "small", 2_000),
        ("0d", "tiny", 100),
    ];
    let mut paths = Vec::new();
    for (prefix, name, size) in items {
        let hash = format!("{prefix}{}", "x".repeat(30));
        let path = store.join(format!("{hash}-{name}"));
        fs::create_dir_all(path.join("share")).unwrap();
        fs::write(path.join("share/data"), vec![b'd'; size]).unwrap();
        paths.push((name.to_string(), path));
    }
    // The profile: bin/ with a link into `big`.
    let profile = store.join(format!("0p{}-profile", "x".repeat(30)));
    fs::create_dir_all(profile.join("bin")).unwrap();
    std::os::unix::fs::symlink(paths[0].1.join("share/data"), profile.join("bin/data")).unwrap();
    paths.push(("profile".to_string(), profile));
    (store, paths)
}

fn graph_text(paths: &[(String, PathBuf)]) -> String {
    // The profile refers to everything; the others to nothing (but tiny
    // refers to small).
    let mut text = String::new();
    for (name, path) in paths {
        let refs: Vec<&Path> = match name.as_str() {
            "profile" => paths.iter().map(|(_, p)| p.as_path()).collect(),
            "tiny" => vec![paths[2].1.as_path()],
            _ => vec![],
        };
        text.push_str(&format!("{}\n\n{}\n", path.display(), refs.len()));
        for r in refs {
            text.push_str(&format!("{}\n", r.display()));
        }
    }
    text
}

/// references graph -> spec -> image, outside Guix: the size rule (Guix's
/// --max-layers, which counts the customisation layer), the customisation
/// layer, the spec's store_dir and config, gzip, and identical bytes when
/// built again.
#[test]
fn references_graph_to_image() {
    let test = "references_graph_to_image";
    let Some(guile) = guile(test) else { return };
    if which("gzip").is_none() {
        unavailable::<()>(test, "no gzip on PATH");
        return;
    }
    let tmp = TempDir::new(test);
    let (store, paths) = make_store(&tmp.0);
    let graph = tmp.0.join("profile-graph");
    fs::write(&graph, graph_text(&paths)).unwrap();
    let profile = &paths[4].1;

    let build = |work: &str, output: &str, extra: &str| -> Vec<u8> {
        let work = tmp.0.join(work);
        fs::create_dir_all(&work).unwrap();
        let output = tmp.0.join(output);
        let settings = format!(
            "(output . {out}) (tool . {tool}) (graph . {graph}) (store-dir . {store})
             (max-layers . 3) (profile . {profile}) (symlinks . ((\"/bin\" -> \"bin\")))
             (architecture . \"arm64\") (repo-tag . \"guix-test:latest\")
             (config . ((\"Env\" . #(\"PATH=/bin\")) (\"Cmd\" . #(\"/bin/data\")))) {extra}",
            out = scheme_string(output.to_str().unwrap()),
            tool = scheme_string(BIN),
            graph = scheme_string(graph.to_str().unwrap()),
            store = scheme_string(store.to_str().unwrap()),
            profile = scheme_string(profile.to_str().unwrap()),
        );
        let out = build_image(&guile, &work, &settings);
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            log.contains("layering 5 store items into at most 2 layers"),
            "{log}"
        );
        fs::read(output).unwrap()
    };

    let bytes = build("w1", "image.tar", "");
    let (top, image) = layers(&bytes);
    assert_eq!(top["RepoTags"][0], "guix-test:latest");
    assert_eq!(top["config"]["architecture"], "arm64");
    assert_eq!(top["config"]["config"]["Cmd"][0], "/bin/data");
    assert_eq!(
        image.len(),
        3,
        "max-layers 3 counts the customisation layer"
    );

    // Guix's rule: the largest item alone, the rest together.
    let store_rel = store
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let items_of = |members: &[(String, tar::Header)]| -> BTreeSet<String> {
        members
            .iter()
            .filter_map(|(m, _)| {
                let rest = m
                    .trim_start_matches("./")
                    .trim_start_matches('/')
                    .strip_prefix(&format!("{store_rel}/"))?;
                Some(
                    rest.split('/')
                        .next()
                        .unwrap()
                        .split_once('-')?
                        .1
                        .to_string(),
                )
            })
            .collect()
    };
    assert_eq!(items_of(&image[0].1), BTreeSet::from(["big".to_string()]));
    assert_eq!(
        items_of(&image[1].1),
        ["medium", "small", "tiny", "profile"]
            .map(String::from)
            .into_iter()
            .collect()
    );

    // The customisation layer: /tmp (1777) and /bin -> <profile>/bin.
    let custom = &image[2].1;
    let entry = |name: &str| {
        custom
            .iter()
            .find(|(m, _)| m.trim_start_matches("./").trim_end_matches('/') == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in {:?}",
                    custom.iter().map(|c| &c.0).collect::<Vec<_>>()
                )
            })
            .1
            .clone()
    };
    assert_eq!(entry("tmp").mode().unwrap() & 0o7777, 0o1777);
    let bin = entry("bin");
    assert_eq!(bin.entry_type(), tar::EntryType::Symlink);
    assert_eq!(
        bin.link_name().unwrap().unwrap().to_path_buf(),
        profile.join("bin")
    );
    assert_eq!((bin.uid().unwrap(), bin.gid().unwrap()), (0, 0));

    // Built again, compressed: the same image.
    let gz = build("w2", "image.tar.gz", "(compressor . (\"gzip\" \"-9n\"))");
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert!(unzipped == bytes, "building again gave other bytes");

    // Our strategy instead of Guix's: still within the budget, every item in.
    let ours = build("w3", "ours.tar", "(strategy . default)");
    let (_, image) = layers(&ours);
    assert!(image.len() <= 3);
    let all: BTreeSet<String> = image[..image.len() - 1]
        .iter()
        .flat_map(|(_, m)| items_of(m))
        .collect();
    assert_eq!(all.len(), 5);
}

/// A static busybox, or None.
fn static_busybox() -> Option<PathBuf> {
    let p = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .chain(which("busybox"))
        .find(|p| p.is_file())?;
    let p = fs::canonicalize(p).ok()?;
    let bytes = fs::read(&p).ok()?;
    // A 64-bit ELF file with no PT_INTERP program header.
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    let dynamic = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        bytes.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    });
    (!dynamic).then_some(p)
}

/// The Guile pipeline on a real closure: the references graph of a Nix
/// derivation (exportReferencesGraph writes the format #:references-graphs
/// writes), then the image loaded into docker (or podman) and run.
#[test]
fn nix_references_graph_image_runs() {
    let test = "nix_references_graph_image_runs";
    let Some(guile) = guile(test) else { return };
    if which("nix-build").is_none() {
        unavailable::<()>(test, "no nix-build on PATH (Debian: nix-bin)");
        return;
    }
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        unavailable::<()>(test, "nix-build runs as root here (single-user store)");
        return;
    }
    let Some(busybox) = static_busybox() else {
        unavailable::<()>(test, "no static busybox (Debian: busybox-static)");
        return;
    };
    let engine = if Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "docker"
    } else if which("podman").is_some() {
        "podman"
    } else {
        unavailable::<()>(test, "neither a docker engine nor podman");
        return;
    };

    let nix_build = |attr: &str| -> PathBuf {
        let out = run(Command::new("nix-build")
            .arg(repo().join("tests/nix/images.nix"))
            .args(["--option", "sandbox", "false"])
            .args(["--option", "substituters", ""])
            .args(["--option", "build-users-group", ""])
            .arg("--argstr")
            .arg("sli")
            .arg(BIN)
            .arg("--argstr")
            .arg("busybox")
            .arg(&busybox)
            .args(["-A", attr, "--no-out-link"]));
        PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap(),
        )
    };
    let graph = nix_build("appGraph");
    let app = nix_build("app");

    let tmp = TempDir::new(test);
    let output = tmp.0.join("image.tar");
    let tag = format!("sli-guix-test-{}:latest", std::process::id());
    let settings = format!(
        "(output . {out}) (tool . {tool}) (graph . {graph}) (store-dir . \"/nix/store\")
         (max-layers . 4) (profile . {app}) (symlinks . ((\"/bin\" -> \"bin\")))
         (repo-tag . {tag}) (config . ((\"Cmd\" . #(\"/bin/hello\"))))",
        out = scheme_string(output.to_str().unwrap()),
        tool = scheme_string(BIN),
        graph = scheme_string(graph.to_str().unwrap()),
        app = scheme_string(app.to_str().unwrap()),
        tag = scheme_string(&tag),
    );
    build_image(&guile, &tmp.0, &settings);
    let (_, image) = layers(&fs::read(&output).unwrap());
    assert!(image.len() <= 4);

    struct Remove(&'static str, String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
        }
    }
    let _remove = Remove(engine, tag.clone());
    run(Command::new(engine).args(["load", "-i"]).arg(&output));
    let out = run(Command::new(engine).args(["run", "--rm", "--network", "none", &tag]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from variant 1\n200\n"
    );
    // The customisation layer's /tmp (1777), seen by busybox in the image
    // (the interpreter of app's script).
    let script = fs::read_to_string(app.join("bin/hello")).unwrap();
    let shebang = script.lines().next().unwrap().trim_start_matches("#!");
    let busybox_in_image = shebang.split_whitespace().next().unwrap();
    let out = run(Command::new(engine)
        .args(["run", "--rm", "--network", "none", &tag])
        .args([busybox_in_image, "stat", "-c", "%a %u", "/tmp"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1777 0\n");
}

/// A version such as "1.88" or "1.85.0", for comparing.
/// Trailing zeros dropped: "1.82.0" and "1.82" are one version.
fn version_numbers(v: &str) -> Vec<u64> {
    let mut n: Vec<u64> = v.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    while n.len() > 1 && n.last() == Some(&0) {
        n.pop();
    }
    n
}

/// The Guix package records the rustc that Cargo.lock's crates need (their
/// newest `rust-version`; Cargo.lock itself does not say it), so that its
/// build can say so instead of failing inside a crate. It must be what the
/// locked crates say, read from cargo's registry sources.
#[test]
fn guix_package_knows_the_rust_cargo_lock_needs() {
    let test = "guix_package_knows_the_rust_cargo_lock_needs";
    // A build downloads only the crates of this target; every locked crate
    // (those of other targets too) must be read.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let fetched = std::process::Command::new(cargo)
        .args(["fetch", "--locked"])
        .current_dir(repo())
        .status();
    if !fetched.is_ok_and(|s| s.success()) {
        unavailable::<()>(test, "cargo fetch --locked failed");
        return;
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let registries: Vec<PathBuf> = home
        .map(|h| h.join("registry/src"))
        .and_then(|src| fs::read_dir(src).ok())
        .map(|dirs| dirs.map(|d| d.unwrap().path()).collect())
        .unwrap_or_default();
    let text = fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let mut newest: Option<(Vec<u64>, String)> = None;
    for block in text.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{key} = \""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            })
        };
        if !field("source").is_some_and(|s| s.starts_with("registry+")) {
            continue;
        }
        let crate_dir = format!("{}-{}", field("name").unwrap(), field("version").unwrap());
        let Some(manifest) = registries
            .iter()
            .map(|r| r.join(&crate_dir).join("Cargo.toml"))
            .find(|m| m.is_file())
        else {
            unavailable::<()>(
                test,
                &format!(
                    "{crate_dir} is not in cargo's registry sources (run a cargo build first)"
                ),
            );
            return;
        };
        let toml = fs::read_to_string(&manifest).unwrap();
        let Some(rv) = toml.lines().find_map(|l| {
            l.trim()
                .strip_prefix("rust-version = \"")
                .map(|v| v.trim_end_matches('"').to_owned())
        }) else {
            continue;
        };
        let n = version_numbers(&rv);
        if newest.as_ref().is_none_or(|(m, _)| n > *m) {
            newest = Some((n, format!("{rv} ({crate_dir})")));
        }
    }
    let (needed, which) = newest.expect("some locked crate has a rust-version");
    let package = fs::read_to_string(repo().join("guix/stream-layered-image/package.scm")).unwrap();
    let recorded = package
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("(define %locked-crates-rust-version \"")
                .map(|v| v.trim_end_matches("\")").to_owned())
        })
        .expect("package.scm defines %locked-crates-rust-version");
    assert_eq!(
        version_numbers(&recorded),
        needed,
        "package.scm records rustc {recorded}; the newest rust-version of Cargo.lock's crates is {which}"
    );
}
