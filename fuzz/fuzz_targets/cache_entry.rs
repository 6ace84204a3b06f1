//! A push cache entry: whatever a damaged or hostile cache file holds, it
//! is read without a panic, and one that is trusted claims exactly what its
//! checksum covers.
#![no_main]

use stream_layered_image::compress::Compression;
use stream_layered_image::digest::Sha256Digest;
use stream_layered_image::registry::cache;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let diff_id = Sha256Digest::of(b"layer");
    for compression in [Compression::None, Compression::Gzip(5), Compression::Zstd(3)] {
        if let Ok(entry) = cache::parse_entry(data, &diff_id, compression) {
            // Trusted: the same claim written anew reads back the same.
            let dir = tempfile::tempdir().unwrap();
            let c = cache::Cache::open(dir.path()).unwrap();
            c.put(&diff_id, compression, entry.blob, "h:1/r").unwrap();
            match c.get(&diff_id, compression) {
                cache::Lookup::Hit(again) => {
                    assert_eq!(again.blob.digest, entry.blob.digest);
                    assert_eq!(again.blob.size, entry.blob.size);
                }
                other => panic!("a written entry reads back as {other:?}"),
            }
        }
    }
});
