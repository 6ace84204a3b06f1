//! A `Write` adapter that hashes and counts what passes through it.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lowercase hex form.
    pub fn hex(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Sha256Digest(out))
    }

    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Passes writes on to `inner` while hashing and counting them.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Digest and byte count of everything written so far, and the writer.
    pub fn finish(self) -> (Sha256Digest, u64, W) {
        (
            Sha256Digest(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes writes on to `inner` while counting them and, optionally, taking a
/// fast non-cryptographic checksum (XXH3) of them.
///
/// The streaming pass uses it instead of a second SHA-256: all it must
/// establish is that it wrote the same bytes as the hashing pass, and XXH3
/// does that at memory speed.
pub struct CountingWriter<W> {
    inner: W,
    count: u64,
    checksum: Option<xxhash_rust::xxh3::Xxh3>,
}

impl<W: Write> CountingWriter<W> {
    /// Counts writes to `inner`; checksums them too if `checksum`.
    pub fn new(inner: W, checksum: bool) -> Self {
        CountingWriter {
            inner,
            count: 0,
            checksum: checksum.then(xxhash_rust::xxh3::Xxh3::new),
        }
    }

    /// Bytes written and their checksum (0 when not checksumming).
    pub fn finish(self) -> (u64, u64) {
        (self.count, self.checksum.map_or(0, |c| c.digest()))
    }

    /// Bytes written, their checksum (0 when not checksumming), and the
    /// inner writer.
    pub fn into_parts(self) -> (u64, u64, W) {
        (
            self.count,
            self.checksum.map_or(0, |c| c.digest()),
            self.inner,
        )
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(c) = &mut self.checksum {
            c.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        if let Some(c) = &mut self.checksum {
            c.update(buf);
        }
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a single pass over a layer hashes, in stream order: its SHA-256
/// (the diff_id), its XXH3-128, or both.
///
/// `stream-layered-image digest` takes both; a one-pass stream of a layer
/// whose record holds an XXH3-128 takes only that, which costs a tenth of
/// a SHA-256 (see the README's "Layer digests" section for why it is
/// enough to stand for the recorded diff_id).
pub struct LayerHasher {
    sha256: Option<Sha256>,
    xxh3: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

/// What a [`LayerHasher`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSums {
    /// The SHA-256, if it was asked for.
    pub sha256: Option<Sha256Digest>,
    /// The XXH3-128, if it was asked for.
    pub xxh3: Option<u128>,
}

impl LayerHasher {
    /// A hasher taking the SHA-256 if `sha256`, the XXH3-128 if `xxh3`.
    pub fn new(sha256: bool, xxh3: bool) -> Self {
        LayerHasher {
            sha256: sha256.then(Sha256::new),
            xxh3: xxh3.then(|| Box::new(xxhash_rust::xxh3::Xxh3::new())),
        }
    }

    /// Hashes the next bytes of the layer.
    pub fn update(&mut self, bytes: &[u8]) {
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
        if let Some(xxh3) = &mut self.xxh3 {
            xxh3.update(bytes);
        }
    }

    /// The sums of everything hashed.
    pub fn finish(self) -> LayerSums {
        LayerSums {
            sha256: self.sha256.map(|h| Sha256Digest(h.finalize().into())),
            xxh3: self.xxh3.map(|h| h.digest128()),
        }
    }
}

impl std::fmt::Debug for LayerHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerHasher")
            .field("sha256", &self.sha256.is_some())
            .field("xxh3", &self.xxh3.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (digest, n, inner) = w.finish();
        assert_eq!(n, 3);
        assert_eq!(inner, b"abc");
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&digest.hex()), Some(digest));
        assert_eq!(Sha256Digest::from_hex("zz"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// However a layer's bytes are cut into updates, the sums are
        /// those of the whole.
        #[test]
        fn layer_sums_do_not_depend_on_the_cuts(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..20_000),
            cuts in proptest::collection::vec(0usize..20_000, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut hasher = LayerHasher::new(true, true);
            let mut at = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                hasher.update(&data[at..cut]);
                at = cut;
            }
            let sums = hasher.finish();
            proptest::prop_assert_eq!(sums.sha256, Some(Sha256Digest::of(&data)));
            proptest::prop_assert_eq!(sums.xxh3, Some(xxhash_rust::xxh3::xxh3_128(&data)));
            let only = LayerHasher::new(false, true);
            proptest::prop_assert_eq!(only.finish().sha256, None);
        }
    }
}
