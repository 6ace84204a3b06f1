//! The `from_image` reader: a docker-archive, plain or gzipped, opened,
//! checked, and each layer read through to its end with its header
//! re-encoded, as the image writer does.
#![no_main]

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use stream_layered_image::image::base::BaseImage;
use stream_layered_image::tar::header::{self as tarheader, Header};

/// The reader takes a path: one scratch file per fuzzing process, in
/// `$TMPDIR` (which `scripts/fuzz` points at a directory it removes).
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("base-image-fuzz-{}.tar", std::process::id()))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).unwrap();
    let Ok(image) = BaseImage::open(path) else {
        return;
    };
    for layer in &image.layers {
        let mut header = Vec::new();
        tarheader::encode(
            &Header {
                name: &layer.header.name,
                mode: layer.header.mode,
                uid: layer.header.uid,
                gid: layer.header.gid,
                size: layer.size,
                mtime: layer.header.mtime,
                entry_type: layer.header.entry_type(),
                linkname: &layer.header.linkname,
                uname: &layer.header.uname,
                gname: &layer.header.gname,
                pax: &layer.header.pax,
            },
            &mut header,
        );
        assert_eq!(header.len() % tarheader::BLOCK, 0);
        let Ok(mut reader) = image.layer_reader(layer) else {
            continue;
        };
        // The reader yields exactly `size` bytes or fails; a size is only
        // accepted if the archive can hold it, so this stays small.
        let mut count = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    assert_eq!(count, layer.size, "a layer ended early without an error");
                    break;
                }
                Ok(n) => {
                    count += n as u64;
                    assert!(count <= layer.size, "a layer yielded more than its size");
                }
                Err(_) => break,
            }
        }
    }
});
