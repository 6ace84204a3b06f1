//! The fixture store of `scripts/make-fixtures.py`, and a way to run commands
//! that see it at its absolute paths.
//!
//! Use it from an integration test with
//! `#[path = "common/fixtures.rs"] mod fixtures;`, then:
//!
//! ```ignore
//! let fx = match fixtures::fixtures() {
//!     Ok(fx) => fx,
//!     Err(why) => return eprintln!("skipping: {why}"),
//! };
//! let out = fixtures::store_namespace_command(&fx.root, env!("CARGO_BIN_EXE_stream-layered-image"))
//!     .arg(fx.spec("basic"))
//!     .output()
//!     .unwrap();
//! ```
//!
//! Specs name `/nix/store/...` and `/gnu/store/...` paths, so whatever reads
//! them has to run through [`store_namespace_command`]: a private mount
//! namespace (`unshare -m`) with `ROOT/nix` bind-mounted on `/nix` and
//! `ROOT/gnu` on `/gnu`. The host's own `/nix` is never written to. This needs
//! root; where it is unavailable [`fixtures`] returns the reason, and tests
//! should print it and return.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The generator, relative to the crate root.
pub const GENERATOR: &str = "scripts/make-fixtures.py";

/// A built fixture tree.
pub struct Fixtures {
    /// Holds `nix/store/`, `gnu/store/`, `specs/`, `reference-specs/`, `env/`.
    pub root: PathBuf,
    /// The generator's digest of the tree (`ROOT/fixture-tree.sha256`).
    pub tree_digest: String,
}

impl Fixtures {
    /// The spec the tool is run on for `case`.
    pub fn spec(&self, case: &str) -> PathBuf {
        self.root.join("specs").join(format!("{case}.json"))
    }

    /// The spec the reference script needs for `case`: the same as [`Self::spec`]
    /// except where the tool accepts an older form (keys left to defaults).
    pub fn reference_spec(&self, case: &str) -> PathBuf {
        let p = self
            .root
            .join("reference-specs")
            .join(format!("{case}.json"));
        if p.exists() {
            p
        } else {
            self.spec(case)
        }
    }

    /// Environment a case runs with: `TZ=UTC0` and `PATH`, then the case's own
    /// `ROOT/env/CASE` lines (`NAME=VALUE`). Use with `env_clear()`.
    pub fn case_env(&self, case: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("TZ".to_string(), "UTC0".to_string()),
        ];
        if let Ok(text) = fs::read_to_string(self.root.join("env").join(case)) {
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once('=').expect("env line without '='");
                env.retain(|(name, _)| name != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        env
    }

    /// Names of all cases that have a spec, sorted.
    pub fn cases(&self) -> Vec<String> {
        let mut cases: Vec<String> = fs::read_dir(self.root.join("specs"))
            .expect("specs dir")
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                Some(name.strip_suffix(".json")?.to_string())
            })
            .collect();
        cases.sort();
        cases
    }
}

/// The fixture tree (without the busybox extras), built once per test binary
/// and cached under `$CARGO_TARGET_TMPDIR/fixtures/` keyed by the generator's
/// content. `Err` says why store-namespace tests cannot run here.
pub fn fixtures() -> Result<&'static Fixtures, String> {
    static FIXTURES: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    FIXTURES
        .get_or_init(build_cached)
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs the generator into `root` (replacing what is there), optionally with
/// `--with-busybox busybox`. No caching; for tests that need their own tree.
pub fn build_fixtures(root: &Path, busybox: Option<&Path>) -> Result<Fixtures, String> {
    namespace_available()?;
    let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join(GENERATOR);
    let python =
        find_tool("python3").ok_or("python3 not found (needed by the fixture generator)")?;
    let mut cmd = Command::new(python);
    cmd.arg(&generator).arg(root);
    if let Some(bb) = busybox {
        cmd.arg("--with-busybox").arg(bb);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {GENERATOR}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{GENERATOR} failed: {}", out.status));
    }
    let tree_digest = fs::read_to_string(root.join("fixture-tree.sha256"))
        .map_err(|e| format!("{GENERATOR} wrote no fixture-tree.sha256: {e}"))?
        .trim()
        .to_string();
    Ok(Fixtures {
        root: root.to_path_buf(),
        tree_digest,
    })
}

fn build_cached() -> Result<Fixtures, String> {
    namespace_available()?;
    let generator = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(GENERATOR))
        .map_err(|e| format!("reading {GENERATOR}: {e}"))?;
    let key = format!("{:x}", Sha256::digest(&generator))[..16].to_string();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    let done = base.join(&key);
    if !done.join("fixture-tree.sha256").exists() {
        fs::create_dir_all(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
        // Build beside the final place and rename, so concurrent test
        // processes never see a half-built tree; the first rename wins.
        let tmp = base.join(format!(".tmp-{}-{key}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        build_fixtures(&tmp, None)?;
        if fs::rename(&tmp, &done).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        // Trees of older generator versions.
        for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != key && !name.starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let tree_digest = fs::read_to_string(done.join("fixture-tree.sha256"))
        .map_err(|e| format!("fixture tree {} incomplete: {e}", done.display()))?
        .trim()
        .to_string();
    Ok(Fixtures {
        root: done,
        tree_digest,
    })
}

/// `Ok` when commands can run in a store namespace here; else why not.
/// Creates the empty mount points `/nix` and `/gnu` on the host if missing.
pub fn namespace_available() -> Result<(), String> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or("no Uid in /proc/self/status")?;
    if euid != "0" {
        return Err(format!(
            "not root (euid {euid}); bind-mounting the fixture store on /nix needs root"
        ));
    }
    let unshare = find_tool("unshare").ok_or("unshare (util-linux) not found")?;
    find_tool("mount").ok_or("mount not found")?;
    for dir in ["/nix", "/gnu"] {
        fs::create_dir_all(dir).map_err(|e| format!("creating mount point {dir}: {e}"))?;
    }
    let out = Command::new(unshare)
        .args(["-m", "--propagation", "private", "/bin/sh", "-c", "true"])
        .output()
        .map_err(|e| format!("running unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "unshare -m failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A command running `program` (give an absolute path) with `root/nix`
/// mounted on `/nix` and `root/gnu` on `/gnu`, in a private mount namespace.
/// Add arguments, environment (`env_clear` is fine) and stdio as usual.
pub fn store_namespace_command(root: &Path, program: impl AsRef<OsStr>) -> Command {
    let unshare = find_tool("unshare").unwrap_or_else(|| "unshare".into());
    let mount = find_tool("mount").unwrap_or_else(|| "mount".into());
    let mut cmd = Command::new(unshare);
    cmd.args(["-m", "--propagation", "private", "/bin/sh", "-c"])
        .arg(r#"set -e; m=$1; r=$2; shift 2; "$m" --bind "$r/nix" /nix; "$m" --bind "$r/gnu" /gnu; exec "$@""#)
        .arg("sh")
        .arg(mount)
        .arg(root)
        .arg(program);
    cmd
}

/// Absolute path of `name` from `PATH` or the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
