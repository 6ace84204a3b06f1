//! Per-layer compression for the OCI formats.
//!
//! Input: a [`Compression`] chosen on the command line and a layer's tar
//! bytes. Output: the compressed blob. Every layer is compressed on its own,
//! by one thread, with a fixed configuration, so the compressed bytes depend
//! only on the layer's bytes, never on how many threads run or in which
//! order layers finish. That is what lets the hashing pass compress (in
//! parallel) to learn a blob's digest and size, and the streaming pass
//! compress again and reproduce exactly the same bytes.
//!
//! gzip is written by flate2 (zlib-rs backend) with a fixed header: no file
//! name, mtime 0, OS byte "unknown". zstd is written by the reference
//! libzstd through the `zstd` crate, single-threaded, without the content
//! size (a streamed layer's size is not known up front) and with a frame
//! checksum.

use std::io::{self, Write};

use crate::error::{Error, Result};

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
            "gzip" => Ok(Compression::Gzip(number(0, 9)?.unwrap_or(6) as u32)),
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
            Compression::Gzip(level) => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(inner, flate2::Compression::new(level)),
            ),
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
    Gzip(flate2::write::GzEncoder<W>),
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
        assert_eq!(Compression::parse("gzip").unwrap(), Compression::Gzip(6));
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
}
