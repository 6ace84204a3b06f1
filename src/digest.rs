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
}
