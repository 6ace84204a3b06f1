//! Progress as a person sees it.
//!
//! * Plain mode (stderr not a terminal): for a fixed spec, the lines are
//!   byte-for-byte the ones the tool printed before live bars existed,
//!   timings aside. The expected lines below were taken from that tool.
//! * Bars (stderr a terminal): the tool runs in a `tmux` pane while it
//!   pushes to a loopback registry; the pane is read during the push (bars
//!   with their phases) and after it (the summary, and nothing left of a
//!   bar).
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clients::{require, Registry};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A directory of a fixed path, empty: the store paths are in the layers'
/// bytes, so the digests the lines show are the same only for the same
/// path.
fn fixed_dir(case: &str) -> PathBuf {
    let dir = Path::new("/tmp/sli-progress-plain").join(case);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fixed store of three layers (the last of two paths) and its spec;
/// modes are set, whatever the umask.
fn store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let lib = store.join("bbbb-lib");
    let data = store.join("cccc-data");
    let app = store.join("aaaa-app");
    let etc = store.join("dddd-etc");
    for p in [&lib, &data, &app, &etc] {
        fs::create_dir_all(p).unwrap();
    }
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(lib.join("lib.so"), &bytes).unwrap();
    let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
    fs::write(data.join("data.txt"), text).unwrap();
    fs::write(app.join("app"), "app\n").unwrap();
    fs::create_dir_all(etc.join("conf.d")).unwrap();
    fs::write(etc.join("conf.d/a"), "a\n").unwrap();
    std::os::unix::fs::symlink("conf.d/a", etc.join("a")).unwrap();
    for p in [&store, &lib, &data, &app, &etc, &etc.join("conf.d")] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in [
        lib.join("lib.so"),
        data.join("data.txt"),
        app.join("app"),
        etc.join("conf.d/a"),
    ] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        serde_json::json!({
            "architecture": "amd64",
            "config": {},
            "created": "1970-01-01T00:00:01Z",
            "store_dir": store,
            "store_layers": [[lib], [data], [app, etc]],
            "repo_tag": "progress:1",
        })
        .to_string(),
    )
    .unwrap();
    spec
}

/// Runs the tool with stderr a pipe (so not a terminal).
fn tool(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(TOOL);
    cmd.args(args)
        .stdin(Stdio::null())
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    clients::output_within(&mut cmd, Duration::from_secs(300))
}

/// `text` with its timings masked: the `[  1.23s]` prefix becomes `[T]`, a
/// duration `0.12s` becomes `Ts`, a rate `(123 MiB/s)` becomes `(R MiB/s)`;
/// `dir` becomes `DIR` and `host` becomes `HOST`.
fn mask(text: &str, dir: &Path, host: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut line = line.replace(&dir.display().to_string(), "DIR");
        if let Some(host) = host {
            line = line.replace(host, "HOST");
        }
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((stamp, rest)) = rest.split_once("s] ") {
                if stamp.trim().parse::<f64>().is_ok() {
                    line = format!("[T] {rest}");
                }
            }
        }
        out.push(mask_numbers(&line));
    }
    out
}

/// Masks `N.NNs` (a duration) and the number in `(N MiB/s)`.
fn mask_numbers(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if starts {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                j += 1;
            }
            let number = &line[i..j];
            let after = &line[j..];
            let ends_word = |k: usize| k >= b.len() || !b[k].is_ascii_alphanumeric();
            if number.contains('.') && after.starts_with('s') && ends_word(j + 1) {
                out.push('T');
                i = j;
                continue;
            }
            if after.starts_with(" MiB/s)") && i > 0 && b[i - 1] == b'(' {
                out.push('R');
                i = j;
                continue;
            }
            out.push_str(number);
            i = j;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Compares lines whose order may vary between runs (layers are hashed in
/// parallel): as sorted lists, and the last line where it is fixed.
fn assert_lines(what: &str, actual: &[String], expected: &[&str]) {
    let mut a: Vec<&str> = actual.iter().map(String::as_str).collect();
    let mut e: Vec<&str> = expected.to_vec();
    assert_eq!(
        a.last(),
        e.last(),
        "{what}: the last line differs; all lines:\n{}",
        actual.join("\n")
    );
    a.sort_unstable();
    e.sort_unstable();
    assert_eq!(
        a,
        e,
        "{what}: the lines differ; all lines:\n{}",
        actual.join("\n")
    );
}

/// Prints the masked lines of a run, so that a new expected list can be
/// taken from a tool whose output is known good.
fn show(what: &str, lines: &[String]) {
    eprintln!("--- {what}");
    for l in lines {
        eprintln!("    {l:?},");
    }
}

#[test]
fn plain_lines_of_a_docker_archive_are_today_s() {
    let dir = fixed_dir("docker-archive");
    let spec = store(&dir);
    let out_file = dir.join("img.tar");
    let out = tool(
        &[spec.to_str().unwrap(), "-o", out_file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success());
    let lines = mask(&String::from_utf8_lossy(&out.stderr), &dir, None);
    show("docker-archive", &lines);
    assert_lines("docker-archive", &lines, PLAIN_ARCHIVE);
    // Asked for by name, the same.
    let out = tool(
        &[
            spec.to_str().unwrap(),
            "--progress=plain",
            "-o",
            out_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success());
    let lines = mask(&String::from_utf8_lossy(&out.stderr), &dir, None);
    assert_lines("--progress=plain", &lines, PLAIN_ARCHIVE);
}

#[test]
fn plain_lines_of_an_oci_archive_are_today_s() {
    let dir = fixed_dir("oci-archive");
    let spec = store(&dir);
    let out_file = dir.join("img.tar");
    let out = tool(
        &[
            spec.to_str().unwrap(),
            "--format",
            "oci-archive",
            "--compress",
            "zstd",
            "-o",
            out_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success());
    let lines = mask(&String::from_utf8_lossy(&out.stderr), &dir, None);
    show("oci-archive", &lines);
    assert_lines("oci-archive", &lines, PLAIN_OCI);
}

#[test]
fn plain_lines_of_two_pushes_are_today_s() {
    if !require("plain_lines_of_two_pushes", &["docker-registry"]) {
        return;
    }
    let registry = Registry::start();
    let dir = fixed_dir("push");
    let spec = store(&dir);
    let target = format!("{}/progress:1", registry.host());
    let args = [
        spec.to_str().unwrap(),
        "--push",
        &target,
        "--insecure",
        "--compress",
        "gzip",
    ];
    let first = tool(&args, &[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let host = registry.host();
    let lines = mask(&String::from_utf8_lossy(&first.stderr), &dir, Some(&host));
    show("first push", &lines);
    assert_lines("first push", &lines, PLAIN_PUSH);
    // The second finds every blob there.
    let again = tool(&args, &[]);
    assert!(again.status.success());
    let lines = mask(&String::from_utf8_lossy(&again.stderr), &dir, Some(&host));
    show("second push", &lines);
    assert_lines("second push", &lines, PLAIN_PUSH_AGAIN);
}

// Taken from the tool as it was before `--progress` (stderr a pipe), with
// the timings masked.
const PLAIN_ARCHIVE: &[&str] = &[
    "[T] walked DIR/store/bbbb-lib: 2 entries",
    "[T] hashing layer 1/3: DIR/store/bbbb-lib, about 2.9 MiB",
    "[T] walked DIR/store/cccc-data: 2 entries",
    "[T] walked DIR/store/aaaa-app and 1 more store paths: 6 entries",
    "[T] hashing layer 2/3: DIR/store/cccc-data, about 527.3 KiB",
    "[T] hashed layer 2/3: sha256:17180cb72240 540.0 KiB in Ts",
    "[T] hashing layer 3/3: DIR/store/aaaa-app and 1 more store paths, about 3.0 KiB",
    "[T] hashed layer 3/3: sha256:af9a6ff4d519 10.0 KiB in Ts",
    "[T] hashed layer 1/3: sha256:e2e08bf22582 2.9 MiB in Ts",
    "[T] streaming layer 1/3: 2.9 MiB",
    "[T] streaming layer 2/3: 540.0 KiB",
    "[T] streaming layer 3/3: 10.0 KiB",
    "[T] done: 3 layers, 3.4 MiB in Ts (R MiB/s)",
];
const PLAIN_OCI: &[&str] = &[
    "[T] walked DIR/store/bbbb-lib: 2 entries",
    "[T] hashing layer 1/3: DIR/store/bbbb-lib, about 2.9 MiB",
    "[T] walked DIR/store/cccc-data: 2 entries",
    "[T] walked DIR/store/aaaa-app and 1 more store paths: 6 entries",
    "[T] hashing layer 2/3: DIR/store/cccc-data, about 527.3 KiB",
    "[T] hashed layer 2/3: sha256:a39c3b857ca7 540.0 KiB in Ts",
    "[T] hashing layer 3/3: DIR/store/aaaa-app and 1 more store paths, about 3.0 KiB",
    "[T] hashed layer 3/3: sha256:01c43b8c3f22 10.0 KiB in Ts",
    "[T] hashed layer 1/3: sha256:c3db57e0c05b 2.9 MiB in Ts",
    "[T] streaming layer 1/3: 2.9 MiB",
    "[T] streaming layer 2/3: 540.0 KiB",
    "[T] streaming layer 3/3: 10.0 KiB",
    "[T] done: 3 layers, 50.0 KiB in Ts (R MiB/s)",
];
const PLAIN_PUSH: &[&str] = &[
    "[T] walked DIR/store/bbbb-lib: 2 entries",
    "[T] hashing layer 1/3: DIR/store/bbbb-lib, about 2.9 MiB",
    "[T] walked DIR/store/cccc-data: 2 entries",
    "[T] walked DIR/store/aaaa-app and 1 more store paths: 6 entries",
    "[T] hashing layer 2/3: DIR/store/cccc-data, about 527.3 KiB",
    "[T] hashed layer 1/3: sha256:5c11dc95b2c2 2.9 MiB in Ts",
    "[T] hashed layer 2/3: sha256:08c793e2d441 540.0 KiB in Ts",
    "[T] layer 2/3: uploaded sha256:80cb78a6260a 112.5 KiB in Ts",
    "[T] hashing layer 3/3: DIR/store/aaaa-app and 1 more store paths, about 3.0 KiB",
    "[T] hashed layer 3/3: sha256:547dcf1b7972 10.0 KiB in Ts",
    "[T] layer 1/3: uploaded sha256:42f088e3a2b0 22.6 KiB in Ts",
    "[T] streaming layer 1/3: 2.9 MiB",
    "[T] layer 1: the registry has sha256:42f088e3a2b0",
    "[T] streaming layer 2/3: 540.0 KiB",
    "[T] layer 2: the registry has sha256:80cb78a6260a",
    "[T] layer 3/3: uploaded sha256:4ae4306930c3 282 B in Ts",
    "[T] streaming layer 3/3: 10.0 KiB",
    "[T] layer 3: the registry has sha256:4ae4306930c3",
    "[T] pushed sha256:7dd5f5ae3a0384f3bdf1b55dbb26c447506628f869371a5259bed73a2a5efc97 to HOST/progress (4 blob uploads, 0 mounts) in Ts",
];
const PLAIN_PUSH_AGAIN: &[&str] = &[
    "[T] walked DIR/store/bbbb-lib: 2 entries",
    "[T] hashing layer 1/3: DIR/store/bbbb-lib, about 2.9 MiB",
    "[T] walked DIR/store/cccc-data: 2 entries",
    "[T] walked DIR/store/aaaa-app and 1 more store paths: 6 entries",
    "[T] hashing layer 2/3: DIR/store/cccc-data, about 527.3 KiB",
    "[T] hashed layer 2/3: sha256:08c793e2d441 540.0 KiB in Ts",
    "[T] layer 2/3: the registry has sha256:80cb78a6260a 112.5 KiB in Ts",
    "[T] hashing layer 3/3: DIR/store/aaaa-app and 1 more store paths, about 3.0 KiB",
    "[T] hashed layer 1/3: sha256:5c11dc95b2c2 2.9 MiB in Ts",
    "[T] layer 1/3: the registry has sha256:42f088e3a2b0 22.6 KiB in Ts",
    "[T] streaming layer 1/3: 2.9 MiB",
    "[T] layer 1: the registry has sha256:42f088e3a2b0",
    "[T] streaming layer 2/3: 540.0 KiB",
    "[T] layer 2: the registry has sha256:80cb78a6260a",
    "[T] hashed layer 3/3: sha256:547dcf1b7972 10.0 KiB in Ts",
    "[T] layer 3/3: the registry has sha256:4ae4306930c3 282 B in Ts",
    "[T] streaming layer 3/3: 10.0 KiB",
    "[T] layer 3: the registry has sha256:4ae4306930c3",
    "[T] pushed sha256:7dd5f5ae3a0384f3bdf1b55dbb26c447506628f869371a5259bed73a2a5efc97 to HOST/progress (0 blob uploads, 0 mounts) in Ts",
];

/// A store of two large layers (deterministic pseudo-random text, which
/// compresses slowly) and a small one, so that a push lasts a few seconds.
fn large_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let mut layers = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for (name, mib) in [("aaaa-big", 96usize), ("bbbb-mid", 48), ("cccc-small", 1)] {
        let path = store.join(name);
        fs::create_dir_all(path.join("lib")).unwrap();
        let mut bytes = vec![0u8; mib << 20];
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Four bits of entropy a byte: the compressor has work to do
            // (random bytes it would store as they are, at once).
            let word = state.to_le_bytes().map(|b| b'a' + (b & 0x0f));
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        fs::write(path.join("lib/blob"), &bytes).unwrap();
        layers.push(vec![path]);
    }
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        serde_json::json!({
            "architecture": "amd64",
            "config": {},
            "created": "1970-01-01T00:00:01Z",
            "store_dir": store,
            "store_layers": layers,
            "repo_tag": "progress:large",
        })
        .to_string(),
    )
    .unwrap();
    spec
}

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        // A socket per server: one being killed may still hold its socket
        // while the next starts.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("sli-progress-{name}-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            // A test run inside tmux must not talk to that session.
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// What the pane shows, one string per row, trailing blanks removed;
    /// with `escapes`, the colours as escape sequences too.
    fn screen(&self, escapes: bool) -> Vec<String> {
        let mut args = vec!["capture-pane", "-p", "-t", "progress"];
        if escapes {
            args.push("-e");
        }
        let out = self.run(&args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut rows: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A row that belongs to a bar: a layer's line or the total.
fn is_bar_row(row: &str) -> bool {
    row.starts_with("layer ") || row.starts_with("total: ")
}

/// What a person saw of one run in a tmux pane.
struct Watched {
    /// The screens read while the tool ran, every 100 ms.
    during: Vec<Vec<String>>,
    /// The same with colours, as escape sequences.
    during_colours: Vec<Vec<String>>,
    /// The screen after it.
    after: Vec<String>,
    /// Index in `during` of the first screen after the pane was cleared,
    /// a while after the resize, if one was asked for and bars were seen.
    resized_at: Option<usize>,
}

impl Watched {
    fn all(screens: &[Vec<String>]) -> String {
        screens
            .iter()
            .map(|s| s.join("\n"))
            .collect::<Vec<_>>()
            .join("\n-----\n")
    }

    fn bar_rows(&self) -> Vec<&String> {
        self.during
            .iter()
            .flatten()
            .filter(|r| is_bar_row(r))
            .collect()
    }
}

/// How long after a resize the pane is cleared and its frames judged:
/// many ticks of the tool, on a loaded machine.
const RESIZE_SEEN: Duration = Duration::from_millis(1000);

/// Runs the tool with `args` in a 100-column tmux pane, with `env` set
/// (and `unset` unset) in the pane, and reads the screen while it runs and
/// after; with `resize_to`, narrows the pane once bars show.
fn watch(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
    resize_to: Option<u16>,
) -> Watched {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    // The pane runs a script, not a shell: no prompt, no echo of what is
    // typed, only what the tool draws and the status line after it.
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut script = String::from("#!/bin/sh\n");
    for name in unset {
        script.push_str(&format!("unset {name}\n"));
    }
    script.push_str(&format!("export HOME={}\n", quote(home.to_str().unwrap())));
    for (k, v) in env {
        script.push_str(&format!("export {k}={}\n", quote(v)));
    }
    script.push_str(&quote(TOOL));
    for a in args {
        script.push(' ');
        script.push_str(&quote(a));
    }
    script.push_str("\necho \"exit status $?\"\nexec sleep 600\n");
    let script_path = dir.path().join("run.sh");
    fs::write(&script_path, script).unwrap();
    let tmux = Tmux::new(name);
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "progress",
        "-x",
        "100",
        "-y",
        "30",
        "sh",
        script_path.to_str().unwrap(),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut resized: Option<std::time::Instant> = None;
    let mut watched = Watched {
        during: Vec::new(),
        during_colours: Vec::new(),
        after: Vec::new(),
        resized_at: None,
    };
    loop {
        let screen = tmux.screen(false);
        if screen.iter().any(|r| r.starts_with("exit status")) {
            watched.after = screen;
            return watched;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not end in time; the pane:\n{}",
            screen.join("\n")
        );
        let bars = screen.iter().any(|r| r.starts_with("layer "));
        match (bars, resized, watched.resized_at, resize_to) {
            (true, None, _, Some(width)) => {
                tmux.run(&["resize-window", "-t", "progress", "-x", &width.to_string()]);
                resized = Some(std::time::Instant::now());
            }
            // Until the pane's new size reaches the tool, its frames are
            // drawn for the old width, and tmux wraps what they leave
            // behind; that is the terminal's doing and no tool can undo it.
            // So the pane is cleared once the tool has had time to see the
            // resize, and what it draws from then on is what is judged.
            (_, Some(at), None, _) if at.elapsed() >= RESIZE_SEEN => {
                tmux.run(&["send-keys", "-R", "-t", "progress"]);
                watched.resized_at = Some(watched.during.len() + 1);
            }
            _ => {}
        }
        watched.during.push(screen);
        watched.during_colours.push(tmux.screen(true));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bars_in_tmux_during_a_push_and_the_summary_after() {
    if !require("bars_in_tmux", &["tmux", "docker-registry"]) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = large_store(dir.path());
    let out_file = dir.path().join("img.tar");
    let target = format!("{}/progress:large", registry.host());
    let args = [
        spec.to_str().unwrap(),
        "--push",
        &target,
        "--insecure",
        "--compress",
        "zstd:3",
        "-o",
        out_file.to_str().unwrap(),
    ];
    let watched = watch("push", &args, &[], &["NO_COLOR"], Some(72));
    let during = &watched.during;
    // During: bars with their phases, bytes and throughput, and a total.
    let bar_rows = watched.bar_rows();
    assert!(
        bar_rows
            .iter()
            .any(|r| r.starts_with("layer 1/3 ") && r.contains("aaaa-big") && r.contains("MiB/s")),
        "no bar of layer 1 with its store path and throughput:\n{}",
        Watched::all(during)
    );
    for phase in ["compressing", "uploading"] {
        assert!(
            bar_rows.iter().any(|r| r.contains(phase)),
            "no bar in phase {phase}:\n{}",
            Watched::all(during)
        );
    }
    assert!(
        bar_rows.iter().any(|r| r.starts_with("total: ")
            && r.contains("/3 layers done")
            && r.contains("left")),
        "no total line with the time left:\n{}",
        Watched::all(during)
    );
    // Phases in colour, since NO_COLOR is not set.
    assert!(
        watched
            .during_colours
            .iter()
            .flatten()
            .any(|r| r.contains("\x1b[33mcompressing")),
        "no colour:\n{}",
        Watched::all(&watched.during_colours)
    );
    // Once the narrower width is taken up, every row is a bar, whole: no
    // fragment of an earlier, wider frame, no line wrapped in two.
    let resized_at = watched.resized_at.expect("bars were seen");
    let drawing = |s: &&Vec<String>| {
        !s.iter()
            .any(|r| r.contains("] pushed") || r.contains("] done:"))
    };
    let narrow: Vec<&Vec<String>> = during.iter().skip(resized_at + 1).filter(drawing).collect();
    assert!(
        narrow.iter().any(|s| s.iter().any(|r| is_bar_row(r))),
        "no bars drawn after the resize:\n{}",
        Watched::all(&during[resized_at..])
    );
    for screen in narrow {
        for row in screen.iter().filter(|r| !r.is_empty()) {
            assert!(
                is_bar_row(row),
                "a row that is no whole bar after the resize: {row:?}\n{}",
                Watched::all(&during[resized_at..])
            );
        }
    }
    // After: the summary, and nothing left of a bar.
    let text = watched.after.join("\n");
    assert!(text.contains("] pushed sha256:"), "{text}");
    assert!(text.contains("] done: 3 layers"), "{text}");
    assert!(text.contains("exit status 0"), "{text}");
    for row in &watched.after {
        assert!(
            !is_bar_row(row) && !row.contains("MiB/s,") && !row.contains("=>"),
            "a bar left after the run: {row:?}\n{text}"
        );
    }

    // Pushed again: the registry has every blob. The small layers are
    // skipped while the large one is still being compressed.
    let again = watch("again", &args, &[], &[], None);
    assert!(
        again
            .bar_rows()
            .iter()
            .any(|r| r.contains("skipped") && r.contains("(the registry has it)")),
        "no skipped layer:\n{}",
        Watched::all(&again.during)
    );
    let text = again.after.join("\n");
    assert!(text.contains("(0 blob uploads, 0 mounts)"), "{text}");
    assert!(again.after.iter().all(|r| !is_bar_row(r)), "{text}");
}

#[test]
fn bars_give_way_to_an_error_message() {
    if !require("bars_give_way_to_an_error", &["tmux"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = large_store(dir.path());
    // A port nothing listens on: the push fails once the first layer is
    // compressed, while bars are on the screen.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}/app:1", dead.local_addr().unwrap().port());
    drop(dead);
    let watched = watch(
        "error",
        &[
            spec.to_str().unwrap(),
            "--push",
            &target,
            "--insecure",
            "--compress",
            "zstd:3",
        ],
        &[],
        &[],
        None,
    );
    assert!(
        watched.bar_rows().iter().any(|r| r.contains("compressing")),
        "no bars before the error:\n{}",
        Watched::all(&watched.during)
    );
    let text = watched.after.join("\n");
    assert!(text.contains("exit status 1"), "{text}");
    let first = watched.after.first().map(String::as_str).unwrap_or("");
    assert!(
        first.starts_with("stream-layered-image: error: "),
        "the error is not the first row of a cleared screen:\n{text}"
    );
    for row in &watched.after {
        assert!(
            !is_bar_row(row),
            "a bar left with the error: {row:?}\n{text}"
        );
    }
}

#[test]
fn no_color_turns_colours_off_and_a_dumb_terminal_gets_plain_lines() {
    if !require("no_color_and_dumb_terminals", &["tmux"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = large_store(dir.path());
    let out_file = dir.path().join("img.tar");
    let args = [
        spec.to_str().unwrap(),
        "--format",
        "oci-archive",
        "--compress",
        "zstd:3",
        "-o",
        out_file.to_str().unwrap(),
    ];
    let watched = watch("nocolor", &args, &[("NO_COLOR", "1")], &[], None);
    assert!(
        watched.bar_rows().iter().any(|r| r.contains("compressing")),
        "no bars:\n{}",
        Watched::all(&watched.during)
    );
    for row in watched.during_colours.iter().flatten() {
        assert!(
            !row.contains("\x1b[3"),
            "a colour with NO_COLOR set: {row:?}"
        );
    }
    assert!(watched.after.join("\n").contains("exit status 0"));

    // TERM=dumb: the lines of plain mode, even with --progress=bar.
    let small = store(&dir.path().join("small"));
    for progress in ["--progress=auto", "--progress=bar"] {
        let watched = watch(
            "dumb",
            &[
                small.to_str().unwrap(),
                progress,
                "-o",
                out_file.to_str().unwrap(),
            ],
            &[("TERM", "dumb")],
            &[],
            None,
        );
        let text = watched.after.join("\n");
        assert!(
            watched
                .during
                .iter()
                .flatten()
                .chain(&watched.after)
                .all(|r| !is_bar_row(r)),
            "{progress}: a bar on a dumb terminal:\n{text}"
        );
        assert!(text.contains("] hashing layer 1/3: "), "{progress}: {text}");
        assert!(
            text.contains("] streaming layer 3/3: "),
            "{progress}: {text}"
        );
        assert!(text.contains("] done: 3 layers"), "{progress}: {text}");
    }
}

#[test]
fn progress_plain_and_none_on_a_pipe() {
    let dir = fixed_dir("modes");
    let spec = store(&dir);
    let out_file = dir.join("img.tar");
    let run = |extra: &[&str]| {
        let mut args = vec![spec.to_str().unwrap(), "-o", out_file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = tool(&args, &[]);
        assert!(out.status.success(), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert_eq!(run(&["--progress=none"]), "");
    assert_eq!(run(&["--quiet", "--progress=bar"]), "", "--quiet wins");
    // Bars asked for on a pipe: drawn, then cleared, and the summary after.
    let bars = run(&["--progress=bar"]);
    let last = bars.rsplit('\n').find(|l| !l.is_empty()).unwrap_or("");
    assert!(last.contains("] done: 3 layers, 3.4 MiB in "), "{bars:?}");
    assert!(
        !bars.contains("hashing layer"),
        "plain lines among bars: {bars:?}"
    );
}
