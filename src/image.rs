//! Writing the image (docker-archive or OCI layout): parallel digests, then one stream.
//!
//! A `docker save` v1.2 archive names each layer by its digest
//! (`<sha256>/layer.tar`) and a tar header must state a member's size, so a
//! layer's digest and size are needed before its first byte can be written.
//! The reference encodes every layer twice in a row on one core. Here:
//!
//! 1. every store layer is walked (in parallel), which fixes its contents;
//! 2. a pool of rayon workers encodes layers into a hasher, always taking
//!    next the layer the stream is waiting for (or the one after it), and
//!    otherwise the largest layer left, so that the long layers start early
//!    and the stream rarely waits;
//! 3. meanwhile this thread writes the outer tar: as soon as the next
//!    layer's digest is known it writes the header and encodes the layer a
//!    second time, straight into the output. Every file's contents must
//!    match the checksum taken in the first pass (see [`crate::layer`]), and
//!    the layer's size must match, so a file that changed between the
//!    passes stops the run before the manifest is written: the output is
//!    then an incomplete archive that no engine will load, never a wrong
//!    image.
//!
//! Base image layers and the customisation layer are hashed in the same
//! pool, to check them against the digests their sources claim, and get a
//! whole-layer checksum that their streaming must match.
//!
//! The OCI formats ([`Format`]) store each layer as a blob named by the
//! digest of its stored, possibly compressed, bytes ([`crate::compress`]).
//! The hashing pass then also compresses each layer (so layers are
//! compressed in parallel) and records the blob's digest, size and XXH3;
//! the streaming pass compresses again, on the producer thread of
//! [`relay`], and must reproduce the same size and XXH3. The config is the
//! same bytes as the docker-archive's, so its `diff_ids` are those of the
//! uncompressed tars; [`crate::oci`] writes the manifest and `index.json`,
//! the latter last, so that a layout cut short names no image.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use rayon::prelude::*;

use crate::base_image::{BaseImage, BaseLayer};
use crate::compress::{Compression, Encoder};
use crate::digest::{CountingWriter, HashingWriter, Sha256Digest};
use crate::error::{Error, Result};
use crate::filedata;
use crate::layer::{self, Contents};
use crate::oci::{self, BlobRef, Format};
use crate::progress::{human_bytes, Progress};
use crate::push::{self, Registry, Upload};
use crate::pyjson::{self, PyValue};
use crate::pyrepr;
use crate::relay::{relay, relay_direct};
use crate::schedule::{Job, Schedule};
use crate::spec::Spec;
use crate::tarheader::{self, EntryType, Header};
use crate::walk::{self, Entry, FileIdentity};

/// Choices that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replaces the spec's `repo_tag` (the `-t` flag).
    pub repo_tag: Option<String>,
    /// What to write.
    pub format: Format,
    /// How layers are compressed (OCI formats only).
    pub compression: Compression,
    /// The descriptor the output writer finally writes to, when it can
    /// take spliced pages: large store files are then spliced into it from
    /// the page cache (after the writer is flushed) instead of being copied
    /// through the writer.
    pub direct_output: Option<std::sync::Arc<crate::relay::DirectOutput>>,
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Number of layers in the image.
    pub layers: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// The customisation layer: a ready `layer.tar` and its checksum.
#[derive(Debug)]
struct CustomLayer {
    dir: String,
    tar_path: PathBuf,
    checksum: Sha256Digest,
    meta: std::fs::Metadata,
}

impl CustomLayer {
    fn open(dir: &str) -> Result<CustomLayer> {
        let bad = |problem: String| Error::Customisation {
            dir: PathBuf::from(dir),
            problem,
        };
        let checksum_path = Path::new(dir).join("checksum");
        let text = std::fs::read_to_string(&checksum_path)
            .map_err(|e| bad(format!("cannot read \"checksum\": {e}")))?;
        let checksum = Sha256Digest::from_hex(text.trim()).ok_or_else(|| {
            bad(format!(
                "\"checksum\" must hold 64 hex digits, found {:?}",
                text.trim()
            ))
        })?;
        let tar_path = Path::new(dir).join("layer.tar");
        let meta = std::fs::symlink_metadata(&tar_path)
            .map_err(|e| bad(format!("cannot use \"layer.tar\": {e}")))?;
        if !meta.is_file() {
            return Err(bad("\"layer.tar\" is not a regular file".into()));
        }
        Ok(CustomLayer {
            dir: dir.to_owned(),
            tar_path,
            checksum,
            meta,
        })
    }
}

/// Where a layer's bytes come from.
enum Source<'a> {
    Base(&'a BaseLayer),
    Store {
        /// The paths as the spec wrote them.
        spec_paths: &'a [String],
        /// The same, normalised.
        paths: &'a [String],
        /// Filled in by the walk, which runs in the worker pool.
        entries: OnceLock<Vec<Entry>>,
    },
    Custom(&'a CustomLayer),
}

/// A layer's digest and size, from the hashing pass, and the checksums the
/// streaming pass must reproduce.
#[derive(Debug, Clone)]
struct Hashed {
    digest: Sha256Digest,
    size: u64,
    /// One per regular file for store layers; one for the whole layer
    /// otherwise.
    sums: Vec<u64>,
    /// For the OCI formats: the stored (compressed) blob and the XXH3 of
    /// its bytes, which the streaming pass must reproduce.
    blob: Option<(BlobRef, u64)>,
}

/// The end of the hashing pass's writer chain: compresses (OCI formats) and
/// hashes the compressed bytes, or discards them.
struct BlobSink(Option<Encoder<HashingWriter<CountingWriter<io::Sink>>>>);

impl BlobSink {
    fn new(options: &Options) -> Result<BlobSink> {
        // A push with a cache learns a blob's digest from the cache, or
        // from the one compression that uploads it.
        let push_cached = matches!(&options.format, Format::Push(t) if t.cache.is_some());
        if !options.format.is_oci() || push_cached {
            return Ok(BlobSink(None));
        }
        let inner = HashingWriter::new(CountingWriter::new(io::sink(), true));
        Ok(BlobSink(Some(
            options.compression.encoder(inner).map_err(Error::Output)?,
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

/// Writes the image described by `spec` to `out` in the format the options
/// choose (a docker-archive by default; `out` is unused for an OCI
/// directory).
pub fn write_docker_archive(
    spec: &Spec,
    options: &Options,
    out: &mut dyn Write,
    progress: &Progress,
) -> Result<Summary> {
    if !options.format.is_oci() && options.compression != Compression::None {
        return Err(Error::Usage(
            "--compress applies to the OCI formats; a docker-archive stores plain layer tars"
                .into(),
        ));
    }
    let repo_tag = match (&options.repo_tag, &spec.repo_tag) {
        (Some(tag), _) if !tag.is_empty() => PyValue::from(tag.as_str()),
        (_, Some(tag)) => tag.clone(),
        _ => {
            return Err(Error::SpecKey {
                path: PathBuf::from("spec"),
                key: "repo_tag".into(),
                problem: "missing from the spec, and no -t given".into(),
            })
        }
    };
    let base = spec
        .from_image
        .as_deref()
        .map(BaseImage::open)
        .transpose()?;
    let custom = spec
        .customisation_layer
        .as_deref()
        .map(CustomLayer::open)
        .transpose()?;
    if base.is_some() && !spec.config.is_dict() {
        return Err(Error::SpecKey {
            path: PathBuf::from("spec"),
            key: "config".into(),
            problem: "must be an object when from_image is set".into(),
        });
    }
    let config = overlay_base_config(base.as_ref(), spec.config.clone())?;

    let parents = walk::store_parents(&spec.store_dir);
    let mut sources: Vec<Source<'_>> = Vec::new();
    if let Some(base) = &base {
        sources.extend(base.layers.iter().map(Source::Base));
    }
    for (spec_paths, paths) in spec.store_layers.iter().zip(&spec.store_layer_paths) {
        sources.push(Source::Store {
            spec_paths,
            paths,
            entries: OnceLock::new(),
        });
    }
    if let Some(custom) = &custom {
        sources.push(Source::Custom(custom));
    }
    let total_layers = sources.len();
    if total_layers > 125 {
        progress.line(format_args!(
            "warning: {total_layers} layers; Docker refuses images with more than about 125"
        ));
    }

    let registry = match &options.format {
        Format::Push(target) => Some(Registry::new(target.clone())?),
        _ => None,
    };
    let hasher = |index: usize| -> Result<Hashed> {
        let started = Instant::now();
        progress.line(format_args!(
            "hashing layer {}/{total_layers}: {}, about {}",
            index + 1,
            describe(&sources[index]),
            human_bytes(estimate_size(&sources[index]))
        ));
        let hashed = match &sources[index] {
            Source::Store { entries, .. } => {
                let entries = entries.get().expect("hashed only once walked");
                let mut sink = HashingWriter::new(BlobSink::new(options)?);
                let mut sums = Vec::new();
                layer::encode(
                    &parents,
                    entries,
                    &spec.stamp,
                    Contents::Record(&mut sums),
                    &mut sink,
                )?;
                let (digest, size, blob) = sink.finish();
                Hashed {
                    digest,
                    size,
                    sums,
                    blob: blob.finish()?,
                }
            }
            Source::Base(layer) => {
                let base = base.as_ref().expect("base layers come from a base image");
                let mut sink =
                    HashingWriter::new(CountingWriter::new(BlobSink::new(options)?, true));
                io::copy(&mut base.layer_reader(layer)?, &mut sink).map_err(|e| {
                    Error::BaseImage {
                        path: base.path().to_owned(),
                        problem: format!("reading layer {}: {e}", lossy(&layer.header.name)),
                    }
                })?;
                let (digest, size, counted) = sink.finish();
                if digest != layer.diff_id {
                    return Err(Error::BaseImage {
                        path: base.path().to_owned(),
                        problem: format!(
                            "layer {} has digest sha256:{digest}, but its diff_id is sha256:{}",
                            lossy(&layer.header.name),
                            layer.diff_id
                        ),
                    });
                }
                let (_, sum, blob) = counted.into_parts();
                Hashed {
                    digest,
                    size,
                    sums: vec![sum],
                    blob: blob.finish()?,
                }
            }
            Source::Custom(custom) => {
                let mut sink =
                    HashingWriter::new(CountingWriter::new(BlobSink::new(options)?, true));
                copy_file(&custom.tar_path, &custom.meta, &mut sink)?;
                let (digest, size, counted) = sink.finish();
                if digest != custom.checksum {
                    return Err(Error::Customisation {
                        dir: PathBuf::from(&custom.dir),
                        problem: format!(
                            "layer.tar has digest {digest}, but \"checksum\" says {}",
                            custom.checksum
                        ),
                    });
                }
                let (_, sum, blob) = counted.into_parts();
                Hashed {
                    digest,
                    size,
                    sums: vec![sum],
                    blob: blob.finish()?,
                }
            }
        };
        progress.line(format_args!(
            "hashed layer {}/{total_layers}: sha256:{} {} in {:.2}s",
            index + 1,
            &hashed.digest.hex()[..12],
            human_bytes(hashed.size),
            started.elapsed().as_secs_f64()
        ));
        if let Some(registry) = &registry {
            let layer = (index + 1, total_layers);
            let (parents, base) = (&parents[..], base.as_ref());
            return push_layer(
                registry,
                &sources[index],
                base,
                parents,
                spec,
                options.compression,
                hashed,
                layer,
                progress,
            );
        }
        Ok(hashed)
    };

    let schedule = Schedule::new(sources.len());
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<Hashed>)>();
    let mut outer = OuterTar {
        out,
        offset: 0,
        buf: Vec::with_capacity(64 * 1024),
        dir: match &options.format {
            Format::OciDir(dir) => Some(Dir::create(dir)?),
            _ => None,
        },
        push: match &options.format {
            Format::Push(_) => registry.as_ref().map(|registry| Pushing {
                registry,
                upload: None,
            }),
            _ => None,
        },
    };
    if options.format.is_oci() {
        let mtime = spec.stamp.mtime;
        outer.small_file("oci-layout", oci::OCI_LAYOUT, mtime)?;
        for dir in ["blobs", "blobs/sha256"] {
            outer.header(&Header {
                mode: 0o755,
                entry_type: EntryType::Directory,
                ..plain_member(dir.as_bytes(), mtime)
            })?;
        }
    }

    let streamed = std::thread::scope(|scope| {
        let workers = rayon::current_num_threads().max(1);
        let schedule = &schedule;
        let hasher = &hasher;
        let sources = &sources;
        scope.spawn(move || {
            (0..workers).into_par_iter().for_each(|_| {
                while let Some(job) = schedule.next() {
                    let (index, result) = match job {
                        Job::Walk(index) => match walk_layer(&sources[index], progress) {
                            Ok(estimate) => {
                                schedule.walked(index, estimate);
                                continue;
                            }
                            Err(e) => (index, Err(e)),
                        },
                        Job::Hash(index) => (index, hasher(index)),
                    };
                    let failed = result.is_err();
                    if tx.send((index, result)).is_err() || failed {
                        schedule.stop();
                    }
                }
            });
        });
        let result = stream_layers(
            sources,
            base.as_ref(),
            &parents,
            spec,
            &rx,
            schedule,
            &mut outer,
            options,
            progress,
        );
        // Whatever happened, let the workers finish quickly.
        schedule.stop();
        drop(rx);
        result
    })?;

    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    let mut layer_names = Vec::new();
    let created = PyValue::from(spec.created.isoformat());
    for (source, (name, hashed)) in sources.iter().zip(&streamed) {
        diff_ids.push(PyValue::from(format!("sha256:{}", hashed.digest)));
        let paths: Vec<String> = match source {
            Source::Base(_) => vec![name.clone()],
            Source::Store { spec_paths, .. } => spec_paths.to_vec(),
            Source::Custom(c) => vec![c.dir.clone()],
        };
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        history.push(dict(vec![
            ("created", created.clone()),
            (
                "comment",
                PyValue::from(format!("store paths: {}", pyrepr::repr_str_list(&paths))),
            ),
        ]));
        layer_names.push(PyValue::from(name.as_str()));
    }
    let image_json = dict(vec![
        ("created", created),
        ("architecture", spec.architecture.clone()),
        ("os", PyValue::from("linux")),
        ("config", config),
        (
            "rootfs",
            dict(vec![
                ("diff_ids", PyValue::List(diff_ids)),
                ("type", PyValue::from("layers")),
            ]),
        ),
        ("history", PyValue::List(history)),
    ]);
    let image_json = pyjson::dumps_value_indent4(&image_json).into_bytes();
    if options.format.is_oci() {
        let blobs: Vec<BlobRef> = streamed
            .iter()
            .map(|(_, h)| h.blob.expect("hashed for an OCI format").0)
            .collect();
        let tag = repo_tag
            .as_pystr()
            .map(|t| t.to_string_lossy().into_owned())
            .ok_or_else(|| Error::SpecKey {
                path: PathBuf::from("spec"),
                key: "repo_tag".into(),
                problem: "must be a string".into(),
            })?;
        let mtime = spec.stamp.mtime;
        let config_path = oci::blob_path(&Sha256Digest::of(&image_json));
        outer.small_file(&config_path, &image_json, mtime)?;
        let manifest = oci::manifest(&image_json, &blobs, options.compression);
        if let Some(push) = &mut outer.push {
            // Last, once every blob is there.
            push.registry
                .put_manifest(&manifest, oci::MANIFEST_MEDIA_TYPE)?;
            progress.line(format_args!(
                "pushed sha256:{} to {} ({} blob uploads, {} mounts) in {:.2}s",
                Sha256Digest::of(&manifest),
                push.registry.target().repository(),
                push.registry.uploads(),
                push.registry.mounts(),
                progress.elapsed()
            ));
            return Ok(Summary {
                layers: total_layers,
                bytes: outer.offset,
            });
        }
        outer.small_file(
            &oci::blob_path(&Sha256Digest::of(&manifest)),
            &manifest,
            mtime,
        )?;
        if options.format == Format::DockerOci {
            let docker = oci::docker_manifest(&image_json, &blobs, &tag);
            outer.small_file("manifest.json", &docker, mtime)?;
        }
        // Last: a layout is only usable once everything it names is there.
        outer.small_file("index.json", &oci::index(&manifest, &tag), mtime)?;
    } else {
        let config_name = format!("{}.json", Sha256Digest::of(&image_json));
        outer.small_file(&config_name, &image_json, spec.stamp.mtime)?;
        let manifest = PyValue::List(vec![dict(vec![
            ("Config", PyValue::from(config_name)),
            ("RepoTags", PyValue::List(vec![repo_tag])),
            ("Layers", PyValue::List(layer_names)),
        ])]);
        let manifest = pyjson::dumps_value_indent4(&manifest).into_bytes();
        outer.small_file("manifest.json", &manifest, spec.stamp.mtime)?;
    }
    outer.finish()?;

    let summary = Summary {
        layers: total_layers,
        bytes: outer.offset,
    };
    let secs = progress.elapsed();
    progress.line(format_args!(
        "done: {} layers, {} in {:.2}s ({:.0} MiB/s)",
        summary.layers,
        human_bytes(summary.bytes),
        secs,
        summary.bytes as f64 / 1048576.0 / secs.max(1e-9)
    ));
    Ok(summary)
}

/// Streams every layer in order, returning each one's member name and
/// digest.
#[allow(clippy::too_many_arguments)]
fn stream_layers(
    sources: &[Source<'_>],
    base: Option<&BaseImage>,
    parents: &[String],
    spec: &Spec,
    rx: &crossbeam_channel::Receiver<(usize, Result<Hashed>)>,
    schedule: &Schedule,
    outer: &mut OuterTar<'_>,
    options: &Options,
    progress: &Progress,
) -> Result<Vec<(String, Hashed)>> {
    let mut ready: Vec<Option<Hashed>> = vec![None; sources.len()];
    let mut done = Vec::with_capacity(sources.len());
    for (index, source) in sources.iter().enumerate() {
        schedule.streaming(index);
        while ready[index].is_none() {
            let (i, result) = rx.recv().map_err(|_| {
                Error::Output(io::Error::other("hashing workers stopped unexpectedly"))
            })?;
            ready[i] = Some(result?);
        }
        let hashed = ready[index].take().expect("checked above");
        let layer_no = index + 1;
        progress.line(format_args!(
            "streaming layer {layer_no}/{}: {}",
            sources.len(),
            human_bytes(hashed.size)
        ));
        let (name, header_owned);
        let header = match source {
            Source::Base(layer) => {
                name = lossy(&layer.header.name);
                Header {
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
                }
            }
            Source::Store { .. } => {
                name = format!("{}/layer.tar", hashed.digest);
                Header {
                    size: hashed.size,
                    ..plain_member(name.as_bytes(), spec.stamp.mtime)
                }
            }
            Source::Custom(custom) => {
                name = format!("{}/layer.tar", custom.checksum);
                header_owned = (
                    account_name("/etc/passwd", custom.meta.uid()),
                    account_name("/etc/group", custom.meta.gid()),
                );
                Header {
                    mode: custom.meta.mode(),
                    uid: i64::from(custom.meta.uid()),
                    gid: i64::from(custom.meta.gid()),
                    uname: header_owned.0.as_bytes(),
                    gname: header_owned.1.as_bytes(),
                    size: hashed.size,
                    ..plain_member(name.as_bytes(), spec.stamp.mtime)
                }
            }
        };
        if let Some((blob, blob_sum)) = hashed.blob {
            if outer.registry_has(&blob.digest)? {
                progress.line(format_args!(
                    "layer {layer_no}: the registry has sha256:{}",
                    &blob.digest.hex()[..12]
                ));
                done.push((name, hashed));
                continue;
            }
            let member = oci::blob_path(&blob.digest);
            outer.header(&Header {
                size: blob.size,
                ..plain_member(member.as_bytes(), spec.stamp.mtime)
            })?;
            let plain_size = stream_blob(
                source,
                base,
                parents,
                spec,
                &hashed,
                options.compression,
                &name,
                outer,
                (blob, blob_sum),
                layer_no,
            )?;
            if plain_size != hashed.size {
                return Err(Error::SizeMismatch {
                    layer: layer_no,
                    expected: hashed.size,
                    actual: plain_size,
                });
            }
            outer.pad(blob.size)?;
            done.push((name, hashed));
            continue;
        }
        outer.header(&header)?;
        let whole_layer_sum = !matches!(source, Source::Store { .. });
        let direct = options
            .direct_output
            .as_deref()
            .filter(|_| outer.writes_through());
        let mut spliced = 0;
        let mut sink = CountingWriter::new(&mut *outer, whole_layer_sum);
        match source {
            Source::Store { entries, .. } => {
                let entries = entries.get().expect("streamed only once hashed");
                (_, spliced) = relay_direct(&mut sink, direct, |w| {
                    layer::encode(
                        parents,
                        entries,
                        &spec.stamp,
                        Contents::Verify(&hashed.sums),
                        w,
                    )
                })?;
            }
            Source::Base(layer) => {
                let base = base.expect("base layers come from a base image");
                io::copy(&mut base.layer_reader(layer)?, &mut sink).map_err(|e| {
                    if sink_failed(&e) {
                        Error::Output(e)
                    } else {
                        Error::BaseImage {
                            path: base.path().to_owned(),
                            problem: format!("reading layer {name}: {e}"),
                        }
                    }
                })?;
            }
            Source::Custom(custom) => copy_file(&custom.tar_path, &custom.meta, &mut sink)?,
        }
        let (counted, sum) = sink.finish();
        outer.wrote_around(spliced);
        let size = counted + spliced;
        check_reproduced(source, base, &hashed, layer_no, size, sum)?;
        outer.pad(size)?;
        done.push((name, hashed));
    }
    Ok(done)
}

/// Streams one layer compressed as an OCI blob, checking that the
/// compressed bytes are those the hashing pass found; returns the
/// uncompressed size.
#[allow(clippy::too_many_arguments)]
fn stream_blob(
    source: &Source<'_>,
    base: Option<&BaseImage>,
    parents: &[String],
    spec: &Spec,
    hashed: &Hashed,
    compression: Compression,
    name: &str,
    outer: &mut OuterTar<'_>,
    (blob, blob_sum): (BlobRef, u64),
    layer_no: usize,
) -> Result<u64> {
    let mut sink = CountingWriter::new(&mut *outer, true);
    let plain_size = match source {
        Source::Store { entries, .. } => {
            let entries = entries.get().expect("streamed only once hashed");
            relay(&mut sink, |w| {
                let mut enc = compression.encoder(w).map_err(Error::Output)?;
                let mut counted = CountingWriter::new(&mut enc, false);
                layer::encode(
                    parents,
                    entries,
                    &spec.stamp,
                    Contents::Verify(&hashed.sums),
                    &mut counted,
                )?;
                let (n, _) = counted.finish();
                enc.finish().map_err(Error::Output)?;
                Ok(n)
            })?
        }
        Source::Base(layer) => {
            let base = base.expect("base layers come from a base image");
            let mut enc = compression.encoder(&mut sink).map_err(Error::Output)?;
            let mut counted = CountingWriter::new(&mut enc, false);
            io::copy(&mut base.layer_reader(layer)?, &mut counted).map_err(|e| {
                if sink_failed(&e) {
                    Error::Output(e)
                } else {
                    Error::BaseImage {
                        path: base.path().to_owned(),
                        problem: format!("reading layer {name}: {e}"),
                    }
                }
            })?;
            let (n, _) = counted.finish();
            enc.finish().map_err(Error::Output)?;
            n
        }
        Source::Custom(custom) => {
            let mut enc = compression.encoder(&mut sink).map_err(Error::Output)?;
            let mut counted = CountingWriter::new(&mut enc, false);
            copy_file(&custom.tar_path, &custom.meta, &mut counted)?;
            let (n, _) = counted.finish();
            enc.finish().map_err(Error::Output)?;
            n
        }
    };
    let (size, sum) = sink.finish();
    if size != blob.size {
        return Err(Error::SizeMismatch {
            layer: layer_no,
            expected: blob.size,
            actual: size,
        });
    }
    if sum != blob_sum {
        return Err(Error::FileChanged {
            path: PathBuf::from(name),
            what: format!("layer {layer_no} compressed differently the second time"),
        });
    }
    Ok(plain_size)
}

/// Write errors from the output are tagged so they can be told apart from
/// read errors once they have passed through `io::copy`.
fn sink_failed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OutputFailed>())
}

#[derive(Debug)]
struct OutputFailed(io::Error);

impl std::fmt::Display for OutputFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for OutputFailed {}

fn plain_member(name: &[u8], mtime: i64) -> Header<'_> {
    Header {
        name,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        mtime,
        entry_type: EntryType::Regular,
        linkname: b"",
        uname: b"",
        gname: b"",
        pax: &[],
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

/// What a layer holds, for progress lines.
fn describe(source: &Source<'_>) -> String {
    match source {
        Source::Base(layer) => format!("base image layer {}", lossy(&layer.header.name)),
        Source::Store { spec_paths, .. } => match &spec_paths[..] {
            [] => "no store paths".into(),
            [only] => only.clone(),
            [first, rest @ ..] => format!("{first} and {} more store paths", rest.len()),
        },
        Source::Custom(custom) => format!("customisation layer {}", custom.dir),
    }
}

/// A rough size, used only to start the longest hashing jobs first.
fn estimate_size(source: &Source<'_>) -> u64 {
    match source {
        Source::Base(layer) => layer.size,
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

/// A dict with these keys in this order.
fn dict(entries: Vec<(&str, PyValue)>) -> PyValue {
    PyValue::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Merges the base image's `Env` into the spec's config like the reference:
/// base entries first, then the spec's, the last value of a name winning
/// while keeping the position of its first appearance.
fn overlay_base_config(base: Option<&BaseImage>, mut config: PyValue) -> Result<PyValue> {
    let Some(base) = base else {
        return Ok(config);
    };
    let env_of = |v: Option<&PyValue>, whose: &str| -> Result<Vec<PyValue>> {
        let problem = match v {
            None | Some(PyValue::Null) => return Ok(Vec::new()),
            Some(PyValue::List(items)) if items.iter().all(|i| i.as_pystr().is_some()) => {
                return Ok(items.clone())
            }
            Some(PyValue::List(_)) => format!("{whose} Env holds a non-string entry"),
            Some(_) => format!("{whose} Env is not a list"),
        };
        Err(Error::BaseImage {
            path: base.path().to_owned(),
            problem,
        })
    };
    let base_config = base.config.get("config");
    let mut env = env_of(base_config.and_then(|c| c.get("Env")), "the base image's")?;
    env.extend(env_of(config.get("Env"), "the spec's")?);
    if !env.is_empty() {
        let mut resolved = PyValue::Dict(Vec::new());
        for entry in env {
            let text = entry.as_pystr().expect("checked above");
            // entry.split("=", 1)[0]
            let name = crate::pyjson::PyStr::from_code_points(
                text.code_points().take_while(|&c| c != u32::from(b'=')),
            )
            .expect("a prefix of a valid str");
            let _ = resolved.set(name, entry);
        }
        let values = resolved
            .as_dict()
            .map(|d| d.iter().map(|(_, v)| v.clone()).collect())
            .unwrap_or_default();
        let _ = config.set("Env", PyValue::List(values));
    }
    Ok(config)
}

/// The name for `id` in an `/etc/passwd`-style file, or "" like Python's
/// `tarfile` when there is none.
fn account_name(file: &str, id: u32) -> String {
    let Ok(text) = std::fs::read_to_string(file) else {
        return String::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let wanted = fields.nth(1)?.parse::<u32>().ok()? == id;
            wanted.then(|| name.to_owned())
        })
        .next()
        .unwrap_or_default()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Walks a store layer (other layers need no walk) and returns its
/// estimated size.
fn walk_layer(source: &Source<'_>, progress: &Progress) -> Result<u64> {
    if let Source::Store { paths, entries, .. } = source {
        let walked = walk::walk_paths(paths)?;
        progress.line(format_args!(
            "walked {}: {} entries",
            describe(source),
            walked.len()
        ));
        let _ = entries.set(walked);
    }
    Ok(estimate_size(source))
}

/// The outer archive, written through `out`; or, for an OCI directory, its
/// members written as files.
struct OuterTar<'w> {
    out: &'w mut dyn Write,
    offset: u64,
    buf: Vec<u8>,
    dir: Option<Dir>,
    push: Option<Pushing<'w>>,
}

/// A push in progress: blob members become uploads; other members of the
/// would-be tar are dropped.
struct Pushing<'r> {
    registry: &'r Registry,
    upload: Option<(Upload<'r>, Sha256Digest)>,
}

/// Checks a layer produced again (streamed or pushed) against its hashing
/// pass: the same size and, for a base or customisation layer, whose bytes
/// are copied whole, the same checksum. (A store layer's files are checked
/// one by one as they are encoded.)
fn check_reproduced(
    source: &Source<'_>,
    base: Option<&BaseImage>,
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
    let whole_layer_sum = !matches!(source, Source::Store { .. });
    if whole_layer_sum && hashed.sums != [sum] {
        return Err(Error::FileChanged {
            path: match source {
                Source::Custom(custom) => custom.tar_path.clone(),
                _ => base.map(|b| b.path().to_owned()).unwrap_or_default(),
            },
            what: format!("layer {layer_no} read differently the second time"),
        });
    }
    Ok(())
}

/// Pushes a layer from its hashing worker, right after the hashing pass
/// (see [`Registry::push_layer`]); when the registry needs the blob, the
/// layer is produced again and checked against that pass like a streamed
/// one.
#[allow(clippy::too_many_arguments)]
fn push_layer(
    registry: &Registry,
    source: &Source<'_>,
    base: Option<&BaseImage>,
    parents: &[String],
    spec: &Spec,
    compression: Compression,
    mut hashed: Hashed,
    (layer_no, total): (usize, usize),
    progress: &Progress,
) -> Result<Hashed> {
    let started = Instant::now();
    let label = format!("layer {layer_no}/{total}");
    let known = hashed.blob.map(|(blob, _)| blob);
    let pushed = registry.push_layer(&label, &hashed.digest, compression, known, &mut |w| {
        let whole_layer_sum = !matches!(source, Source::Store { .. });
        let mut sink = CountingWriter::new(w, whole_layer_sum);
        match source {
            Source::Store { entries, .. } => {
                let entries = entries.get().expect("pushed only once hashed");
                layer::encode(
                    parents,
                    entries,
                    &spec.stamp,
                    Contents::Verify(&hashed.sums),
                    &mut sink,
                )?;
            }
            Source::Base(layer) => {
                let base = base.expect("base layers come from a base image");
                io::copy(&mut base.layer_reader(layer)?, &mut sink).map_err(|e| {
                    if push::carries_error(&e) {
                        Error::Output(e)
                    } else {
                        Error::BaseImage {
                            path: base.path().to_owned(),
                            problem: format!("reading layer {layer_no}: {e}"),
                        }
                    }
                })?;
            }
            Source::Custom(custom) => copy_file(&custom.tar_path, &custom.meta, &mut sink)?,
        }
        let (size, sum) = sink.finish();
        check_reproduced(source, base, &hashed, layer_no, size, sum)?;
        Ok(())
    })?;
    let how = match pushed.how {
        push::How::Present => "the registry has",
        push::How::Mounted => "mounted",
        push::How::Uploaded => "uploaded",
    };
    progress.line(format_args!(
        "{label}: {how} sha256:{} {} in {:.2}s",
        &pushed.blob.digest.hex()[..12],
        human_bytes(pushed.blob.size),
        started.elapsed().as_secs_f64()
    ));
    // The streaming pass skips a blob the registry has, so no checksum of
    // its compressed bytes is needed.
    hashed.blob = Some((pushed.blob, 0));
    Ok(hashed)
}

impl Pushing<'_> {
    fn start(&mut self, h: &Header<'_>) -> Result<()> {
        self.upload = None;
        let name = String::from_utf8_lossy(h.name);
        let digest = name
            .strip_prefix("blobs/sha256/")
            .and_then(Sha256Digest::from_hex);
        if let (Some(digest), EntryType::Regular) = (digest, h.entry_type) {
            if !self.registry.has_blob(&digest)? {
                let label = format!("blob sha256:{digest}");
                self.upload = Some((Upload::start(self.registry, label)?, digest));
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((upload, digest)) = self.upload.take() {
            upload.finish(&digest)?;
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.upload {
            Some((upload, _)) => upload.write_all(buf),
            None => Ok(()),
        }
    }
}

/// An OCI directory being written: every member the tar would hold becomes
/// a file (or directory) under `root`.
struct Dir {
    root: PathBuf,
    file: Option<(PathBuf, io::BufWriter<File>)>,
}

impl Dir {
    fn create(root: &Path) -> Result<Dir> {
        std::fs::create_dir_all(root.join("blobs/sha256"))
            .map_err(|e| Error::io(root, "creating the OCI directory", e))?;
        Ok(Dir {
            root: root.to_owned(),
            file: None,
        })
    }

    fn start(&mut self, h: &Header<'_>) -> Result<()> {
        self.close()?;
        let path = self.root.join(std::ffi::OsStr::from_bytes(
            h.name.strip_suffix(b"/").unwrap_or(h.name),
        ));
        if h.entry_type == EntryType::Directory {
            return std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, "creating", e));
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, "creating", e))?;
        self.file = Some((path, io::BufWriter::with_capacity(128 << 10, file)));
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((path, mut file)) = self.file.take() {
            file.flush().map_err(|e| Error::io(&path, "writing", e))?;
        }
        Ok(())
    }

    fn file(&mut self) -> io::Result<&mut io::BufWriter<File>> {
        self.file
            .as_mut()
            .map(|(_, f)| f)
            .ok_or_else(|| io::Error::other("no member is open"))
    }
}

impl OuterTar<'_> {
    /// Whether members go to the output writer as they are (a plain tar
    /// stream), so that bytes may also reach its pipe directly.
    fn writes_through(&self) -> bool {
        self.dir.is_none() && self.push.is_none()
    }

    /// Counts `n` bytes that went to the output's pipe directly.
    fn wrote_around(&mut self, n: u64) {
        self.offset += n;
    }

    /// Whether pushing, and the registry already has this blob.
    fn registry_has(&mut self, digest: &Sha256Digest) -> Result<bool> {
        match &mut self.push {
            Some(push) => push.registry.has_blob(digest),
            None => Ok(false),
        }
    }

    fn header(&mut self, h: &Header<'_>) -> Result<()> {
        if let Some(dir) = &mut self.dir {
            return dir.start(h);
        }
        if let Some(push) = &mut self.push {
            return push.start(h);
        }
        self.buf.clear();
        tarheader::encode(h, &mut self.buf);
        self.offset += self.buf.len() as u64;
        self.out.write_all(&self.buf).map_err(Error::Output)
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        if let Some(dir) = &mut self.dir {
            return dir.close();
        }
        if let Some(push) = &mut self.push {
            return push.close();
        }
        let pad = tarheader::data_padding(size);
        self.offset += pad as u64;
        self.out
            .write_all(&[0; tarheader::BLOCK][..pad])
            .map_err(Error::Output)
    }

    fn small_file(&mut self, name: &str, data: &[u8], mtime: i64) -> Result<()> {
        self.header(&Header {
            size: data.len() as u64,
            ..plain_member(name.as_bytes(), mtime)
        })?;
        self.write_all(data).map_err(Error::Output)?;
        self.pad(data.len() as u64)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(dir) = &mut self.dir {
            return dir.close();
        }
        if let Some(push) = &mut self.push {
            return push.close();
        }
        let tail = tarheader::end_of_archive(self.offset);
        self.offset += tail.len() as u64;
        self.out.write_all(&tail).map_err(Error::Output)?;
        self.out.flush().map_err(Error::Output)
    }
}

impl Write for OuterTar<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(push) = &mut self.push {
            push.write(buf)
                .map_err(|e| io::Error::new(e.kind(), OutputFailed(e)))?;
            self.offset += buf.len() as u64;
            return Ok(buf.len());
        }
        let out: &mut dyn Write = match &mut self.dir {
            Some(dir) => dir.file()?,
            None => &mut *self.out,
        };
        let n = out
            .write(buf)
            .map_err(|e| io::Error::new(e.kind(), OutputFailed(e)))?;
        self.offset += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(push) = &mut self.push {
            push.write(buf)
                .map_err(|e| io::Error::new(e.kind(), OutputFailed(e)))?;
            self.offset += buf.len() as u64;
            return Ok(());
        }
        let out: &mut dyn Write = match &mut self.dir {
            Some(dir) => dir.file()?,
            None => &mut *self.out,
        };
        out.write_all(buf)
            .map_err(|e| io::Error::new(e.kind(), OutputFailed(e)))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
