//! The `layers` and `diff` subcommands as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

fn golden(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/layering")
        .join(name)
        .display()
        .to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn layers_prints_store_layers_and_explains() {
    let graph = golden("gimp.graph.json");
    let out = run(&[
        "layers",
        "--graph",
        &graph,
        "--max-layers",
        "8",
        "--explain",
    ]);
    let layers: Vec<Vec<String>> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(layers.len(), 8);
    assert_eq!(layers.iter().map(Vec::len).sum::<usize>(), 248);
    let explain = String::from_utf8(out.stderr).unwrap();
    assert!(
        explain.starts_with("strategy default: 8 layers, 248 paths"),
        "{explain}"
    );
    assert!(explain.contains("why / paths"), "{explain}");
    assert!(
        explain.contains("replaced together when any of"),
        "{explain}"
    );
    assert!(explain.contains("gimp-2.10"), "{explain}");
}

#[test]
fn layers_strategies_pipeline_and_exclude() {
    let graph = golden("rails.graph.json");
    for strategy in ["popularity", "auto", "size", "default"] {
        let out = run(&[
            "layers",
            "--graph",
            &graph,
            "--max-layers=16",
            "--strategy",
            strategy,
        ]);
        let layers: Vec<Vec<String>> = serde_json::from_str(&stdout(&out)).unwrap();
        assert!(layers.len() <= 16, "{strategy}");
    }
    let out = run(&[
        "layers",
        "--graph",
        &graph,
        "--pipeline",
        &golden("rails.pipeline-split-paths.json"),
    ]);
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden("rails.pipeline-split-paths.expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(got, expected);
    let out = run(&[
        "layers",
        "--graph",
        &graph,
        "--max-layers",
        "16",
        "--strategy",
        "auto",
        "--exclude",
        &golden("rails.exclude.txt"),
    ]);
    let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let excluded = std::fs::read_to_string(golden("rails.exclude.txt")).unwrap();
    for path in excluded.lines() {
        assert!(!got.to_string().contains(path), "{path} not excluded");
    }
}

#[test]
fn layers_errors_are_clear() {
    let graph = golden("fleet.graph.json");
    let out = run(&["layers", "--graph", &graph]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-layers is required"));
    let out = run(&[
        "layers",
        "--graph",
        &graph,
        "--max-layers",
        "4",
        "--strategy",
        "nope",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy \"nope\""));
    let out = run(&["layers", "--graph", &graph, "--max-layers", "0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));

    let dir = tempfile::tempdir().unwrap();
    let cyclic = dir.path().join("cycle.json");
    std::fs::write(
        &cyclic,
        r#"[{"path": "/s/a-x", "references": ["/s/b-y"], "narSize": 1},
            {"path": "/s/b-y", "references": ["/s/a-x"], "narSize": 1}]"#,
    )
    .unwrap();
    let out = run(&[
        "layers",
        "--graph",
        cyclic.to_str().unwrap(),
        "--max-layers",
        "4",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the references form a cycle: /s/a-x -> /s/b-y -> /s/a-x"),
        "{err}"
    );

    let pipeline = dir.path().join("p.json");
    std::fs::write(
        &pipeline,
        r#"[["popularity_contest"], ["limit_layers", 200]]"#,
    )
    .unwrap();
    let out = run(&[
        "layers",
        "--graph",
        &graph,
        "--pipeline",
        pipeline.to_str().unwrap(),
        "--max-layers",
        "5",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the budget of 5"));
}

#[test]
fn batch_mode_answers_every_request_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("batch.jsonl");
    let graph = golden("fleet.graph.json");
    let mut lines = String::new();
    for (strategy, n) in [("auto", 3), ("size", 5), ("default", 7), ("popularity", 9)] {
        lines.push_str(&format!(
            "{{\"graph\": {}, \"strategy\": \"{strategy}\", \"max_layers\": {n}}}\n",
            serde_json::Value::String(graph.clone())
        ));
    }
    std::fs::write(&batch, lines).unwrap();
    let out = run(&["layers", "--batch", batch.to_str().unwrap()]);
    let text = stdout(&out);
    let counts: Vec<usize> = text
        .lines()
        .map(|l| serde_json::from_str::<Vec<Vec<String>>>(l).unwrap().len())
        .collect();
    assert_eq!(counts.len(), 4);
    assert!(counts[0] <= 3);
    assert_eq!(&counts[1..], &[5, 7, 9]);
}

/// Writes a docker-archive with the given layers (name, files).
fn write_image(path: &Path, layers: &[Vec<(&str, Vec<u8>)>], with_diff_ids: bool) {
    use sha2::{Digest, Sha256};
    let mut outer = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for files in layers {
        let mut inner = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o444);
            header.set_cksum();
            inner
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        let bytes = inner.into_inner().unwrap();
        let digest = format!("{:x}", Sha256::digest(&bytes));
        let name = format!("{digest}/layer.tar");
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o444);
        header.set_cksum();
        outer
            .append_data(&mut header, &name, bytes.as_slice())
            .unwrap();
        names.push(name);
        diff_ids.push(format!("sha256:{digest}"));
    }
    let config = if with_diff_ids {
        serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}})
    } else {
        serde_json::json!({})
    };
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": ["x:y"], "Layers": names}]);
    for (name, value) in [("config.json", config), ("manifest.json", manifest)] {
        let data = value.to_string().into_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o444);
        header.set_cksum();
        outer
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    outer.finish().unwrap();
}

#[test]
fn diff_shows_reused_and_new_layers() {
    let dir = tempfile::tempdir().unwrap();
    let base = vec![("nix/store/aaaa-glibc-2.40/lib/libc.so", vec![7u8; 300_000])];
    let app_v1 = vec![("nix/store/bbbb-app-1/bin/app", vec![1u8; 20_000])];
    let app_v2 = vec![
        ("nix/store/cccc-app-2/bin/app", vec![2u8; 30_000]),
        ("nix/store/dddd-data-2/share/x", vec![3u8; 1_000]),
    ];
    for with_diff_ids in [true, false] {
        let old = dir.path().join("old.tar");
        let new = dir.path().join("new.tar");
        write_image(&old, &[base.clone(), app_v1.clone()], with_diff_ids);
        write_image(&new, &[base.clone(), app_v2.clone()], with_diff_ids);
        let out = run(&["diff", old.to_str().unwrap(), new.to_str().unwrap()]);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("reused") && lines[1].contains("aaaa-glibc-2.40"),
            "{text}"
        );
        assert!(
            lines[2].contains("NEW") && lines[2].contains("cccc-app-2 +1 more"),
            "{text}"
        );
        assert!(text.contains("1 reused from"), "{text}");
        assert!(text.contains("1 new"), "{text}");
        assert!(text.contains("transfers 32.5 KiB"), "{text}");
        assert!(text.contains("1 layer(s) of"), "{text}");
        assert!(lines[1].contains("████"), "{text}");
    }
}
