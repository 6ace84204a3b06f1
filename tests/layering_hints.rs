//! `stream-layered-image hints` and `layers --hints` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Fails with exit status 1 and a first stderr line that contains `want`
/// (usage errors add the usage after it).
fn usage(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.lines().next().unwrap_or("").contains(want),
        "{err:?} lacks {want:?}"
    );
}

/// Fails with exit status 1 and one line on stderr that contains `want`.
fn fails(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(want), "{err:?} lacks {want:?}");
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sli-hints-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A graph of (store path, size, references) in the structured JSON format.
fn graph(nodes: &[(&str, u64, &[&str])]) -> String {
    let list: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(path, size, refs)| {
            serde_json::json!({"path": path, "narSize": size, "references": refs})
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

const LIBC: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-libc-2.40";
const LIB1: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-libfoo-1.0";
const LIB1P: &str = "/nix/store/cccccccccccccccccccccccccccccccc-libfoo-1.0";
const APP1: &str = "/nix/store/dddddddddddddddddddddddddddddddd-app-1.0";
const APP2: &str = "/nix/store/ffffffffffffffffffffffffffffffff-app-1.1";
const APP2R: &str = "/nix/store/gggggggggggggggggggggggggggggggg-app-1.1";

/// Three versions of one image: the app's version bumped, then libfoo
/// patched (new hash, same version and references), which renames the app
/// without it changing itself.
fn history(dir: &Dir) -> [String; 3] {
    [
        dir.write(
            "v1.json",
            &graph(&[
                (LIBC, 100, &[]),
                (LIB1, 10, &[LIBC]),
                (APP1, 5, &[LIB1, LIBC]),
            ]),
        ),
        dir.write(
            "v2.json",
            &graph(&[
                (LIBC, 100, &[]),
                (LIB1, 10, &[LIBC]),
                (APP2, 5, &[LIB1, LIBC]),
            ]),
        ),
        dir.write(
            "v3.json",
            &graph(&[
                (LIBC, 100, &[]),
                (LIB1P, 10, &[LIBC]),
                (APP2R, 5, &[LIB1P, LIBC]),
            ]),
        ),
    ]
}

fn packages(hints: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(hints).unwrap();
    value["packages"].clone()
}

#[test]
fn hints_count_own_changes_by_package_name() {
    let dir = Dir::new("learn");
    let [v1, v2, v3] = history(&dir);
    let text = ok(&run(&["hints", "--graph", &v1, &v2, &v3]));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["format"], "stream-layered-image-hints");
    assert_eq!(value["version"], 1);
    assert_eq!(value["graphs"], 3);
    assert_eq!(value["images"], serde_json::json!(["app"]));
    let p = &value["packages"];
    let names: Vec<&String> = p.as_object().unwrap().keys().collect();
    assert_eq!(names, ["app", "libc", "libfoo"]);
    // app: its version bump counts; being renamed by libfoo's patch does not.
    assert_eq!(p["app"][0], 1);
    assert_eq!(p["libfoo"][0], 1);
    assert_eq!(p["libc"][0], 0);
    for name in ["app", "libc", "libfoo"] {
        assert_eq!(p[name][1], 3, "{name} seen");
        assert_eq!(p[name][2], "1", "{name} images");
    }
    // One package per line, sorted: the file diffs well.
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"")).collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("  \"app\": [1, 3, \"1\", \""),
        "{}",
        lines[0]
    );
}

#[test]
fn hints_are_deterministic_and_fold_with_previous() {
    let dir = Dir::new("fold");
    let [v1, v2, v3] = history(&dir);
    let all = dir.path("all.json");
    ok(&run(&[
        "hints", "--graph", &v1, "--graph", &v2, &v3, "-o", &all,
    ]));
    let again = ok(&run(&["hints", "--graph", &v1, &v2, &v3]));
    assert_eq!(std::fs::read_to_string(&all).unwrap(), again);
    let first = dir.path("first.json");
    ok(&run(&["hints", "--graph", &v1, &v2, "-o", &first]));
    let folded = ok(&run(&["hints", "--previous", &first, "--graph", &v3]));
    assert_eq!(folded, again, "folding must equal learning all at once");
    // Graphs of another image add an image and share the common packages.
    let other = dir.write(
        "other.json",
        &graph(&[
            (LIBC, 100, &[]),
            (
                "/nix/store/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh-tool-3",
                7,
                &[LIBC],
            ),
        ]),
    );
    let both = ok(&run(&["hints", "--previous", &all, "--graph", &other]));
    let value: serde_json::Value = serde_json::from_str(&both).unwrap();
    assert_eq!(value["images"], serde_json::json!(["app", "tool"]));
    assert_eq!(packages(&both)["libc"][2], "3");
    assert_eq!(packages(&both)["tool"][2], "2");
    assert_eq!(packages(&both)["app"][2], "1");
}

fn layer_sets(text: &str) -> Vec<Vec<String>> {
    let mut layers: Vec<Vec<String>> = serde_json::from_str(text).unwrap();
    for l in &mut layers {
        l.sort();
    }
    layers.sort();
    layers
}

/// Hints with strong evidence that `app` changes far more often than the
/// rest (ten changes of one package among six).
const HOT_APP: &str = r#"{"format": "stream-layered-image-hints", "version": 1,
 "fields": ["changes", "seen", "images", "last"], "graphs": 11, "images": ["app"],
 "packages": {
  "app": [10, 11, "1", "000000000000000000000000"],
  "libc": [0, 11, "1", "000000000000000000000000"],
  "tool": [0, 11, "1", "000000000000000000000000"],
  "a": [0, 11, "1", "000000000000000000000000"],
  "b": [0, 11, "1", "000000000000000000000000"],
  "c": [0, 11, "1", "000000000000000000000000"]
 }}
"#;

#[test]
fn hints_keep_an_often_changing_package_out_of_shared_layers() {
    let dir = Dir::new("use");
    let app = "/nix/store/dddddddddddddddddddddddddddddddd-app-1.0";
    let tool = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tool-1.0";
    let g = dir.write(
        "g.json",
        &graph(&[
            (LIBC, 10_000_000, &[]),
            (app, 1_000_000, &[LIBC]),
            (tool, 1_000_000, &[LIBC]),
        ]),
    );
    let hints = dir.write("hints.json", HOT_APP);
    // Without hints: merging app and tool costs 1 MB × 1 change each way,
    // merging either with libc 10 MB × 1: app and tool share a layer.
    let plain = ok(&run(&["layers", "--graph", &g, "--max-layers", "2"]));
    assert_eq!(
        layer_sets(&plain),
        [
            vec![LIBC.to_string()],
            vec![app.to_string(), tool.to_string()]
        ]
    );
    // With app weighing ~36 changes, tool with libc (10 MB × 1) is cheaper
    // than tool with app (1 MB × 36): app gets its own layer.
    let hinted = ok(&run(&[
        "layers",
        "--graph",
        &g,
        "--max-layers",
        "2",
        "--hints",
        &hints,
    ]));
    assert_eq!(
        layer_sets(&hinted),
        [
            vec![LIBC.to_string(), tool.to_string()],
            vec![app.to_string()]
        ]
    );
}

#[test]
fn hints_without_evidence_change_nothing() {
    let dir = Dir::new("noop");
    let [v1, v2, v3] = history(&dir);
    let hints = dir.path("h.json");
    ok(&run(&["hints", "--graph", &v1, &v2, &v3, "-o", &hints]));
    let graph = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/layering/gimp.graph.json")
        .display()
        .to_string();
    for budget in ["3", "8", "30"] {
        let plain = run(&["layers", "--graph", &graph, "--max-layers", budget]);
        let hinted = run(&[
            "layers",
            "--graph",
            &graph,
            "--max-layers",
            budget,
            "--hints",
            &hints,
        ]);
        assert_eq!(ok(&plain), ok(&hinted));
        // Most of gimp's packages are unknown to these hints: a warning.
        let err = String::from_utf8_lossy(&hinted.stderr);
        assert!(err.contains("warning:") && err.contains(&hints), "{err}");
    }
}

#[test]
fn bad_hint_files_are_one_line_errors() {
    let dir = Dir::new("bad");
    let [v1, ..] = history(&dir);
    let cases: Vec<(&str, String, &str)> = vec![
        ("graph.json", std::fs::read_to_string(&v1).unwrap(), "not a hints file"),
        ("other.json", r#"{"format": "nix2container-hints", "version": 1}"#.into(), "\"format\" is \"nix2container-hints\""),
        ("noformat.json", r#"{"version": 1, "packages": {}}"#.into(), "no \"format\" key"),
        ("v2.json", r#"{"format": "stream-layered-image-hints", "version": 2, "packages": {}}"#.into(), "hints version 2"),
        ("text.txt", "hello\n".into(), "not a hints file: invalid JSON"),
        ("entry.json", r#"{"format": "stream-layered-image-hints", "version": 1, "packages": {"zlib": [1, 2]}}"#.into(), "package \"zlib\""),
        ("count.json", r#"{"format": "stream-layered-image-hints", "version": 1, "packages": {"zlib": [-1, 2, "1", "000000000000000000000000"]}}"#.into(), "package \"zlib\": changes is -1"),
        ("mask.json", r#"{"format": "stream-layered-image-hints", "version": 1, "images": ["a"], "packages": {"zlib": [0, 2, "4", "000000000000000000000000"]}}"#.into(), "names image 2"),
        ("last.json", r#"{"format": "stream-layered-image-hints", "version": 1, "packages": {"zlib": [0, 2, "0", "xyz"]}}"#.into(), "last is \"xyz\""),
    ];
    for (name, text, want) in &cases {
        let file = dir.write(name, text);
        let out = run(&[
            "layers",
            "--graph",
            &v1,
            "--max-layers",
            "2",
            "--hints",
            &file,
        ]);
        fails(&out, want);
        fails(&out, &file);
        let out = run(&["hints", "--previous", &file, "--graph", &v1]);
        fails(&out, want);
    }
    let missing = dir.path("missing.json");
    fails(
        &run(&[
            "layers",
            "--graph",
            &v1,
            "--max-layers",
            "2",
            "--hints",
            &missing,
        ]),
        "missing.json",
    );
    let good = dir.write("good.json", HOT_APP);
    fails(
        &run(&[
            "layers",
            "--graph",
            &v1,
            "--max-layers",
            "2",
            "--strategy",
            "auto",
            "--hints",
            &good,
        ]),
        "--hints works only with the default strategy",
    );
    usage(&run(&["hints"]), "give at least one --graph");
    usage(
        &run(&["hints", "--graph", &v1, "--bogus"]),
        "unknown option \"--bogus\"",
    );
}

#[test]
fn hints_about_other_images_only_warn() {
    let dir = Dir::new("unknown");
    let hints = dir.write("hot.json", HOT_APP);
    let g = dir.write(
        "g.json",
        &graph(&[
            ("/nix/store/iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-zlib-1", 5, &[]),
            (
                "/nix/store/jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj-curl-8",
                5,
                &["/nix/store/iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-zlib-1"],
            ),
        ]),
    );
    let out = run(&[
        "layers",
        "--graph",
        &g,
        "--max-layers",
        "1",
        "--hints",
        &hints,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("none of the graph's 2 package names is in the hints"),
        "{err}"
    );
    assert_eq!(layer_sets(&ok(&out)).len(), 1);
}

#[test]
fn batch_requests_take_hints() {
    let dir = Dir::new("batch");
    let hints = dir.write("hot.json", HOT_APP);
    let app = "/nix/store/dddddddddddddddddddddddddddddddd-app-1.0";
    let tool = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-tool-1.0";
    let g = dir.write(
        "g.json",
        &graph(&[
            (LIBC, 10_000_000, &[]),
            (app, 1_000_000, &[LIBC]),
            (tool, 1_000_000, &[LIBC]),
        ]),
    );
    let batch = dir.write(
        "batch.jsonl",
        &format!(
            "{}\n{}\n",
            serde_json::json!({"graph": g, "max_layers": 2}),
            serde_json::json!({"graph": g, "max_layers": 2, "hints": hints})
        ),
    );
    let out = ok(&run(&["layers", "--batch", &batch]));
    let lines: Vec<&str> = out.lines().collect();
    let direct = ok(&run(&[
        "layers",
        "--graph",
        &g,
        "--max-layers",
        "2",
        "--hints",
        &hints,
    ]));
    assert_eq!(lines[1], direct.trim_end());
    assert_ne!(lines[0], lines[1]);
}

#[test]
fn images_that_share_paths_get_the_same_layer_for_them() {
    let dir = Dir::new("fleet");
    let libfoo = "/nix/store/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh-libfoo-1.0";
    let app = "/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-app-1.0";
    let web = "/nix/store/llllllllllllllllllllllllllllllll-web-1.0";
    let cli = "/nix/store/mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm-cli-1.0";
    // Two images built from one package set: both hold libc and libfoo.
    let x = dir.write(
        "x.json",
        &graph(&[
            (LIBC, 100_000_000, &[]),
            (libfoo, 1_000_000, &[LIBC]),
            (app, 1_000_000, &[libfoo, LIBC]),
        ]),
    );
    let y = dir.write(
        "y.json",
        &graph(&[
            (LIBC, 100_000_000, &[]),
            (libfoo, 1_000_000, &[LIBC]),
            (web, 50_000_000, &[libfoo, LIBC]),
            (cli, 50_000_000, &[libfoo, LIBC]),
        ]),
    );
    let hints = dir.path("h.json");
    ok(&run(&["hints", "--graph", &x, &y, "-o", &hints]));
    let layout = |g: &str, hinted: bool| {
        let mut args = vec!["layers", "--graph", g, "--max-layers", "2"];
        if hinted {
            args.extend(["--hints", hints.as_str()]);
        }
        layer_sets(&ok(&run(&args)))
    };
    let holding = |layers: &[Vec<String>]| -> Vec<String> {
        layers
            .iter()
            .find(|l| l.iter().any(|p| p == libfoo))
            .cloned()
            .unwrap()
    };
    // Alone, each image puts libfoo with its own small top: a new libfoo
    // is pulled twice, in two different layers.
    let (px, py) = (layout(&x, false), layout(&y, false));
    assert_ne!(holding(&px), holding(&py), "{px:?} {py:?}");
    // With the hints, the paths both images hold are one layer in each.
    let (hx, hy) = (layout(&x, true), layout(&y, true));
    let shared = vec![LIBC.to_string(), libfoo.to_string()];
    assert!(
        hx.contains(&shared) && hy.contains(&shared),
        "{hx:?} {hy:?}"
    );
    assert_eq!(hx.len(), 2);
    assert_eq!(hy, [shared, vec![web.to_string(), cli.to_string()]]);
}
