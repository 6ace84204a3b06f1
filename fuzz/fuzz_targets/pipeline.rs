//! A nixpkgs `layeringPipeline` (JSON steps), run on a small fixed graph.
#![no_main]

use std::sync::OnceLock;

use stream_layered_image::layering::{Graph, Pipeline};

/// A diamond with a tail: the paths the seeds name.
const GRAPH: &str = r#"[
  {"path": "/nix/store/aaaa-app", "narSize": 500, "references": ["/nix/store/aaaa-app", "/nix/store/bbbb-lib", "/nix/store/cccc-tool"]},
  {"path": "/nix/store/bbbb-lib", "narSize": 300, "references": ["/nix/store/dddd-glibc"]},
  {"path": "/nix/store/cccc-tool", "narSize": 200, "references": ["/nix/store/dddd-glibc", "/nix/store/eeee-data"]},
  {"path": "/nix/store/dddd-glibc", "narSize": 900, "references": []},
  {"path": "/nix/store/eeee-data", "narSize": 10, "references": null},
  {"path": "/nix/store/ffff-extra", "narSize": 10}
]"#;

fn graph() -> &'static Graph {
    static GRAPH_CELL: OnceLock<Graph> = OnceLock::new();
    GRAPH_CELL.get_or_init(|| Graph::parse(GRAPH.as_bytes(), "graph").unwrap())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pipeline) = Pipeline::parse(text) else {
        return;
    };
    let graph = graph();
    if let Ok(layers) = pipeline.run(graph) {
        for path in layers.iter().flatten() {
            assert!(
                graph.index_of(path).is_some(),
                "{path:?} is not in the graph"
            );
        }
    }
});
