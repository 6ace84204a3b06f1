//! Layering hints files (`stream-layered-image hints`, `layers --hints`):
//! any input is read or refused with a one-line error naming the file,
//! never a panic; what is read writes back to the same hints, and using
//! them on a graph gives a weight for every path.
#![no_main]

use stream_layered_image::layering::{Graph, Hints};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let hints = match Hints::parse(data, "<fuzz>") {
        Ok(hints) => hints,
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("<fuzz>: "), "{message}");
            assert!(!message.contains('\n'), "{message}");
            return;
        }
    };
    let text = hints.to_json();
    let again = Hints::parse(text.as_bytes(), "<fuzz>").expect("written hints read back");
    assert_eq!(again, hints);
    assert_eq!(again.to_json(), text);
    let graph = Graph::parse(
        br#"[{"path": "/nix/store/00000000000000000000000000000000-a-1", "narSize": 1, "references": []},
             {"path": "/nix/store/11111111111111111111111111111111-b-2-dev", "narSize": 2,
              "references": ["/nix/store/00000000000000000000000000000000-a-1"]}]"#,
        "<graph>",
    )
    .expect("a valid graph");
    let (weights, known) = hints.weights(&graph);
    assert_eq!(weights.len(), 2);
    assert!(known <= 2);
    assert!(weights.iter().all(|&w| w > 0));
});
