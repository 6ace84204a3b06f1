//! Every graph input format, including graphs written by a real `nix-build`,
//! and the errors for bad input.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use stream_layered_image::layering::{plan, Graph, LayeringError, Strategy};

const BIN: &str = env!("CARGO_BIN_EXE_stream-layered-image");

fn paths_and_refs(g: &Graph) -> Vec<(String, Vec<String>, u64)> {
    let mut out: Vec<(String, Vec<String>, u64)> = g
        .nodes()
        .iter()
        .map(|n| {
            let mut refs: Vec<String> = n
                .references
                .iter()
                .map(|&r| g.node(r).path.clone())
                .collect();
            refs.sort();
            (n.path.clone(), refs, n.nar_size)
        })
        .collect();
    out.sort();
    out
}

const STRUCTURED: &str = r#"[
  {"path": "/nix/store/aaaa-app-1", "references": ["/nix/store/aaaa-app-1", "/nix/store/bbbb-lib-2"], "narSize": 100},
  {"path": "/nix/store/bbbb-lib-2", "references": ["/nix/store/cccc-libc-3"], "narSize": 20},
  {"path": "/nix/store/cccc-libc-3", "references": [], "narSize": 3000}
]"#;

#[test]
fn structured_json_list_object_and_gzip() {
    let a = Graph::parse(STRUCTURED.as_bytes(), "list").unwrap();
    let wrapped = format!(r#"{{"name": "x", "graph": {STRUCTURED}, "outputs": {{}}}}"#);
    let b = Graph::parse(wrapped.as_bytes(), "attrs").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(STRUCTURED.as_bytes()).unwrap();
    let c = Graph::parse(&gz.finish().unwrap(), "gz").unwrap();
    assert_eq!(paths_and_refs(&a), paths_and_refs(&b));
    assert_eq!(paths_and_refs(&a), paths_and_refs(&c));
    let app = a.index_of("/nix/store/aaaa-app-1").unwrap();
    // The self-reference is dropped.
    assert_eq!(a.node(app).references.len(), 1);
    assert_eq!(a.total_size(), 3120);
}

#[test]
fn text_format_measures_sizes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = store.join("aaaa-app-1");
    let lib = store.join("bbbb-lib-2");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::write(app.join("bin/app"), vec![0u8; 1000]).unwrap();
    std::fs::write(app.join("README"), b"hello").unwrap();
    // A symlink counts as its own size (the target's length), never
    // followed: this one points at a large file.
    std::fs::write(&lib, vec![1u8; 50_000]).unwrap();
    std::os::unix::fs::symlink(&lib, app.join("bin/lib")).unwrap();
    let link_len = lib.as_os_str().len() as u64;
    let text = format!(
        "{app}\n\n2\n{app}\n{lib}\n{lib}\n/nix/store/zzzz-lib.drv\n0\n",
        app = app.display(),
        lib = lib.display()
    );
    let g = Graph::parse(text.as_bytes(), "text").unwrap();
    let a = g.index_of(&app.display().to_string()).unwrap();
    let l = g.index_of(&lib.display().to_string()).unwrap();
    assert_eq!(g.node(a).nar_size, 1005 + link_len);
    assert_eq!(g.node(l).nar_size, 50_000);
    assert_eq!(g.node(a).references, vec![l]);
}

#[test]
fn registration_format() {
    let text = "/nix/store/aaaa-app-1\n\
                ea5ae6fe88ada6676107527b2680dc20437ee0ff5a7c276db270c7e465153b50\n\
                4096\n\
                /nix/store/xxxx-app-1.drv\n\
                2\n\
                /nix/store/aaaa-app-1\n\
                /nix/store/bbbb-lib-2\n\
                /nix/store/bbbb-lib-2\n\
                sha256:0l1v2mjy9ivhn9njfz2szzh7whr0vj02cysj0xhng9mdi3zfcnpa\n\
                120\n\
                \n\
                0\n";
    let g = Graph::parse(text.as_bytes(), "registration").unwrap();
    assert_eq!(
        paths_and_refs(&g),
        vec![
            (
                "/nix/store/aaaa-app-1".to_string(),
                vec!["/nix/store/bbbb-lib-2".to_string()],
                4096
            ),
            ("/nix/store/bbbb-lib-2".to_string(), vec![], 120),
        ]
    );
}

fn parse_err(text: &str) -> String {
    match Graph::parse(text.as_bytes(), "input") {
        Ok(_) => panic!("accepted bad input {text:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_rejected_clearly() {
    let dangling = parse_err(r#"[{"path": "/s/a-x", "references": ["/s/b-y"], "narSize": 1}]"#);
    assert!(
        dangling.contains("refers to \"/s/b-y\", which is not in the graph"),
        "{dangling}"
    );

    let cycle = parse_err(
        r#"[{"path": "/s/a-x", "references": ["/s/b-y"], "narSize": 1},
            {"path": "/s/b-y", "references": ["/s/c-z"], "narSize": 1},
            {"path": "/s/c-z", "references": ["/s/a-x", "/s/c-z"], "narSize": 1}]"#,
    );
    assert!(
        cycle.contains("cycle: /s/a-x -> /s/b-y -> /s/c-z -> /s/a-x"),
        "{cycle}"
    );

    // A self-reference alone is fine.
    Graph::parse(
        br#"[{"path": "/s/a-x", "references": ["/s/a-x"], "narSize": 1}]"#,
        "ok",
    )
    .unwrap();

    let count = parse_err("/s/a-x\n\nthree\n");
    assert!(
        count.contains("input:3: expected a reference count"),
        "{count}"
    );
    let short = parse_err("/s/a-x\n\n2\n/s/b-y\n");
    assert!(
        short.contains("announces 2 references but the input ends"),
        "{short}"
    );
    let relative = parse_err("/s/a-x\n\n1\nb-y\n");
    assert!(
        relative.contains("input:4: expected a referenced store path"),
        "{relative}"
    );
    let reg = parse_err("/s/a-x\nabc123\nbig\n\n0\n");
    assert!(reg.contains("input:3: expected a NAR size"), "{reg}");
    let dup = parse_err("/s/a-x\n\n0\n/s/a-x\n\n0\n");
    assert!(dup.contains("listed more than once"), "{dup}");

    let json = parse_err(r#"[{"path": "/s/a-x", "references": "nope"}]"#);
    assert!(json.contains("\"references\" is not a list"), "{json}");
    let size = parse_err(r#"[{"path": "/s/a-x", "references": [], "narSize": -5}]"#);
    assert!(
        size.contains("narSize -5 is not a non-negative integer"),
        "{size}"
    );
    let syntax = parse_err("[{\"path\": ");
    assert!(syntax.contains("invalid JSON at line 1"), "{syntax}");
    assert!(matches!(
        Graph::parse(b"  \n", "blank"),
        Err(LayeringError::Empty { .. })
    ));
    let missing = parse_err(r#"[{"path": "/nonexistent/dir/a-x", "references": []}]"#);
    assert!(
        missing.contains("/nonexistent/dir/a-x") && missing.contains("measuring"),
        "{missing}"
    );
}

const NIX_EXPR: &str = r#"
let
  system = builtins.currentSystem;
  busybox = "/bin/busybox";
  data = builtins.toFile "data.txt" "some data for the layering test";
  leaf = builtins.derivation {
    name = "layering-test-leaf-1.0"; inherit system; builder = busybox;
    args = [ "sh" "-c" "echo leaf > $out" ];
  };
  mid = builtins.derivation {
    name = "layering-test-mid-2.0"; inherit system; builder = busybox;
    args = [ "sh" "-c" "mkdir -p $out/bin && echo ${leaf} > $out/ref && ln -s ${leaf} $out/bin/leaf" ];
  };
  top = builtins.derivation {
    name = "layering-test-top-3.0"; inherit system; builder = busybox;
    args = [ "sh" "-c" "mkdir $out && echo ${mid} ${leaf} ${data} > $out/refs && head -c 4096 /bin/busybox > $out/blob" ];
  };
in {
  inherit top;
  structured = builtins.derivation {
    name = "layering-test-graph-structured"; inherit system; builder = busybox;
    __structuredAttrs = true;
    exportReferencesGraph.graph = [ top ];
    # With structured attrs $out is not set: take it from .attrs.json.
    args = [ "sh" "-c" "cp .attrs.json \"$(sed -n 's/.*\"outputs\":{\"out\":\"\\([^\"]*\\)\".*/\\1/p' .attrs.json)\"" ];
  };
  text = builtins.derivation {
    name = "layering-test-graph-text"; inherit system; builder = busybox;
    exportReferencesGraph = [ "graph" top ];
    args = [ "sh" "-c" "cp graph $out" ];
  };
}
"#;

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn check_partition(graph: &Graph, layers_json: &str, max: usize) {
    let layers: Vec<Vec<String>> = serde_json::from_str(layers_json).unwrap();
    assert!(!layers.is_empty() && layers.len() <= max, "{layers_json}");
    let mut seen = HashSet::new();
    for path in layers.iter().flatten() {
        assert!(seen.insert(path.clone()), "{path} twice");
    }
    let all: HashSet<String> = graph.nodes().iter().map(|n| n.path.clone()).collect();
    assert_eq!(seen, all);
}

#[test]
fn graphs_written_by_nix_build() {
    if !have("nix-build") {
        eprintln!("SKIPPED graphs_written_by_nix_build: nix-build is not installed (apt-get install nix-bin)");
        return;
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox missing (apt-get install busybox-static)"
    );
    let dir = tempfile::tempdir().unwrap();
    let expr = dir.path().join("graphs.nix");
    std::fs::write(&expr, NIX_EXPR).unwrap();
    let out = Command::new("nix-build")
        .args([
            "--option",
            "sandbox",
            "false",
            "--option",
            "substituters",
            "",
        ])
        .args(["--option", "build-users-group", ""])
        .arg(&expr)
        .args([
            "-A",
            "structured",
            "-A",
            "text",
            "-A",
            "top",
            "--no-out-link",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let outputs: Vec<&str> = stdout.lines().collect();
    let [structured, text, top] = outputs[..] else {
        panic!("unexpected nix-build output {stdout:?}")
    };
    let closure = Command::new("nix-store")
        .args(["-qR", top])
        .output()
        .unwrap();
    let closure: Vec<String> = String::from_utf8(closure.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(closure.len(), 4, "{closure:?}");

    // .attrs.json: the graph under "graph", with narSize.
    let s = Graph::read(Path::new(structured)).unwrap();
    // Text: no sizes, measured on disk.
    let t = Graph::read(Path::new(text)).unwrap();
    // closureInfo's registration is `nix-store --dump-db` of the closure.
    let dump = Command::new("nix-store")
        .arg("--dump-db")
        .args(&closure)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let r = Graph::parse(&dump.stdout, "registration").unwrap();

    let shape = |g: &Graph| -> Vec<(String, Vec<String>)> {
        paths_and_refs(g)
            .into_iter()
            .map(|(p, r, _)| (p, r))
            .collect()
    };
    assert_eq!(shape(&s), shape(&t));
    assert_eq!(shape(&s), shape(&r));
    let mut sorted = closure.clone();
    sorted.sort();
    assert_eq!(
        shape(&s).into_iter().map(|(p, _)| p).collect::<Vec<_>>(),
        sorted
    );
    // Sizes: the registration has the same narSize as .attrs.json; the
    // measured sizes are the apparent sizes of the files.
    assert_eq!(paths_and_refs(&s), paths_and_refs(&r));
    for node in t.nodes() {
        assert!(node.nar_size > 0, "{}", node.path);
        if node.path.contains("-layering-test-top-") {
            assert!(node.nar_size >= 4096, "{}", node.nar_size);
        }
    }

    // And the CLI on each of them, with every strategy.
    for file in [structured, text] {
        for strategy in ["default", "popularity", "auto", "size"] {
            let out = Command::new(BIN)
                .args([
                    "layers",
                    "--graph",
                    file,
                    "--max-layers",
                    "2",
                    "--strategy",
                    strategy,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            check_partition(&s, &String::from_utf8(out.stdout).unwrap(), 2);
        }
    }
    // The same split whichever format it came from, when sizes agree.
    for strategy in [
        Strategy::Default,
        Strategy::Popularity,
        Strategy::Auto,
        Strategy::Size,
    ] {
        let a = plan(&s, &strategy, Some(3), &HashSet::new()).unwrap();
        let b = plan(&r, &strategy, Some(3), &HashSet::new()).unwrap();
        let paths = |l: Vec<stream_layered_image::layering::Layer>| -> Vec<Vec<String>> {
            l.into_iter().map(|l| l.paths).collect()
        };
        assert_eq!(paths(a), paths(b), "{}", strategy.name());
    }
}
