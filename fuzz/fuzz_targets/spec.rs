//! The JSON spec (`conf.json`), read with the Python-compatible JSON loader.
#![no_main]

use std::path::Path;

use stream_layered_image::pycompat::isotime;
use stream_layered_image::pycompat::json::{self as pyjson, PyValue};
use stream_layered_image::spec::Spec;
use stream_layered_image::tar::walk;

/// What a value dumps to must load back to a value that dumps the same, as
/// with Python's `json.loads(json.dumps(v, indent=4))`.
fn round_trip(value: &PyValue) {
    let text = pyjson::dumps_value_indent4(value);
    let again = pyjson::loads(text.as_bytes())
        .unwrap_or_else(|e| panic!("our own output does not load: {e:?}\n{text}"));
    assert_eq!(pyjson::dumps_value_indent4(&again), text);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = isotime::parse("2024-05-06T07:08:09.123456+00:00").unwrap();
    let Ok(spec) = Spec::parse(Path::new("spec.json"), data, now) else {
        return;
    };
    round_trip(&spec.config);
    round_trip(&spec.architecture);
    if let Some(tag) = &spec.repo_tag {
        round_trip(tag);
    }
    let _ = spec.created.isoformat();
    assert!(!walk::store_parents(&spec.store_dir).is_empty());
    assert_eq!(spec.store_layers.len(), spec.store_layer_paths.len());
    for (raw, norm) in spec.store_layers.iter().zip(&spec.store_layer_paths) {
        assert_eq!(raw.len(), norm.len());
        for path in norm {
            // Normalised and inside the store: checking again changes nothing.
            assert_eq!(
                &walk::check_store_path(path, &spec.store_dir).unwrap(),
                path
            );
        }
    }
});
