//! Byte-identity with the reference: runs the tool on every fixture case of
//! `scripts/make-fixtures.py` and compares the size and sha256 of the archive
//! it writes to stdout with `tests/golden/digests.txt`.
//!
//! Needs root (the fixture store is bind-mounted on /nix and /gnu in a
//! private mount namespace); elsewhere it prints why and passes.
//!
//! Environment:
//! - `GOLDEN_CASES=a,b`: run only these cases.
//! - `GOLDEN_TOOL=PATH`: run this executable instead of the crate's binary.
//! - `REFERENCE=PATH` to nixpkgs' `stream_layered_image.py` (with
//!   `REFERENCE_PYTHON`, default `python3`; the digests come from CPython
//!   3.11): on a mismatch, also write the reference's archive for the case
//!   and say where the two first differ.
//!
//! Failing cases keep their output in `$CARGO_TARGET_TMPDIR/golden-failures/CASE/`.

#[path = "common/fixtures.rs"]
mod fixtures;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use fixtures::Fixtures;
use sha2::{Digest, Sha256};

const DIGESTS: &str = include_str!("golden/digests.txt");

/// Cases the generator makes that have no golden digest.
const NOT_GOLDEN: &[&str] = &["runnable"];

struct Golden {
    case: String,
    sha256: String,
    size: u64,
    args: Vec<String>,
}

fn parse_digests() -> (String, Vec<Golden>) {
    let mut tree = String::new();
    let mut goldens = Vec::new();
    for line in DIGESTS.lines() {
        if let Some(rest) = line.strip_prefix("# fixture-tree:") {
            tree = rest.trim().to_string();
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace().map(str::to_string);
        let (Some(case), Some(sha256), Some(size)) = (words.next(), words.next(), words.next())
        else {
            panic!("malformed line in digests.txt: {line:?}");
        };
        let size = size
            .parse()
            .unwrap_or_else(|_| panic!("bad size in digests.txt: {line:?}"));
        goldens.push(Golden {
            case,
            sha256,
            size,
            args: words.collect(),
        });
    }
    assert!(
        !tree.is_empty(),
        "digests.txt has no '# fixture-tree:' line"
    );
    (tree, goldens)
}

#[test]
fn golden_digests() {
    let fx = match fixtures::fixtures() {
        Ok(fx) => fx,
        Err(why) => {
            eprintln!("SKIPPING golden test: {why}");
            return;
        }
    };
    let (tree, goldens) = parse_digests();
    assert_eq!(
        fx.tree_digest,
        tree,
        "the fixture tree in {} is not the one the golden digests were made from \
         ({} changed without regenerating digests.txt, or its output depends on the \
         Python version)",
        fx.root.display(),
        fixtures::GENERATOR
    );

    let mut failures = Vec::new();
    for case in fx.cases() {
        if !NOT_GOLDEN.contains(&case.as_str()) && !goldens.iter().any(|g| g.case == case) {
            failures.push(format!("{case}: has a spec but no line in digests.txt"));
        }
    }

    let only: Option<Vec<String>> = std::env::var("GOLDEN_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let tool = std::env::var_os("GOLDEN_TOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image")));
    let mut ran = 0;
    for g in &goldens {
        if only.as_ref().is_some_and(|o| !o.contains(&g.case)) {
            continue;
        }
        ran += 1;
        match check_case(fx, &tool, g) {
            Ok(()) => eprintln!("ok   {}", g.case),
            Err(msg) => {
                eprintln!("FAIL {}", g.case);
                failures.push(msg);
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} problem(s) in {ran} golden case(s):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// The stream takes two paths: into a pipe, large files are spliced from
/// the page cache (what `golden_digests` sees, through `Command::output`);
/// into a regular file they are copied. Both must give the golden bytes.
#[test]
fn golden_digests_when_stdout_is_a_file_or_dash_o() {
    let fx = match fixtures::fixtures() {
        Ok(fx) => fx,
        Err(why) => {
            eprintln!("SKIPPING golden test: {why}");
            return;
        }
    };
    let (_, goldens) = parse_digests();
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image"));
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // Cases with files large enough to be mapped (and so spliced).
    for case in ["basic", "nonroot-pax", "gnu-store", "grouped"] {
        let g = goldens
            .iter()
            .find(|g| g.case == case)
            .unwrap_or_else(|| panic!("no golden digest for {case}"));
        for how in ["stdout-file", "dash-o"] {
            let target = dir.path().join(format!("{case}-{how}.tar"));
            let mut cmd = fixtures::store_namespace_command(&fx.root, &tool);
            cmd.arg(fx.spec(case))
                .args(&g.args)
                .env_clear()
                .envs(fx.case_env(case))
                .stderr(std::process::Stdio::null());
            if how == "dash-o" {
                cmd.arg("-o").arg(&target);
            } else {
                cmd.stdout(fs::File::create(&target).unwrap());
            }
            let status = cmd.status().unwrap();
            let bytes = fs::read(&target).unwrap_or_default();
            let sha256 = format!("{:x}", Sha256::digest(&bytes));
            if !status.success() || sha256 != g.sha256 || bytes.len() as u64 != g.size {
                failures.push(format!(
                    "{case} ({how}): {status}, {} bytes sha256 {sha256}",
                    bytes.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_case(fx: &Fixtures, tool: &Path, g: &Golden) -> Result<(), String> {
    let out = fixtures::store_namespace_command(&fx.root, tool)
        .arg(fx.spec(&g.case))
        .args(&g.args)
        .env_clear()
        .envs(fx.case_env(&g.case))
        .output()
        .map_err(|e| format!("{}: cannot run {}: {e}", g.case, tool.display()))?;
    let sha256 = format!("{:x}", Sha256::digest(&out.stdout));
    let size = out.stdout.len() as u64;
    if out.status.success() && sha256 == g.sha256 && size == g.size {
        return Ok(());
    }

    let mut msg = format!("{}: ", g.case);
    if !out.status.success() {
        let _ = write!(msg, "exited with {}; ", out.status);
    }
    let _ = write!(
        msg,
        "got {size} bytes sha256 {sha256}, want {} bytes sha256 {}",
        g.size, g.sha256
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    if !tail.is_empty() {
        let _ = write!(msg, "\n  stderr (last lines):");
        for l in tail.iter().rev() {
            let _ = write!(msg, "\n    {l}");
        }
    }

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("golden-failures")
        .join(&g.case);
    let _ = fs::remove_dir_all(&dir);
    if fs::create_dir_all(&dir).is_ok() {
        let actual = dir.join("actual.tar");
        let _ = fs::write(&actual, &out.stdout);
        let _ = fs::write(dir.join("actual.stderr"), &out.stderr);
        let _ = write!(msg, "\n  ours: {}", actual.display());
        if std::env::var_os("REFERENCE").is_some() {
            match run_reference(fx, g, &dir) {
                Ok(expected) => {
                    let ref_sha = format!("{:x}", Sha256::digest(&expected));
                    let _ = write!(msg, "\n  reference: {}", dir.join("expected.tar").display());
                    if ref_sha != g.sha256 || expected.len() as u64 != g.size {
                        let _ = write!(
                            msg,
                            "\n  NOTE: the reference itself now gives {} bytes sha256 {ref_sha}: \
                             digests.txt or the reference/python in use differ",
                            expected.len()
                        );
                    }
                    let _ = write!(msg, "\n  {}", first_difference(&out.stdout, &expected));
                }
                Err(e) => {
                    let _ = write!(msg, "\n  reference run failed: {e}");
                }
            }
        } else {
            let _ = write!(msg, "\n  (set REFERENCE=path/to/stream_layered_image.py to get the expected archive too)");
        }
    }
    Err(msg)
}

/// Runs the reference on the case; writes and returns its archive.
fn run_reference(fx: &Fixtures, g: &Golden, dir: &Path) -> Result<Vec<u8>, String> {
    let reference = PathBuf::from(std::env::var_os("REFERENCE").unwrap());
    let spec = fx.reference_spec(&g.case);
    let spec_text = fs::read_to_string(&spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    // The Guix flavour of the script differs only in its top directory entries.
    let script = if spec_text.contains(r#""store_dir": "/gnu/store""#) {
        let text =
            fs::read_to_string(&reference).map_err(|e| format!("{}: {e}", reference.display()))?;
        let gnu = dir.join("reference-gnu.py");
        fs::write(&gnu, text.replace("\"/nix", "\"/gnu")).map_err(|e| e.to_string())?;
        gnu
    } else {
        fs::canonicalize(&reference).map_err(|e| format!("{}: {e}", reference.display()))?
    };
    let python = std::env::var("REFERENCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let python = if python.contains('/') {
        PathBuf::from(python)
    } else {
        fixtures::find_tool(&python).ok_or(format!("{python} not found"))?
    };
    let out = fixtures::store_namespace_command(&fx.root, python)
        .arg(script)
        .arg(spec)
        .args(&g.args)
        .env_clear()
        .envs(fx.case_env(&g.case))
        .output()
        .map_err(|e| e.to_string())?;
    fs::write(dir.join("expected.stderr"), &out.stderr).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "exited with {}; see {}",
            out.status,
            dir.join("expected.stderr").display()
        ));
    }
    fs::write(dir.join("expected.tar"), &out.stdout).map_err(|e| e.to_string())?;
    Ok(out.stdout)
}

/// Where two archives first differ, located in the expected one's members
/// (descending into `layer.tar` members).
fn first_difference(actual: &[u8], expected: &[u8]) -> String {
    let Some(off) =
        (0..actual.len().max(expected.len())).find(|&i| actual.get(i) != expected.get(i))
    else {
        return "the archives are identical".into();
    };
    format!("first difference at byte {off}: {}", locate(expected, off))
}

fn locate(tar: &[u8], off: usize) -> String {
    let mut h = 0;
    while h + 512 <= tar.len() {
        let header = &tar[h..h + 512];
        if header.iter().all(|&b| b == 0) {
            return format!("in the end-of-archive padding (from {h})");
        }
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = std::str::from_utf8(&header[124..136])
            .ok()
            .and_then(|s| {
                u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()
            })
            .unwrap_or(0) as usize;
        let end = h + 512 + size.div_ceil(512) * 512;
        let kind = header[156] as char;
        if off < h + 512 {
            let field = match off - h {
                0..=99 => "name",
                100..=107 => "mode",
                108..=123 => "uid/gid",
                124..=135 => "size",
                136..=147 => "mtime",
                148..=155 => "checksum",
                156 => "type",
                157..=256 => "linkname",
                257..=264 => "magic/version",
                265..=328 => "uname/gname",
                _ => "device/prefix",
            };
            return format!("header ({field}) of {kind:?} member {name:?} at {h}");
        }
        if off < end {
            let inner = off - h - 512;
            if name.ends_with("layer.tar") && kind == '0' && inner < size {
                return format!(
                    "in member {name:?} at byte {inner}, {}",
                    locate(&tar[h + 512..h + 512 + size], inner)
                );
            }
            return format!("data of {kind:?} member {name:?} (header at {h}), byte {inner}");
        }
        h = end;
    }
    "past the end of the expected archive".into()
}
