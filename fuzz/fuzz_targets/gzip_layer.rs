//! The gzip layer writer: whatever the data (built from the input as runs
//! of random, repeated and text-like bytes, up to two chunks and a piece) and
//! however it is written, the member decodes to the data, and the bytes do
//! not depend on how the writes were cut.
#![no_main]

use std::io::{Read, Write};

use stream_layered_image::compress::{Compression, BLOCK, CHUNK};

/// Bytes built from the input: each 4-byte group is one run (kind, length
/// in half-KiB, a seed, extra bytes), so that short inputs cross chunk
/// boundaries; at most two chunks and a piece, to keep runs fast.
fn data_from(input: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for group in input.chunks(4) {
        let [kind, kib, seed, extra] = [0, 1, 2, 3].map(|i| group.get(i).copied().unwrap_or(0));
        let len = usize::from(kib) * 512 + usize::from(extra);
        let mut x = u64::from(seed) << 8 | u64::from(extra) | 1;
        match kind % 4 {
            0 => data.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })),
            1 => data.extend(std::iter::repeat_n(seed, len)),
            2 => data.extend(b"/nix/store/abc-hello/bin ".iter().cycle().take(len)),
            _ => {
                // Repeat the last `seed` KiB (or less): long-range matches,
                // also across chunk boundaries.
                let back = (usize::from(seed) * 1024).clamp(1, data.len().max(1));
                let start = data.len().saturating_sub(back);
                for i in 0..len {
                    let b = data.get(start + i % back).copied().unwrap_or(0);
                    data.push(b);
                }
            }
        }
        if data.len() > 2 * CHUNK + BLOCK {
            data.truncate(2 * CHUNK + BLOCK);
            break;
        }
    }
    data
}

fn compress(level: u32, data: &[u8], write_size: usize) -> Vec<u8> {
    let mut e = Compression::Gzip(level).encoder(Vec::new()).unwrap();
    for piece in data.chunks(write_size) {
        e.write_all(piece).unwrap();
    }
    e.finish().unwrap()
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    // Levels 0, 1 and 5 keep runs fast; the level does not change the
    // chunking or the stored pieces.
    let level = [0, 1, 5][usize::from(control % 3)];
    let write_size = 1 + usize::from(control / 3) * 997;
    let data = data_from(rest);
    let blob = compress(level, &data, write_size);
    assert_eq!(blob, compress(level, &data, CHUNK + 1), "bytes depend on the writes");
    let mut decoder = flate2::read::GzDecoder::new(&blob[..]);
    let mut back = Vec::new();
    decoder.read_to_end(&mut back).expect("the member decodes");
    assert!(back == data, "decoded {} bytes, wrote {}", back.len(), data.len());
    let mut rest = Vec::new();
    decoder.into_inner().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the member");
});
