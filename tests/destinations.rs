//! One run, several destinations, and many runs at once: `--push A --push B
//! -o FILE` against real registries, a failing registry that does not undo
//! the others, eight concurrent pushes (with and without one shared
//! `--cache`) and eight concurrent builds, `-o` under SIGTERM, and cache
//! entries written by a push that is killed, or damaged afterwards.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clients::{require, run_json, strings, Archive, Registry};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A store of three paths; `app` differs per `variant`, the others are
/// shared, so images of different variants share two layers.
fn store(dir: &Path, variant: &str) -> PathBuf {
    let store = dir.join("store");
    let lib = store.join("bbbb-lib");
    let data = store.join("cccc-data");
    let app = store.join(format!("aaaa-app-{variant}"));
    for p in [&lib, &data, &app] {
        fs::create_dir_all(p).unwrap();
    }
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(lib.join("lib.so"), &bytes).unwrap();
    let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
    fs::write(data.join("data.txt"), text).unwrap();
    fs::write(app.join("app"), format!("app {variant}\n")).unwrap();
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        serde_json::json!({
            "architecture": "amd64",
            "config": {},
            "created": "1970-01-01T00:00:01Z",
            "store_dir": store,
            "store_layers": [[lib], [data], [app]],
            "repo_tag": format!("dest:{variant}"),
        })
        .to_string(),
    )
    .unwrap();
    spec
}

fn tool(args: &[&str]) -> Output {
    clients::output_without_credentials(TOOL, args)
}

fn stderr(out: &Output) -> String {
    clients::stderr_text(out)
}

fn pulled_diff_ids(reference: &str) -> Vec<String> {
    let config = run_json(
        "skopeo",
        ["inspect", "--tls-verify=false", "--config", reference],
    );
    strings(&config["rootfs"]["diff_ids"])
}

fn docker_archive(spec: &Path, out: &Path) -> Archive {
    let o = tool(&[spec.to_str().unwrap(), "-q", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    Archive::read(out)
}

#[test]
fn two_registries_and_a_file_in_one_run() {
    if !require("two_registries_and_a_file", &["docker-registry", "skopeo"]) {
        return;
    }
    let (a, b) = (Registry::start(), Registry::start());
    let dir = tempfile::tempdir().unwrap();
    let spec = store(dir.path(), "one");
    let file = dir.path().join("img.tar");
    let (ta, tb, tb2) = (
        format!("{}/app:1", a.host()),
        format!("{}/app:1", b.host()),
        format!("{}/app:latest", b.host()),
    );
    let out = tool(&[
        spec.to_str().unwrap(),
        "--push",
        &ta,
        "--push",
        &tb,
        "--push",
        &tb2,
        "--insecure",
        "--compress",
        "gzip",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The file is the same docker-archive a run of its own writes.
    let alone = docker_archive(&spec, &dir.path().join("alone.tar"));
    assert!(
        fs::read(&file).unwrap() == fs::read(dir.path().join("alone.tar")).unwrap(),
        "the file differs from the image written alone"
    );
    for reference in [&ta, &tb, &tb2] {
        assert_eq!(
            pulled_diff_ids(&format!("docker://{reference}")),
            alone.diff_ids(),
            "{reference}"
        );
    }
    // Two tags of one repository: the second found every blob there.
    let err = stderr(&out);
    assert_eq!(err.matches("pushed sha256:").count(), 3, "{err}");
}

#[test]
fn a_failing_registry_does_not_undo_the_others() {
    if !require("a_failing_registry", &["docker-registry", "skopeo"]) {
        return;
    }
    let good = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = store(dir.path(), "two");
    let file = dir.path().join("img.tar");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_host = format!("127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let (tg, td) = (
        format!("{}/app:1", good.host()),
        format!("{dead_host}/app:1"),
    );
    let out = tool(&[
        spec.to_str().unwrap(),
        "--push",
        &td,
        "--push",
        &tg,
        "--insecure",
        "-o",
        file.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("error:"))
        .expect("an error line");
    assert!(line.contains("1 of 3 destinations failed"), "{line}");
    assert!(
        line.contains(&format!("{dead_host}/app:1: pushing to {dead_host}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("the image went to -o {}", file.display())),
        "{line}"
    );
    assert!(line.contains(&format!("{}/app:1", good.host())), "{line}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    // The others got the whole image.
    let alone = docker_archive(&spec, &dir.path().join("alone.tar"));
    assert!(
        fs::read(&file).unwrap() == fs::read(dir.path().join("alone.tar")).unwrap(),
        "the file differs from the image written alone"
    );
    assert_eq!(pulled_diff_ids(&format!("docker://{tg}")), alone.diff_ids());
}

/// Eight pushes at once of images that share two layers, into one
/// registry; each must pull back whole.
fn eight_pushes(cache: Option<&Path>) {
    let registry = Registry::start();
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let specs: Vec<PathBuf> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| store(d.path(), &format!("v{}", i % 4)))
        .collect();
    let children: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut cmd = Command::new(TOOL);
            cmd.arg(spec)
                .args(["-q", "--insecure", "--compress", "gzip", "--push"])
                .arg(format!("{}/app{}:{i}", registry.host(), i % 3))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(cache) = cache {
                cmd.arg("--cache").arg(cache);
            }
            (i, cmd.spawn().unwrap())
        })
        .collect();
    for (i, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "push {i}: {}", stderr(&out));
    }
    for (i, (spec, dir)) in specs.iter().zip(&dirs).enumerate() {
        let expected = docker_archive(spec, &dir.path().join("check.tar")).diff_ids();
        let reference = format!("docker://{}/app{}:{i}", registry.host(), i % 3);
        assert_eq!(pulled_diff_ids(&reference), expected, "{reference}");
    }
}

#[test]
fn eight_concurrent_pushes_without_a_cache() {
    if !require("eight_pushes", &["docker-registry", "skopeo"]) {
        return;
    }
    eight_pushes(None);
}

#[test]
fn eight_concurrent_pushes_sharing_one_cache() {
    if !require("eight_pushes_cache", &["docker-registry", "skopeo"]) {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    eight_pushes(Some(cache.path()));
    // Every entry is whole, and no temporary file is left.
    for entry in clients::blob_cache_entries(cache.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "left behind: {name}");
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&entry).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(json["check"].is_string(), "{name}: {json}");
    }
    // The same pushes again, with the cache warm: nothing is uploaded or
    // compressed; they still pull back whole.
    eight_pushes(Some(cache.path()));
}

#[test]
fn a_damaged_cache_entry_is_not_trusted() {
    if !require("damaged_cache", &["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spec = store(dir.path(), "dmg");
    let target = format!("{}/app:1", registry.host());
    let push = |target: &str| {
        tool(&[
            spec.to_str().unwrap(),
            "--push",
            target,
            "--insecure",
            "--compress",
            "gzip",
            "--cache",
            cache.to_str().unwrap(),
        ])
    };
    let out = push(&target);
    assert!(out.status.success(), "{}", stderr(&out));
    // Point every entry at another blob the registry holds (the first
    // layer's), as a damaged or hand-edited cache might: trusted, it would
    // make the manifest name the wrong blob.
    let entries = clients::blob_cache_entries(&cache);
    assert_eq!(entries.len(), 3);
    let digests: Vec<String> = entries
        .iter()
        .map(|p| {
            let json: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
            json["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    for p in &entries {
        let text = fs::read_to_string(p).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let own = json["digest"].as_str().unwrap();
        let other = digests.iter().find(|d| *d != own).unwrap();
        fs::write(p, text.replace(own, other)).unwrap();
    }
    let target2 = format!("{}/app:2", registry.host());
    let out = push(&target2);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("not trusted, ignored").count(),
        3,
        "a warning per damaged entry: {err}"
    );
    let expected = docker_archive(&spec, &dir.path().join("check.tar")).diff_ids();
    assert_eq!(pulled_diff_ids(&format!("docker://{target2}")), expected);
}

#[test]
fn a_push_killed_while_it_writes_the_cache_leaves_it_sound() {
    if !require("killed_cache", &["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spec = store(dir.path(), "kill");
    // Kill pushes at increasing moments, so that some die in the middle of
    // their cache writes; whatever is left must be whole entries or nothing.
    for (round, delay_ms) in [5u64, 20, 50, 100, 200, 400].into_iter().enumerate() {
        let mut child = Command::new(TOOL)
            .arg(&spec)
            .args(["-q", "--insecure", "--compress", "gzip", "--cache"])
            .arg(&cache)
            .arg("--push")
            .arg(format!("{}/app:k{round}", registry.host()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if cache.exists() {
            for entry in clients::blob_cache_entries(&cache) {
                let name = entry.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    // A temporary file of the killed push: never read.
                    continue;
                }
                let bytes = fs::read(&entry).unwrap();
                let json: serde_json::Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("round {round}: {name} is not whole: {e}"));
                assert!(json["check"].is_string(), "{name}");
            }
        }
    }
    // A push after all that works, and reports no damaged entry.
    let out = tool(&[
        spec.to_str().unwrap(),
        "--push",
        &format!("{}/app:after", registry.host()),
        "--insecure",
        "--compress",
        "gzip",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("not trusted"), "{err}");
    let expected = docker_archive(&spec, &dir.path().join("check.tar")).diff_ids();
    assert_eq!(
        pulled_diff_ids(&format!("docker://{}/app:after", registry.host())),
        expected
    );
}

#[test]
fn eight_concurrent_builds_give_the_bytes_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = store(dir.path(), "same");
    let alone = dir.path().join("alone.tar");
    docker_archive(&spec, &alone);
    let expected = fs::read(&alone).unwrap();
    let outputs: Vec<PathBuf> = (0..8)
        .map(|i| dir.path().join(format!("out{i}.tar")))
        .collect();
    let children: Vec<_> = outputs
        .iter()
        .map(|o| {
            Command::new(TOOL)
                .arg(&spec)
                .arg("-q")
                .arg("-o")
                .arg(o)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for o in &outputs {
        assert!(fs::read(o).unwrap() == expected, "{} differs", o.display());
    }
}

/// A big store, so that a run lasts long enough to be interrupted.
fn slow_spec(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let big = store.join("dddd-big");
    fs::create_dir_all(&big).unwrap();
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut f = fs::File::create(big.join("blob")).unwrap();
    for _ in 0..400 {
        std::io::Write::write_all(&mut f, &block).unwrap();
    }
    let spec = dir.join("spec.json");
    fs::write(
        &spec,
        serde_json::json!({
            "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
            "store_dir": store, "store_layers": [[big]], "repo_tag": "slow:1",
        })
        .to_string(),
    )
    .unwrap();
    spec
}

#[test]
fn output_file_never_half_written_on_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = slow_spec(dir.path());
    for (signal, name) in [(15, "TERM"), (2, "INT"), (1, "HUP")] {
        let out = dir.path().join(format!("img-{name}.tar"));
        // An older image at that name: removed by a stopped run, never
        // left half-overwritten.
        fs::write(&out, b"old contents").unwrap();
        let mut child = Command::new(TOOL)
            .arg(&spec)
            .arg("-o")
            .arg(&out)
            // A slow reader is not involved: the file is written as fast as
            // the disk goes, so stop it as soon as it has started writing.
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let temp_seen = loop {
            let temp = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(&format!(".img-{name}.tar.partial-")));
            if let Some(t) = temp {
                break t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no temporary file"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let kill = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(kill.success());
        let status = clients::wait_within(&mut child, Duration::from_secs(30), "the build");
        if status.success() {
            // It won the race and finished: then the file is whole.
            let whole = docker_archive(&spec, &dir.path().join("whole.tar"));
            assert_eq!(Archive::read(&out).diff_ids(), whole.diff_ids());
        } else {
            assert!(!out.exists(), "SIG{name}: {} is still there", out.display());
        }
        assert!(
            !dir.path().join(&temp_seen).exists(),
            "SIG{name}: {temp_seen} was left behind"
        );
    }
}

#[test]
fn output_file_appears_only_when_complete_and_not_on_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = store(dir.path(), "err");
    // A spec whose last layer is unreadable: the run fails after writing
    // the first layers.
    let text = fs::read_to_string(&spec).unwrap();
    let broken = dir.path().join("broken.json");
    fs::write(
        &broken,
        text.replace(
            "\"repo_tag\"",
            "\"from_image\": null, \"customisation_layer\": \"/nonexistent-dir\", \"repo_tag\"",
        ),
    )
    .unwrap();
    let out = dir.path().join("img.tar");
    let o = tool(&[broken.to_str().unwrap(), "-q", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists(), "a failed run left {}", out.display());
    let leftovers: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // /dev/null is written in place, and kept.
    let o = tool(&[spec.to_str().unwrap(), "-q", "-o", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(Path::new("/dev/null").exists());
}

#[test]
fn the_readme_option_table_is_the_parser_s() {
    let table = Command::new(TOOL).arg("options-table").output().unwrap();
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = "<!-- options-table: begin -->\n";
    let start = readme.find(begin).expect("the begin marker") + begin.len();
    let end = readme[start..]
        .find("<!-- options-table: end -->")
        .expect("the end marker");
    assert_eq!(
        &readme[start..start + end],
        table,
        "README's option table is stale: run `stream-layered-image options-table`"
    );
    // And it names every flag --help names.
    let help = Command::new(TOOL).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // The build options: --help's "Options:" section (the subcommands'
    // descriptions before it mention their own flags).
    let options = help
        .split("\nOptions:\n")
        .nth(1)
        .expect("an Options section");
    for word in options
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
    {
        let flag = word
            .trim_end_matches([',', '.', ')', ']', ':', ';', '`'])
            .split(['=', '<'])
            .next()
            .unwrap();
        if flag == "--help" || flag == "--version" || flag == "--format" && word.contains("oci-dir")
        {
            continue;
        }
        assert!(
            table.contains(&format!("`{flag}")),
            "{flag} is in --help, not in the table"
        );
    }
}
