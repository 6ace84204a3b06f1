//! Gzip-compressed references graphs: hostile gzip streams as they come,
//! and any other input compressed first, which must parse exactly as the
//! uncompressed input does.
#![no_main]

use std::io::Write;

use stream_layered_image::layering::graph;

#[path = "common/graph.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.starts_with(&[0x1f, 0x8b]) {
        common::check(data);
        return;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    let compressed = gz.finish().unwrap();
    let plain = graph::parse_raw(data, "<fuzz>");
    let unpacked = graph::parse_raw(&compressed, "<fuzz>");
    match (plain, unpacked) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "compressing the input changed the graph");
            common::check_raw(b);
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("compressing the input changed the outcome: {a:?} vs {b:?}"),
    }
});
