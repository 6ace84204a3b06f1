//! Where a layer's bytes come from, and producing them: once into a hasher,
//! then again, checked against that first pass, for each sink that needs
//! them.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::compress::{Compression, Encoder};
use crate::digest::{CountingWriter, HashingWriter, LayerHasher, Sha256Digest};
use crate::error::{Error, Result};
use crate::image::base::{BaseImage, BaseLayer};
use crate::image::custom::CustomLayer;
use crate::image::oci::BlobRef;
use crate::progress::{LayerProgress, Meter};
use crate::spec::Spec;
use crate::tar::filedata;
use crate::tar::layer::{self, Contents};
use crate::tar::relay::{relay, relay_direct, DirectOutput};
use crate::tar::walk::{self, Entry, FileIdentity};

use super::Hashed;

/// Where a layer's bytes come from.
pub(crate) enum Source<'a> {
    /// A layer of the base image, copied as it is.
    Base(&'a BaseImage, &'a BaseLayer),
    /// Store paths, encoded by [`layer::encode`].
    Store {
        /// The paths as the spec wrote them.
        spec_paths: &'a [String],
        /// The same, normalised.
        paths: &'a [String],
        /// Filled in by the walk, which runs in the worker pool (or, for
        /// a layer known from `store_layer_digests`, when first needed).
        entries: OnceLock<Vec<Entry>>,
        /// The position in `store_layers`.
        index: usize,
    },
    /// The customisation layer's ready `layer.tar`.
    Custom(&'a CustomLayer),
}

/// What the layer encoder and the copies need besides the source.
pub(crate) struct Context<'a> {
    pub spec: &'a Spec,
    /// The store's parent directories, which start every store layer.
    pub parents: &'a [String],
    /// How stored blobs are compressed.
    pub compression: Compression,
}

impl Source<'_> {
    /// Whether the layer is copied whole from a file (base and
    /// customisation layers), so one checksum covers it; a store layer's
    /// files are checked one by one as they are encoded.
    pub fn whole_layer_sum(&self) -> bool {
        !matches!(self, Source::Store { .. })
    }

    /// What the layer holds, for progress lines.
    pub fn describe(&self) -> String {
        match self {
            Source::Base(_, layer) => format!("base image layer {}", lossy(&layer.header.name)),
            Source::Store { spec_paths, .. } => match &spec_paths[..] {
                [] => "no store paths".into(),
                [only] => only.clone(),
                [first, rest @ ..] => format!("{first} and {} more store paths", rest.len()),
            },
            Source::Custom(custom) => format!("customisation layer {}", custom.dir),
        }
    }

    /// What the layer holds, for its bar: the name of its largest store
    /// path once walked (with how many others come with it), else as
    /// [`Source::describe`] says.
    pub fn label(&self) -> String {
        let Source::Store {
            spec_paths,
            paths,
            entries,
            ..
        } = self
        else {
            return self.describe();
        };
        let Some(entries) = entries.get() else {
            return self.describe();
        };
        if paths.len() < 2 {
            return spec_paths
                .first()
                .map_or_else(|| self.describe(), |p| store_name(p));
        }
        // The walk lists each path's entries together, in the spec's order.
        let mut sizes = vec![0u64; paths.len()];
        let mut k = 0;
        for e in entries {
            while k + 1 < paths.len() && !under(&e.path, paths[k].as_bytes()) {
                k += 1;
            }
            if let walk::EntryKind::File(id) = &e.kind {
                sizes[k] += id.size;
            }
        }
        let largest = (0..paths.len())
            .max_by_key(|&i| (sizes[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        format!(
            "{} and {} more",
            store_name(&spec_paths[largest]),
            paths.len() - 1
        )
    }

    /// A rough size, used only to start the longest hashing jobs first.
    pub fn estimate_size(&self) -> u64 {
        match self {
            Source::Base(_, layer) => layer.size,
            Source::Custom(custom) => custom.meta.len(),
            Source::Store { entries, .. } => entries
                .get()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|e| match &e.kind {
                    walk::EntryKind::File(id) => 512 + id.size,
                    _ => 512,
                })
                .sum(),
        }
    }

    /// Walks a store layer (other layers need no walk) and returns the
    /// number of entries it found.
    pub fn walk(&self) -> Result<Option<usize>> {
        if let Source::Store { paths, entries, .. } = self {
            let walked = walk::walk_paths(paths)?;
            let count = walked.len();
            let _ = entries.set(walked);
            return Ok(Some(count));
        }
        Ok(None)
    }

    /// The walked entries of a store layer, walking it now if the
    /// pipeline did not: a layer known from its record is walked only
    /// when its bytes are wanted.
    fn entries(&self) -> Result<&[Entry]> {
        match self {
            Source::Store { entries, .. } => {
                if entries.get().is_none() {
                    self.walk()?;
                }
                Ok(entries.get().expect("walked above"))
            }
            _ => Ok(&[]),
        }
    }

    /// For a store layer that the spec's `store_layer_digests` records:
    /// the hashing pass's result, from the record, without reading the
    /// layer. `None` when there is no record, or when `blob` asks for a
    /// blob the record lacks (the layer is then hashed as usual).
    pub fn recorded(&self, cx: &Context<'_>, blob: Option<Compression>) -> Option<Hashed> {
        let Source::Store { index, .. } = self else {
            return None;
        };
        let record = cx.spec.store_layer_digests.as_ref()?.get(*index)?;
        let blob = match blob {
            Some(c) => Some((record.blob(c)?, 0)),
            // Known for free: a push with a cache can still ask for it.
            None => record.blob(cx.compression).map(|b| (b, 0)),
        };
        Some(Hashed {
            digest: record.diff_id,
            size: record.size,
            sums: Vec::new(),
            blob,
            recorded: Some(*index),
        })
    }

    /// A store layer hashed despite its record (which lacked the blob
    /// asked for): the record must still hold.
    pub fn check_hashed(&self, cx: &Context<'_>, hashed: &Hashed, layer_no: usize) -> Result<()> {
        match self.recorded(cx, None) {
            Some(record) => self.check_record(
                cx,
                &record,
                layer_no,
                "its diff_id",
                (record.digest, record.size),
                (hashed.digest, hashed.size),
            ),
            None => Ok(()),
        }
    }

    /// Compares what a layer's bytes turned out to be with its record.
    fn check_record(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        layer_no: usize,
        what: &str,
        expected: (Sha256Digest, u64),
        actual: (Sha256Digest, u64),
    ) -> Result<()> {
        if expected == actual {
            return Ok(());
        }
        let show = |(digest, size): (Sha256Digest, u64)| format!("sha256:{digest} ({size} bytes)");
        Err(self.record_mismatch(cx, hashed, layer_no, what, show(expected), show(actual)))
    }

    fn record_mismatch(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        layer_no: usize,
        what: &str,
        expected: String,
        actual: String,
    ) -> Error {
        let index = match self {
            Source::Store { index, .. } => *index,
            _ => hashed.recorded.unwrap_or_default(),
        };
        if let Some(entry) = record_of(cx, hashed).and_then(|r| r.cached.clone()) {
            return Error::CachedRecordMismatch {
                layer: layer_no,
                entry,
                what: what.to_owned(),
                expected,
                actual,
            };
        }
        Error::RecordMismatch {
            layer: layer_no,
            key: format!("{}[{index}]", crate::record::SPEC_KEY),
            what: what.to_owned(),
            expected,
            actual,
        }
    }

    /// The hashing pass: the layer's digest and size, the checksums the
    /// later passes must reproduce, and with `blob` the stored blob that
    /// `blob`'s compression makes of it.
    /// Counts the bytes into `meter`.
    pub fn hash(
        &self,
        cx: &Context<'_>,
        blob: Option<Compression>,
        meter: &LayerProgress,
    ) -> Result<Hashed> {
        let blob_sink = Meter::new(BlobSink::new(blob)?, meter);
        match self {
            Source::Store { .. } => {
                let mut sink = HashingWriter::new(blob_sink);
                let mut sums = Vec::new();
                layer::encode(
                    cx.parents,
                    self.entries()?,
                    &cx.spec.stamp,
                    Contents::Record(&mut sums),
                    &mut sink,
                )?;
                let (digest, size, blob) = sink.finish();
                Ok(Hashed {
                    digest,
                    size,
                    sums,
                    blob: blob.finish().finish()?,
                    recorded: None,
                })
            }
            Source::Base(..) | Source::Custom(_) => {
                let mut sink = HashingWriter::new(CountingWriter::new(blob_sink, true));
                self.copy_whole(&mut sink)?;
                let (digest, size, counted) = sink.finish();
                self.check_claimed_digest(&digest)?;
                let (_, sum, blob) = counted.into_parts();
                Ok(Hashed {
                    digest,
                    size,
                    sums: vec![sum],
                    blob: blob.finish().finish()?,
                    recorded: None,
                })
            }
        }
    }

    /// A base layer's bytes must have the diff_id its image states, the
    /// customisation layer's the sha256 its `checksum` file states.
    fn check_claimed_digest(&self, digest: &Sha256Digest) -> Result<()> {
        match self {
            Source::Base(base, layer) if *digest != layer.diff_id => Err(Error::BaseImage {
                path: base.path().to_owned(),
                problem: format!(
                    "layer {} has digest sha256:{digest}, but its diff_id is sha256:{}",
                    lossy(&layer.header.name),
                    layer.diff_id
                ),
            }),
            Source::Custom(custom) if *digest != custom.checksum => Err(Error::Customisation {
                dir: PathBuf::from(&custom.dir),
                problem: format!(
                    "layer.tar has digest {digest}, but \"checksum\" says {}",
                    custom.checksum
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Writes the layer's tar into `out`, checked against the hashing
    /// pass: on a producer thread through the relay for a store layer
    /// (splicing large files into `direct` where given), copied for the
    /// others. Returns the number of bytes written, those spliced
    /// included.
    pub fn produce(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        layer_no: usize,
        out: &mut dyn Write,
        direct: Option<&DirectOutput>,
    ) -> Result<u64> {
        let mut sink = CountingWriter::new(out, self.whole_layer_sum());
        let mut spliced = 0;
        let mut recorded = stream_hasher(cx, hashed);
        match self {
            Source::Store { .. } => {
                let entries = self.entries()?;
                (_, spliced) = relay_direct(&mut sink, direct, |w| {
                    layer::encode(
                        cx.parents,
                        entries,
                        &cx.spec.stamp,
                        contents(hashed, recorded.as_mut()),
                        w,
                    )
                })?;
            }
            _ => self.copy_whole(&mut sink)?,
        }
        let (counted, sum) = sink.finish();
        let size = counted + spliced;
        if let Some(hasher) = recorded {
            self.check_streamed_record(cx, hashed, layer_no, hasher, size)?;
        }
        self.check_reproduced(hashed, layer_no, size, sum)?;
        Ok(size)
    }

    /// Like [`Source::produce`], but writes into `out` from this thread:
    /// for callers that already run on a worker of their own (a push).
    pub fn produce_here(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        layer_no: usize,
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut sink = CountingWriter::new(out, self.whole_layer_sum());
        let mut recorded = stream_hasher(cx, hashed);
        match self {
            Source::Store { .. } => {
                layer::encode(
                    cx.parents,
                    self.entries()?,
                    &cx.spec.stamp,
                    contents(hashed, recorded.as_mut()),
                    &mut sink,
                )?;
            }
            _ => self.copy_whole(&mut sink)?,
        }
        let (size, sum) = sink.finish();
        if let Some(hasher) = recorded {
            self.check_streamed_record(cx, hashed, layer_no, hasher, size)?;
        }
        self.check_reproduced(hashed, layer_no, size, sum)
    }

    /// Writes the layer compressed with `compression` into `out` and checks
    /// that the compressed bytes are the blob the hashing pass found;
    /// returns the uncompressed size.
    pub fn produce_blob(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        compression: Compression,
        layer_no: usize,
        out: &mut dyn Write,
    ) -> Result<u64> {
        if hashed.recorded.is_none() {
            return self.produce_blob_checked(cx, hashed, compression, layer_no, out);
        }
        // Known from its record: the blob is hashed as it is written, and
        // must be the recorded one.
        let (blob, _) = hashed.blob.expect("recorded with a blob");
        let mut hashing = HashingWriter::new(out);
        let plain = self.produce_blob_checked(cx, hashed, compression, layer_no, &mut hashing)?;
        let (digest, size, _) = hashing.finish();
        self.check_record(
            cx,
            hashed,
            layer_no,
            &format!("its {} blob", crate::record::compression_name(compression)),
            (blob.digest, blob.size),
            (digest, size),
        )?;
        Ok(plain)
    }

    /// [`Source::produce_blob`], checked against the hashing pass, or, for
    /// a recorded layer, only its uncompressed bytes against the record.
    fn produce_blob_checked(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        compression: Compression,
        layer_no: usize,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let (blob, blob_sum) = hashed.blob.expect("hashed with a blob");
        let mut recorded = stream_hasher(cx, hashed);
        let mut sink = CountingWriter::new(out, recorded.is_none());
        let compress_into = |w: &mut dyn Write, produce: &dyn Fn(&mut dyn Write) -> Result<()>| {
            let mut enc = compression.encoder(w).map_err(Error::Output)?;
            let mut counted = CountingWriter::new(&mut enc, false);
            produce(&mut counted)?;
            let (n, _) = counted.finish();
            enc.finish().map_err(Error::Output)?;
            Ok::<u64, Error>(n)
        };
        let plain_size = match self {
            Source::Store { .. } => {
                let entries = self.entries()?;
                let recorded = recorded.as_mut();
                relay(&mut sink, |w| {
                    let mut enc = compression.encoder(w).map_err(Error::Output)?;
                    let mut counted = CountingWriter::new(&mut enc, false);
                    layer::encode(
                        cx.parents,
                        entries,
                        &cx.spec.stamp,
                        contents(hashed, recorded),
                        &mut counted,
                    )?;
                    let (n, _) = counted.finish();
                    enc.finish().map_err(Error::Output)?;
                    Ok(n)
                })?
            }
            _ => compress_into(&mut sink, &|w| self.copy_whole(w))?,
        };
        let (size, sum) = sink.finish();
        if let Some(hasher) = recorded {
            // The caller compares the blob with the record.
            self.check_streamed_record(cx, hashed, layer_no, hasher, plain_size)?;
            return Ok(plain_size);
        }
        if size != blob.size {
            return Err(Error::SizeMismatch {
                layer: layer_no,
                expected: blob.size,
                actual: size,
            });
        }
        if sum != blob_sum {
            return Err(Error::FileChanged {
                path: PathBuf::from(self.member_name(hashed)),
                what: format!("layer {layer_no} compressed differently the second time"),
            });
        }
        if plain_size != hashed.size {
            return Err(Error::SizeMismatch {
                layer: layer_no,
                expected: hashed.size,
                actual: plain_size,
            });
        }
        Ok(plain_size)
    }

    /// Compares a recorded layer's streamed bytes (their hash and size)
    /// with its record.
    fn check_streamed_record(
        &self,
        cx: &Context<'_>,
        hashed: &Hashed,
        layer_no: usize,
        hasher: LayerHasher,
        size: u64,
    ) -> Result<()> {
        let sums = hasher.finish();
        if let Some(xxh3) = sums.xxh3 {
            let recorded = record_of(cx, hashed).and_then(|r| r.xxh3);
            let show = |sum: Option<u128>, size: u64| match sum {
                Some(sum) => format!("xxh3:{sum:032x} ({size} bytes)"),
                None => format!("no xxh3 ({size} bytes)"),
            };
            if recorded == Some(xxh3) && size == hashed.size {
                return Ok(());
            }
            return Err(self.record_mismatch(
                cx,
                hashed,
                layer_no,
                "its XXH3-128",
                show(recorded, hashed.size),
                show(Some(xxh3), size),
            ));
        }
        self.check_record(
            cx,
            hashed,
            layer_no,
            "its diff_id",
            (hashed.digest, hashed.size),
            (sums.sha256.expect("asked for"), size),
        )
    }

    /// Copies a base or customisation layer whole into `out`, telling a
    /// failure to write `out` (an [`Error::Output`] that carries the
    /// writer's own error whole) from a failure to read the source.
    fn copy_whole(&self, out: &mut dyn Write) -> Result<()> {
        match self {
            Source::Base(base, layer) => {
                let mut reader = base.layer_reader(layer)?;
                let mut tagged = Tagged { out, error: None };
                match io::copy(&mut reader, &mut tagged) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(match tagged.error.take() {
                        Some(write_error) => Error::Output(write_error),
                        None => Error::BaseImage {
                            path: base.path().to_owned(),
                            problem: format!("reading layer {}: {e}", lossy(&layer.header.name)),
                        },
                    }),
                }
            }
            Source::Custom(custom) => copy_file(&custom.tar_path, &custom.meta, out),
            Source::Store { .. } => unreachable!("store layers are encoded, not copied"),
        }
    }

    /// The layer's member name in a docker-archive: the base image's own,
    /// or `<sha256>/layer.tar`.
    pub fn member_name(&self, hashed: &Hashed) -> String {
        match self {
            // As the reference names it in manifest.json: the member name
            // decoded, never escaped.
            Source::Base(_, layer) => String::from_utf8_lossy(&layer.header.name).into_owned(),
            Source::Store { .. } => format!("{}/layer.tar", hashed.digest),
            Source::Custom(custom) => format!("{}/layer.tar", custom.checksum),
        }
    }

    /// Checks a layer produced again against its hashing pass: the same
    /// size and, for a layer copied whole, the same checksum.
    fn check_reproduced(
        &self,
        hashed: &Hashed,
        layer_no: usize,
        size: u64,
        sum: u64,
    ) -> Result<()> {
        if size != hashed.size {
            return Err(Error::SizeMismatch {
                layer: layer_no,
                expected: hashed.size,
                actual: size,
            });
        }
        if self.whole_layer_sum() && hashed.sums != [sum] {
            return Err(Error::FileChanged {
                path: match self {
                    Source::Custom(custom) => custom.tar_path.clone(),
                    Source::Base(base, _) => base.path().to_owned(),
                    Source::Store { .. } => PathBuf::new(),
                },
                what: format!("layer {layer_no} read differently the second time"),
            });
        }
        Ok(())
    }
}

/// How a later pass checks a store layer's files: against the hashing
/// pass's checksums, or, for a layer known from its record, by hashing the
/// whole layer into `recorded`.
/// The record of a layer known from one.
fn record_of<'c>(cx: &'c Context<'_>, hashed: &Hashed) -> Option<&'c crate::record::LayerRecord> {
    cx.spec.store_layer_digests.as_ref()?.get(hashed.recorded?)
}

/// For a layer known from its record, the hasher of its only pass: the
/// XXH3-128 where the record holds one, else the SHA-256 (the diff_id).
fn stream_hasher(cx: &Context<'_>, hashed: &Hashed) -> Option<LayerHasher> {
    hashed.recorded?;
    let xxh3 = record_of(cx, hashed).is_some_and(|r| r.xxh3.is_some());
    Some(LayerHasher::new(!xxh3, xxh3))
}

fn contents<'a>(hashed: &'a Hashed, recorded: Option<&'a mut LayerHasher>) -> Contents<'a> {
    match recorded {
        Some(hasher) => Contents::Hash(hasher),
        None => Contents::Verify(&hashed.sums),
    }
}

/// A writer that keeps its inner writer's error aside, so that after an
/// `io::copy` a failed write is told from a failed read, and the write
/// error reaches the caller whole.
struct Tagged<'w> {
    out: &'w mut dyn Write,
    error: Option<io::Error>,
}

impl Write for Tagged<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf).map_err(|e| {
            let kind = e.kind();
            self.error = Some(e);
            io::Error::from(kind)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The end of the hashing pass's writer chain: compresses and hashes the
/// compressed bytes when a blob is wanted, or discards them.
struct BlobSink(Option<Encoder<HashingWriter<CountingWriter<io::Sink>>>>);

impl BlobSink {
    fn new(compression: Option<Compression>) -> Result<BlobSink> {
        let Some(compression) = compression else {
            return Ok(BlobSink(None));
        };
        let inner = HashingWriter::new(CountingWriter::new(io::sink(), true));
        Ok(BlobSink(Some(
            compression.encoder(inner).map_err(Error::Output)?,
        )))
    }

    fn finish(self) -> Result<Option<(BlobRef, u64)>> {
        let Some(encoder) = self.0 else {
            return Ok(None);
        };
        let (digest, size, counted) = encoder.finish().map_err(Error::Output)?.finish();
        Ok(Some((BlobRef { digest, size }, counted.finish().1)))
    }
}

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(e) => e.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            Some(e) => e.write_all(buf),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies a whole file (whose metadata was taken earlier) into `sink`,
/// failing if it changed since.
fn copy_file(path: &Path, meta: &std::fs::Metadata, sink: &mut dyn Write) -> Result<()> {
    let expected = FileIdentity::of(meta);
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let check = || -> io::Result<()> {
        let now = FileIdentity::of(&file.metadata()?);
        match expected.difference(&now) {
            Some(what) => Err(io::Error::other(what)),
            None => Ok(()),
        }
    };
    let mut sink_error = None;
    let result = filedata::for_each_chunk(
        &file,
        expected.size,
        &mut Vec::new(),
        &mut || check(),
        &mut |chunk| {
            sink.write_all(chunk).map_err(|e| {
                let kind = e.kind();
                sink_error = Some(e);
                io::Error::from(kind)
            })
        },
    );
    if let Some(e) = sink_error {
        return Err(Error::Output(e));
    }
    result
        .and_then(|()| check())
        .map_err(|e| Error::FileChanged {
            path: path.to_owned(),
            what: e.to_string(),
        })
}

/// A store path as a person names it: its last component without the
/// store's 32-character hash (`/nix/store/<hash>-glibc-2.39` is
/// `glibc-2.39`); the whole last component when it has no such hash.
fn store_name(path: &str) -> String {
    let base = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name))
            if hash.len() == 32
                && !name.is_empty()
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            name.to_owned()
        }
        _ => base.to_owned(),
    }
}

/// Whether `path` is `root` or below it.
fn under(path: &[u8], root: &[u8]) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

/// A member name shown as text: control characters and bytes that are not
/// UTF-8 escaped.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    crate::escape::bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::store_name;

    #[test]
    fn store_names_lose_the_hash() {
        assert_eq!(
            store_name("/nix/store/0c0s5pfvbhn2fpbdxq3y4mkkzcjvmj7k-glibc-2.39-52"),
            "glibc-2.39-52"
        );
        assert_eq!(store_name("/gnu/store/aaaa-app/"), "aaaa-app");
        assert_eq!(store_name("/tmp/store/plain"), "plain");
    }
}
