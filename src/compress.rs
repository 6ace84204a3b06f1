//! Per-layer compression for the OCI formats.
//!
//! Input: a [`Compression`] chosen on the command line and a layer's tar
//! bytes. Output: the compressed blob. Every layer is compressed on its own,
//! with a fixed configuration, so the compressed bytes depend only on the
//! layer's bytes, never on how many threads run or in which order layers
//! or chunks finish. That is what lets the hashing pass compress (in
//! parallel) to learn a blob's digest and size, and the streaming pass
//! compress again and reproduce exactly the same bytes.
//!
//! gzip is one member with a fixed header (no file name, mtime 0, OS byte
//! "unknown") whose deflate stream is cut, as pigz cuts it, into
//! [`CHUNK`]s at fixed offsets of the input: the pool compresses them in
//! parallel, each with the input just before it as its dictionary, and
//! each ends byte-aligned (a sync flush), so the chunks' outputs simply
//! follow each other. A chunk's bytes depend only on its input and the
//! input before it, never on the thread count; a layer smaller than one
//! chunk gives exactly the bytes plain deflate gives. Within a chunk,
//! data that is already compressed is not deflated: store paths hold
//! plenty of it (`.gz`, `.jar`, `.png`, `.woff2`, compressed firmware and
//! kernel modules), and deflate at level 6 spends ~30 ms per MB searching
//! it for matches that are not there, to write stored blocks in the end.
//! So each [`BLOCK`]-sized piece is tested first: one whose bytes are all
//! about equally frequent (see [`incompressible`], in integers so that
//! every machine decides alike) is written as stored blocks, and the
//! deflater restarts after it with the piece as its dictionary.
//!
//! zstd is written by the reference libzstd through the `zstd` crate,
//! single-threaded, without the content size (a streamed layer's size is
//! not known up front) and with a frame checksum.

use std::io::{self, Write};

use crate::error::{Error, Result};

/// The gzip level of `--compress gzip`: 5, as in podman, buildah and
/// skopeo (containers/image). On store paths it costs ~20% less CPU than
/// zlib's default of 6, for ~0.2% more bytes (see the README).
pub const DEFAULT_GZIP_LEVEL: i64 = 5;

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Layers are stored as plain tars.
    #[default]
    None,
    /// gzip at this level (0-9).
    Gzip(u32),
    /// zstd at this level (1-22).
    Zstd(i32),
}

impl Compression {
    /// Parses `none`, `gzip[:LEVEL]` or `zstd[:LEVEL]`.
    pub fn parse(text: &str) -> Result<Compression> {
        let (name, level) = match text.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (text, None),
        };
        let bad = |problem: &str| Error::Usage(format!("--compress {text:?}: {problem}"));
        let number = |lo: i64, hi: i64| -> Result<Option<i64>> {
            level
                .map(|l| match l.parse::<i64>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                    _ => Err(bad(&format!(
                        "the level must be a number from {lo} to {hi}"
                    ))),
                })
                .transpose()
        };
        match name {
            "none" if level.is_none() => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip(
                number(0, 9)?.unwrap_or(DEFAULT_GZIP_LEVEL) as u32,
            )),
            "zstd" => Ok(Compression::Zstd(number(1, 22)?.unwrap_or(3) as i32)),
            _ => Err(bad("expected none, gzip[:LEVEL] or zstd[:LEVEL]")),
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip(_) => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd(_) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// A writer that compresses into `inner`; call [`Encoder::finish`] at
    /// the end.
    pub fn encoder<W: Write>(self, inner: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::Plain(inner),
            Compression::Gzip(level) => Encoder::Gzip(Gzip::new(inner, level)?),
            Compression::Zstd(level) => {
                let mut e = zstd::stream::write::Encoder::new(inner, level)?;
                e.include_checksum(true)?;
                e.include_contentsize(false)?;
                Encoder::Zstd(e)
            }
        })
    }
}

/// A compressing writer (see [`Compression::encoder`]).
pub enum Encoder<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip.
    Gzip(Gzip<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the end of the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// Input is classified in pieces of this size, at fixed offsets.
pub const BLOCK: usize = 64 * 1024;

/// Input is compressed in chunks of this size (a whole number of pieces),
/// each by one thread of the compression pool.
pub const CHUNK: usize = 16 * BLOCK;

/// How much input before a piece is given to a fresh deflater as its
/// dictionary. Deflate refers back at most 32 KiB; twice that makes both
/// zlib and zlib-rs replace their window with the dictionary outright,
/// whatever it held before.
const DICTIONARY: usize = 64 * 1024;

const _: () = assert!(BLOCK >= DICTIONARY && CHUNK % BLOCK == 0);

/// A stored deflate block holds at most this many bytes.
const STORED_MAX: usize = 65_535;

/// Whether `piece` looks like compressed or random data, which deflate
/// cannot shrink. The test is the sum of the squared byte counts, whose
/// expectation for `n` uniformly random bytes is n²/256 + n·255/256: a
/// piece passes when its sum is at most n²/256 · 1.01 + n, so random bytes
/// pass at any length with room to spare, while machine code, text and
/// tables, whose byte frequencies are uneven (sums from 1.5 times the
/// uniform one up), do not. A piece that repeats a random pattern shorter
/// than ~18 KiB stays with deflate, whose window sees the repeats.
pub fn incompressible(piece: &[u8]) -> bool {
    if piece.len() < 4096 {
        return false;
    }
    // Four tables, so that runs of one byte value do not serialize on one
    // counter.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = piece.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let squares: u64 = (0..256)
        .map(|i| {
            let c = u64::from(counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i]);
            c * c
        })
        .sum();
    let n = piece.len() as u64;
    // sum(c^2) <= n^2 / 256 * 1.01 + n
    squares * 256 * 100 <= n * n * 101 + n * 256 * 100
}

/// The threads that compress chunks, apart from rayon's global pool: the
/// threads that wait for chunks are often that pool's workers (hashing
/// and pushing layers), and a pool whose workers block on work queued
/// behind them could stall. These threads never wait on anything.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("gzip-{i}"))
            .build()
            .expect("creating the compression threads")
    })
}

/// Compresses one chunk: the raw deflate blocks for `data`, byte-aligned
/// at the end, final if `last`. `history` is the input just before
/// `data`: none, or [`DICTIONARY`] bytes. The bytes depend on nothing else.
fn deflate_chunk(level: u32, history: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut deflater = flate2::Compress::new(flate2::Compression::new(level), false);
    // Whether the deflater holds input not yet flushed out.
    let mut deflating = false;
    // Whether the deflater's window differs from the stream's history:
    // at the start of a chunk, and after stored pieces.
    let mut stale = !history.is_empty();
    for (i, piece) in data.chunks(BLOCK).enumerate() {
        if level == 0 || incompressible(piece) {
            if deflating {
                run_deflate(&mut deflater, &[], &mut out, flate2::FlushCompress::Sync)?;
                deflating = false;
            }
            stale = true;
            for stored in piece.chunks(STORED_MAX) {
                let len = stored.len() as u16;
                // Not final, type 00; the stream is byte-aligned here.
                out.push(0);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(!len).to_le_bytes());
                out.extend_from_slice(stored);
            }
        } else {
            if stale {
                let before = i * BLOCK;
                let dictionary = if before == 0 {
                    history
                } else {
                    &data[before - DICTIONARY..before]
                };
                deflater
                    .set_dictionary(dictionary)
                    .map_err(io::Error::other)?;
                stale = false;
            }
            run_deflate(&mut deflater, piece, &mut out, flate2::FlushCompress::None)?;
            deflating = true;
        }
    }
    if last {
        if deflating {
            run_deflate(&mut deflater, &[], &mut out, flate2::FlushCompress::Finish)?;
        } else {
            // An empty final stored block.
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
    } else if deflating {
        run_deflate(&mut deflater, &[], &mut out, flate2::FlushCompress::Sync)?;
    }
    Ok(out)
}

/// Runs `deflater` over `input` with `flush` until it has taken all of it
/// and, for a flush, written everything out.
fn run_deflate(
    deflater: &mut flate2::Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(BLOCK);
        }
        let before = deflater.total_in();
        let status = deflater
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        input = &input[(deflater.total_in() - before) as usize..];
        let done = match flush {
            flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
            flate2::FlushCompress::None => input.is_empty(),
            // zlib's rule: a flush is complete once it returns with output
            // space left over.
            _ => input.is_empty() && out.len() < out.capacity(),
        };
        if done {
            return Ok(());
        }
    }
}

/// A gzip writer (see the module documentation): one member, whose
/// deflate stream is the concatenation of independently compressed
/// chunks, each compressed on the pool while the next is filled.
pub struct Gzip<W: Write> {
    inner: W,
    level: u32,
    crc: crc32fast::Hasher,
    total: u64,
    /// Input not yet handed to the pool: less than one [`CHUNK`].
    chunk: Vec<u8>,
    /// The last [`DICTIONARY`] bytes before `chunk`.
    history: Vec<u8>,
    /// Chunks being compressed, oldest first.
    in_flight: InFlight,
}

impl<W: Write> Gzip<W> {
    fn new(mut inner: W, level: u32) -> io::Result<Gzip<W>> {
        // The header: no name, mtime 0, the extra flags gzip sets for its
        // fastest and best levels, OS "unknown".
        let extra_flags = match level {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255])?;
        Ok(Gzip {
            inner,
            level,
            crc: crc32fast::Hasher::new(),
            total: 0,
            chunk: Vec::with_capacity(CHUNK),
            history: Vec::with_capacity(DICTIONARY),
            in_flight: Default::default(),
        })
    }

    /// Hands the filled chunk to the pool, once a chunk permit is free
    /// (writing out this writer's own oldest chunks to free one), so that
    /// however many layers are compressed at once, memory stays at a few
    /// chunks per compression thread.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while !Permits::get().try_take() {
            if self.in_flight.queue.is_empty() {
                // Every permit is held by chunks of other writers, which
                // the pool finishes without waiting for anything.
                Permits::get().take();
                break;
            }
            self.write_oldest()?;
        }
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        self.crc.update(&data);
        self.total += data.len() as u64;
        let history = std::mem::take(&mut self.history);
        if !last {
            self.history.extend_from_slice(&data[CHUNK - DICTIONARY..]);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let level = self.level;
        pool().spawn(move || {
            let _ = tx.send(deflate_chunk(level, &history, &data, last));
        });
        self.in_flight.queue.push_back(rx);
        while last && !self.in_flight.queue.is_empty() {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.queue.pop_front() {
            let compressed = rx.recv();
            Permits::get().give();
            let compressed =
                compressed.map_err(|_| io::Error::other("a compression thread stopped"))??;
            self.inner.write_all(&compressed)?;
        }
        Ok(())
    }

    /// Writes the rest of the input, the final block and the trailer, and
    /// returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        let mut trailer = [0; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE: the input's length modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// A writer's chunks in the pool. Dropped early (an error before
/// `finish`), it gives their permits back.
#[derive(Default)]
struct InFlight {
    queue: std::collections::VecDeque<crossbeam_channel::Receiver<io::Result<Vec<u8>>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for _ in self.queue.drain(..) {
            Permits::get().give();
        }
    }
}

/// The chunks that may be in the pool or waiting to be written, across
/// all writers: two per compression thread and two more.
struct Permits {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Permits {
    fn get() -> &'static Permits {
        static PERMITS: std::sync::OnceLock<Permits> = std::sync::OnceLock::new();
        PERMITS.get_or_init(|| Permits {
            free: std::sync::Mutex::new(2 * pool().current_num_threads() + 2),
            freed: std::sync::Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_take(&self) -> bool {
        let mut free = self.lock();
        let ok = *free > 0;
        if ok {
            *free -= 1;
        }
        ok
    }

    fn take(&self) {
        let mut free = self.lock();
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
    }

    fn give(&self) {
        *self.lock() += 1;
        self.freed.notify_one();
    }
}

impl<W: Write> Write for Gzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..take]);
        if self.chunk.len() == CHUNK {
            self.dispatch(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Cutting a chunk short would make the bytes depend on the
        // caller's timing: what is compressed is passed on, the rest
        // waits.
        while let Some(rx) = self.in_flight.queue.front() {
            if rx.is_empty() {
                break;
            }
            self.write_oldest()?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = c.encoder(Vec::new()).unwrap();
        for piece in data.chunks(1000) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn parses_levels() {
        assert_eq!(Compression::parse("none").unwrap(), Compression::None);
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip(5));
        assert_eq!(Compression::parse("gzip:6").unwrap(), Compression::Gzip(6));
        assert_eq!(
            Compression::parse("zstd:19").unwrap(),
            Compression::Zstd(19)
        );
        assert!(Compression::parse("zstd:0").is_err());
        assert!(Compression::parse("gzip:x").is_err());
        assert!(Compression::parse("xz").is_err());
    }

    #[test]
    fn deterministic_and_round_trips() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        for c in [Compression::Gzip(6), Compression::Zstd(3)] {
            let a = compress(c, &data);
            assert_eq!(a, compress(c, &data));
            let back = match c {
                Compression::Gzip(_) => {
                    let mut out = Vec::new();
                    io::copy(&mut flate2::read::GzDecoder::new(&a[..]), &mut out).unwrap();
                    out
                }
                _ => zstd::stream::decode_all(&a[..]).unwrap(),
            };
            assert_eq!(back, data);
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "store", "path", "layer", "nix", "closure", "image", "\n", "0x1f",
        ];
        let mut out = Vec::new();
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            out.push(b' ');
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn gunzip(blob: &[u8]) -> Vec<u8> {
        let mut decoder = flate2::read::GzDecoder::new(blob);
        let mut out = Vec::new();
        io::copy(&mut decoder, &mut out).unwrap();
        // One member, nothing after it.
        let mut rest = Vec::new();
        io::copy(&mut decoder.into_inner(), &mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "{} bytes after the gzip member",
            rest.len()
        );
        out
    }

    #[test]
    fn classifies_pieces() {
        assert!(incompressible(&noise(BLOCK, 1)));
        assert!(incompressible(&noise(8192, 2)));
        assert!(!incompressible(&text(BLOCK)));
        assert!(!incompressible(&vec![0; BLOCK]));
        assert!(!incompressible(&noise(4000, 3)), "too short to judge");
        // A random pattern deflate's window can see repeating.
        assert!(!incompressible(&noise(1024, 4).repeat(64)));
        // Half random, half text.
        let mut half = noise(BLOCK / 2, 5);
        half.extend_from_slice(&text(BLOCK / 2));
        assert!(!incompressible(&half));
    }

    #[test]
    fn compressible_data_gives_exactly_plain_deflates_bytes() {
        let data = text(5 * BLOCK + 1234);
        for level in [1, 6, 9] {
            let mut plain = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(Vec::new(), flate2::Compression::new(level));
            plain.write_all(&data).unwrap();
            let plain = plain.finish().unwrap();
            assert_eq!(
                compress(Compression::Gzip(level), &data),
                plain,
                "level {level}"
            );
        }
        for level in [0, 6] {
            assert!(gunzip(&compress(Compression::Gzip(level), b"")).is_empty());
        }
    }

    /// Several chunks: the pigz-style cut costs little ratio, because
    /// every chunk starts with the input before it as its dictionary.
    #[test]
    fn chunks_keep_their_history() {
        let data = text(5 * CHUNK + 777);
        let blob = compress(Compression::Gzip(6), &data);
        assert_eq!(gunzip(&blob), data);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        plain.write_all(&data).unwrap();
        let plain = plain.finish().unwrap();
        assert!(
            blob.len() <= plain.len() + plain.len() / 100 + 64,
            "{} bytes, plain deflate {}",
            blob.len(),
            plain.len()
        );
        // A random 16 KiB pattern, repeated. Matches are at most 258
        // bytes long, so a chunk's worth of them costs ~16 KB; a chunk
        // without its history would spell the pattern out again, another
        // 16 KB: 6 chunks would take ~190 KB, not ~115 KB.
        let data = noise(16 * 1024, 23).repeat(6 * CHUNK / (16 * 1024));
        let blob = compress(Compression::Gzip(6), &data);
        assert_eq!(gunzip(&blob), data);
        assert!(blob.len() < 150_000, "{} bytes", blob.len());
    }

    /// The writer's bytes are the chunks' bytes in order, whatever the
    /// pool's size: compressing the chunks one by one, here, on this
    /// thread, gives the same member.
    #[test]
    fn chunks_compressed_in_parallel_are_the_serial_chunks() {
        let mut data = noise(CHUNK + 3 * BLOCK, 21);
        data.extend_from_slice(&text(2 * CHUNK + 5));
        data.extend_from_slice(&noise(CHUNK, 22));
        let mut serial = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let history: &[u8] = if i == 0 {
                &[]
            } else {
                &chunks[i - 1][CHUNK - DICTIONARY..]
            };
            let last = i + 1 == chunks.len();
            serial.extend(deflate_chunk(6, history, chunk, last).unwrap());
        }
        // flate2's CRC, a second implementation of the one the writer uses.
        let mut crc = flate2::Crc::new();
        crc.update(&data);
        serial.extend_from_slice(&crc.sum().to_le_bytes());
        serial.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(compress(Compression::Gzip(6), &data), serial);
        assert_eq!(gunzip(&serial), data);
    }

    #[test]
    fn incompressible_data_is_stored() {
        let data = noise(3 * BLOCK + 100, 9);
        let blob = compress(Compression::Gzip(6), &data);
        assert_eq!(gunzip(&blob), data);
        // Header, three pieces of two stored blocks each (5 bytes of
        // framing apiece), the short tail deflated, the trailer.
        assert!(
            blob.len() < data.len() + 10 + 6 * 5 + 200 + 8,
            "{}",
            blob.len()
        );
        // Level 0 stores everything, including the tail.
        let blob = compress(Compression::Gzip(0), &data);
        assert_eq!(gunzip(&blob), data);
        assert_eq!(blob.len(), 10 + data.len() + 7 * 5 + 5 + 8);
    }

    #[test]
    fn mixed_data_round_trips_and_compresses() {
        let mut data = Vec::new();
        for (i, len) in [BLOCK * 2 + 17, BLOCK * 3, 100, BLOCK * 2, 5000]
            .into_iter()
            .enumerate()
        {
            if i % 2 == 0 {
                data.extend_from_slice(&noise(len, i as u64 + 11));
            } else {
                data.extend_from_slice(&text(len));
            }
        }
        let blob = compress(Compression::Gzip(6), &data);
        assert_eq!(gunzip(&blob), data);
        let random_bytes = BLOCK * 2 + 17 + 100 + 5000;
        assert!(blob.len() < random_bytes + BLOCK, "{} bytes", blob.len());
    }

    /// Many layers compressed at once share the chunk permits without
    /// stalling, and each gets its own bytes; a writer dropped halfway
    /// (an error in its layer) gives its permits back.
    #[test]
    fn many_writers_at_once_share_the_pool() {
        let data: Vec<Vec<u8>> = (0..12u64)
            .map(|i| {
                let mut d = noise(CHUNK + 5 * BLOCK, i + 100);
                d.extend_from_slice(&text(2 * CHUNK + i as usize));
                d
            })
            .collect();
        let alone: Vec<Vec<u8>> = data
            .iter()
            .map(|d| compress(Compression::Gzip(1), d))
            .collect();
        let together: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = data
                .iter()
                .map(|d| scope.spawn(|| compress(Compression::Gzip(1), d)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(alone == together, "bytes changed when compressed together");
        let mut dropped = Compression::Gzip(1).encoder(Vec::new()).unwrap();
        dropped.write_all(&data[0]).unwrap();
        drop(dropped);
        // Every permit comes back once the other tests' writers are done.
        let all = 2 * pool().current_num_threads() + 2;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while *Permits::get().lock() != all {
            assert!(
                std::time::Instant::now() < deadline,
                "permits lost: {} of {all} free",
                *Permits::get().lock()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Whatever the mix of data and however it is written, the output
        /// decodes to the input and depends only on the input.
        #[test]
        fn gzip_round_trips_whatever_the_writes(
            segments in proptest::collection::vec((0usize..3, 1usize..600_000), 0..6),
            seed in 1u64..u64::MAX,
            writes in proptest::collection::vec(1usize..1_500_000, 1..8),
            level in 0u32..=9,
        ) {
            let mut data = Vec::new();
            for (i, (kind, len)) in segments.iter().enumerate() {
                match kind {
                    0 => data.extend_from_slice(&noise(*len, seed.wrapping_add(i as u64))),
                    1 => data.extend_from_slice(&text(*len)),
                    _ => data.extend(std::iter::repeat_n(i as u8, *len)),
                }
            }
            let reference = compress(Compression::Gzip(level), &data);
            let mut e = Compression::Gzip(level).encoder(Vec::new()).unwrap();
            let mut rest = &data[..];
            for size in writes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = (*size).min(rest.len());
                e.write_all(&rest[..n]).unwrap();
                e.flush().unwrap();
                rest = &rest[n..];
            }
            let blob = e.finish().unwrap();
            proptest::prop_assert_eq!(&blob, &reference);
            proptest::prop_assert_eq!(gunzip(&blob), data);
        }
    }
}
