//! The pipeline: from a spec to an image, fed to every sink at once.
//!
//! # Inputs
//!
//! A [`Spec`] (its store layers, base image and customisation layer), the
//! [`Options`] that are not part of the spec, and one or more
//! [`Sink`]s: the destinations.
//!
//! # The data flow
//!
//! A `docker save` v1.2 archive names each layer by its digest
//! (`<sha256>/layer.tar`) and a tar header must state a member's size, so a
//! layer's digest and size are needed before its first byte can be written.
//! The reference encodes every layer twice in a row on one core. Here:
//!
//! 1. every store layer is walked (in parallel), which fixes its contents;
//! 2. a pool of rayon workers encodes layers into a hasher ([`schedule`]
//!    picks the job: the layer the stream waits for, or the one after it,
//!    and otherwise the largest layer left, so that long layers start early
//!    and the stream rarely waits). A sink that works per layer as soon as
//!    the layer is known (a registry upload) does so right there, on the
//!    worker, through its [`LayerHook`];
//! 3. meanwhile this thread hands the layers, in order, to every sink: as
//!    soon as the next layer's digest is known, each sink that writes a
//!    stream produces the layer a second time, straight into its output.
//!    Every file must match the checksum taken in the first pass (see
//!    [`crate::tar::layer`]), and every layer its size, so a file that
//!    changed between the passes stops that sink before it writes its
//!    manifest: an archive cut short, which no engine loads, never a wrong
//!    image;
//! 4. last, the config ([`crate::image::config`]), whose `diff_ids` are
//!    the digests of the uncompressed tars, goes to every sink, which
//!    writes it and its own manifest.
//!
//! Base image layers and the customisation layer are hashed in the same
//! pool, to check them against the digests their sources claim, and to get
//! a whole-layer checksum that their later copies must match.
//!
//! When a sink needs blob digests before the stream (an OCI layout names
//! its members by them; a registry is asked whether it has a blob before
//! anything is uploaded), the hashing pass also compresses each layer, in
//! parallel, and records the blob's digest, size and XXH3, which every
//! later compression must reproduce.
//!
//! # Several sinks
//!
//! Sinks do not know of each other. With one sink, its first error ends
//! the run. With several, a sink that fails is dropped and the others go
//! on; the run then ends with [`Error::Destinations`], which names each
//! failure and each destination that got the image. Errors of the pipeline
//! itself (a spec, a walk, a hashing pass) end the run for all.

pub mod schedule;
mod sink;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::compress::Compression;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::image::base::{BaseImage, MemberHeader};
use crate::image::config::{self, LayerEntry};
use crate::image::custom::CustomLayer;
use crate::image::oci::BlobRef;
use crate::progress::{human_bytes, LayerProgress, Meter, Phase, Progress};
use crate::pycompat::json::PyValue;
use crate::spec::Spec;
use crate::tar::relay::DirectOutput;
use crate::tar::walk;
use schedule::{Job, Schedule};
pub use sink::{LayerHook, Sink};
use source::{Context, Source};

/// Choices that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replaces the spec's `repo_tag` (the `-t` flag).
    pub repo_tag: Option<String>,
    /// How layers are compressed where a sink stores blobs (OCI layouts,
    /// registries).
    pub compression: Compression,
    /// The SBOMs to make of the finished image.
    pub sbom: crate::sbom::Request,
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Number of layers in the image.
    pub layers: usize,
    /// Bytes written by the sinks that write streams.
    pub bytes: u64,
    /// The SBOMs the options asked for.
    pub sboms: Vec<crate::sbom::Document>,
}

/// A layer's digest and size, from the hashing pass, and the checksums
/// every later pass must reproduce.
#[derive(Debug, Clone)]
pub struct Hashed {
    /// The diff_id: sha256 of the uncompressed tar.
    pub digest: Sha256Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// One per regular file for store layers; one for the whole layer
    /// otherwise.
    sums: Vec<u64>,
    /// The stored (compressed) blob and the XXH3 of its bytes, when a sink
    /// asked for blobs in the hashing pass, or when a hook learned the
    /// blob (its XXH3 is then 0 and unused: that blob is not streamed).
    pub blob: Option<(BlobRef, u64)>,
    /// For a layer known from `store_layer_digests`, its position there:
    /// it was not hashed, and every pass that produces it hashes it and
    /// compares it with the record instead.
    recorded: Option<usize>,
}

/// The image being built: the spec with its base image and customisation
/// layer opened and checked, and the config to write.
pub struct Plan<'s> {
    spec: &'s Spec,
    base: Option<BaseImage>,
    custom: Option<CustomLayer>,
    config: PyValue,
    repo_tag: PyValue,
    parents: Vec<String>,
    options: Options,
}

impl<'s> Plan<'s> {
    /// Opens what `spec` names besides its store paths (the base image, the
    /// customisation layer) and checks the settings that every sink needs.
    pub fn new(spec: &'s Spec, options: Options) -> Result<Plan<'s>> {
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
        let config = config::overlay_base(base.as_ref(), spec.config.clone())?;
        crate::record::check(spec)?;
        Ok(Plan {
            spec,
            base,
            custom,
            config,
            repo_tag,
            parents: walk::store_parents(&spec.store_dir),
            options,
        })
    }

    /// The SBOMs of the image whose layers are `sources`, hashed as
    /// `streamed`, with config `config`.
    fn sboms(
        &self,
        sources: &[Source<'_>],
        streamed: &[(String, Hashed)],
        config: &[u8],
    ) -> Result<Vec<crate::sbom::Document>> {
        let request = &self.options.sbom;
        if request.formats.is_empty() {
            return Ok(Vec::new());
        }
        let repo_tag = self.repo_tag_text()?;
        let (name, tag) = crate::image::oci::split_tag(&repo_tag);
        let layers = sources
            .iter()
            .zip(streamed)
            .map(|(source, (_, hashed))| crate::sbom::ImageLayer {
                diff_id: hashed.digest,
                contents: match source {
                    Source::Base(..) => crate::sbom::Contents::Base,
                    Source::Store { paths, .. } => crate::sbom::Contents::Store(paths),
                    Source::Custom(_) => crate::sbom::Contents::Custom,
                },
            })
            .collect();
        let image = crate::sbom::Image {
            name,
            tag,
            created: self.spec.created,
            config,
            layers,
            graph: request.graph.as_deref(),
        };
        Ok(image.documents(&request.formats))
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        self.spec
    }

    /// The mtime of the members the image's sinks write themselves.
    pub fn mtime(&self) -> i64 {
        self.spec.stamp.mtime
    }

    /// The compression of stored blobs.
    pub fn compression(&self) -> Compression {
        self.options.compression
    }

    /// The repo tag as the spec (or `-t`) gives it, for `manifest.json`.
    pub fn repo_tag(&self) -> &PyValue {
        &self.repo_tag
    }

    /// The platform of the image, as a multi-platform image's index names
    /// it: `linux`, the spec's `architecture` (which must then be a
    /// string) and its `variant`.
    pub fn platform(&self) -> Result<crate::image::oci::Platform> {
        let architecture = self
            .spec
            .architecture
            .as_pystr()
            .and_then(|a| a.as_str())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::SpecKey {
                path: self.spec.path.clone(),
                key: "architecture".into(),
                problem: "a multi-platform image needs each spec's architecture, as a string"
                    .into(),
            })?;
        Ok(crate::image::oci::Platform {
            os: "linux".into(),
            architecture: architecture.to_owned(),
            variant: self.spec.variant.clone(),
        })
    }

    /// The repo tag as text, for the formats that need a string.
    pub fn repo_tag_text(&self) -> Result<String> {
        self.repo_tag
            .as_pystr()
            .map(|t| t.to_string_lossy().into_owned())
            .ok_or_else(|| Error::SpecKey {
                path: PathBuf::from("spec"),
                key: "repo_tag".into(),
                problem: "must be a string".into(),
            })
    }

    fn sources(&self) -> Vec<Source<'_>> {
        let mut sources = Vec::new();
        if let Some(base) = &self.base {
            sources.extend(base.layers.iter().map(|l| Source::Base(base, l)));
        }
        for (index, (spec_paths, paths)) in self
            .spec
            .store_layers
            .iter()
            .zip(&self.spec.store_layer_paths)
            .enumerate()
        {
            sources.push(Source::Store {
                spec_paths,
                paths,
                entries: OnceLock::new(),
                index,
            });
        }
        if let Some(custom) = &self.custom {
            sources.push(Source::Custom(custom));
        }
        sources
    }
}

/// One layer, as the pipeline hands it to a sink: its digests, and the
/// means to produce its bytes again, checked against the hashing pass.
pub struct Layer<'p> {
    /// 1-based position in the image.
    pub number: usize,
    /// Layers in the image.
    pub total: usize,
    /// What the hashing pass found.
    pub hashed: &'p Hashed,
    source: &'p Source<'p>,
    meter: &'p LayerProgress,
    cx: &'p Context<'p>,
}

impl Layer<'_> {
    /// The layer's member name in a docker-archive.
    pub fn member_name(&self) -> String {
        self.source.member_name(self.hashed)
    }

    /// What the layer holds, for progress lines.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The layer's progress counters, for a sink to show its phases.
    pub fn progress(&self) -> &LayerProgress {
        self.meter
    }

    /// The mtime of the members that hold the layer.
    pub fn mtime(&self) -> i64 {
        self.cx.spec.stamp.mtime
    }

    /// How the layer's blob is compressed.
    pub fn compression(&self) -> Compression {
        self.cx.compression
    }

    /// For a base image layer, its header there (a docker-archive copies
    /// it).
    pub fn base_header(&self) -> Option<&MemberHeader> {
        match self.source {
            Source::Base(_, layer) => Some(&layer.header),
            _ => None,
        }
    }

    /// For the customisation layer, the metadata of its `layer.tar` (a
    /// docker-archive copies its mode and owner, as the reference does).
    pub fn custom_metadata(&self) -> Option<&std::fs::Metadata> {
        match self.source {
            Source::Custom(custom) => Some(&custom.meta),
            _ => None,
        }
    }

    /// Writes the uncompressed layer tar into `out`, from a producer thread
    /// (large store files spliced into `direct` where given, after `out` is
    /// flushed). Returns the bytes written, those spliced included.
    /// Its bytes count as the layer's streaming phase.
    pub fn produce(
        &self,
        out: &mut dyn std::io::Write,
        direct: Option<&DirectOutput>,
    ) -> Result<u64> {
        self.meter.begin(Phase::Streaming, self.hashed.size, 1);
        let mut metered = Meter::new(out, self.meter);
        let written =
            self.source
                .produce(self.cx, self.hashed, self.number, &mut metered, direct)?;
        metered.finish();
        // Spliced bytes passed the meter by; they count once done.
        let seen = self.meter.done();
        self.meter.add(written.saturating_sub(seen));
        self.meter.end(Phase::Idle);
        Ok(written)
    }

    /// Writes the uncompressed layer tar into `out` on this thread,
    /// counting its bytes into the phase the caller began.
    pub fn produce_here(&self, out: &mut dyn std::io::Write) -> Result<()> {
        let mut metered = Meter::new(out, self.meter);
        self.source
            .produce_here(self.cx, self.hashed, self.number, &mut metered)?;
        metered.finish();
        Ok(())
    }

    /// Writes the compressed blob into `out`; it must be the blob the
    /// hashing pass found. Needs a sink that asked for blobs. Its bytes
    /// count as the layer's streaming phase.
    pub fn produce_blob(
        &self,
        compression: Compression,
        out: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let blob_size = self.hashed.blob.map_or(0, |(b, _)| b.size);
        self.meter.begin(Phase::Streaming, blob_size, 1);
        let mut metered = Meter::new(out, self.meter);
        let written = self.source.produce_blob(
            self.cx,
            self.hashed,
            compression,
            self.number,
            &mut metered,
        )?;
        metered.finish();
        self.meter.end(Phase::Idle);
        Ok(written)
    }
}

/// What every sink gets once all layers are through.
pub struct Finished<'a> {
    /// The image config's bytes.
    pub config: &'a [u8],
    /// Each layer's hashing-pass result and docker-archive member name.
    pub layers: &'a [(String, Hashed)],
    /// The SBOMs the options asked for, which sinks that can hold them
    /// attach to the image.
    pub sboms: &'a [crate::sbom::Document],
}

impl Finished<'_> {
    /// Each layer's stored blob.
    pub fn blobs(&self) -> Vec<BlobRef> {
        self.layers
            .iter()
            .map(|(_, h)| h.blob.expect("a sink that writes blobs asked for them").0)
            .collect()
    }
}

/// A sink and how it is doing.
struct Slot<'k> {
    sink: &'k mut dyn Sink,
    /// Why it stopped, if it failed.
    failed: Option<Error>,
    /// Its reader closed the stream early (`| head`): it wants no more,
    /// which counts as success.
    closed: bool,
}

impl Slot<'_> {
    fn active(&self) -> bool {
        self.failed.is_none() && !self.closed
    }

    /// Records this sink's failure, or, with a single sink, ends the run
    /// with it.
    fn fail(&mut self, e: Error, several: bool) -> Result<()> {
        if !several {
            return Err(e);
        }
        if e.is_broken_pipe() {
            self.closed = true;
        } else if self.failed.is_none() {
            self.failed = Some(e);
        }
        Ok(())
    }
}

/// Builds the image `plan` describes and feeds it to `sinks`.
pub fn run(plan: &Plan<'_>, sinks: &mut [&mut dyn Sink], progress: &Progress) -> Result<Summary> {
    if sinks.is_empty() {
        return Err(Error::Usage("no destination for the image".into()));
    }
    let sources = plan.sources();
    let total_layers = sources.len();
    if total_layers > 125 {
        progress.warning(format_args!(
            "{total_layers} layers; Docker refuses images with more than about 125"
        ));
    }
    // Each layer is read once to hash it, then once per destination.
    let meters = progress.start_layers(total_layers, 1 + sinks.len() as u32);
    for (source, meter) in sources.iter().zip(meters.iter()) {
        meter.set_label(source.describe());
        meter.set_size(source.estimate_size());
    }
    let meters = &meters[..];
    let cx = Context {
        spec: plan.spec,
        parents: &plan.parents,
        compression: plan.options.compression,
    };
    let wants_blobs = sinks.iter().any(|s| s.wants_blobs());
    let blob_compression = wants_blobs.then_some(plan.options.compression);
    // Layers that `store_layer_digests` records skip the hashing pass.
    let recorded: Vec<Option<Hashed>> = sources
        .iter()
        .map(|s| s.recorded(&cx, blob_compression))
        .collect();
    for (hashed, meter) in recorded.iter().zip(meters.iter()) {
        if let Some(h) = hashed {
            meter.set_size(h.size);
        }
    }
    // Nor are they walked ahead when no sink reads every layer: a push
    // reads only what the registry lacks.
    let walk_recorded = sinks.iter().any(|s| s.reads_layers());
    let hooks: Vec<(usize, Arc<dyn LayerHook>)> = sinks
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| s.hook().map(|h| (i, h)))
        .collect();
    let several = sinks.len() > 1;
    let mut slots: Vec<Slot<'_>> = sinks
        .iter_mut()
        .map(|sink| Slot {
            sink: &mut **sink,
            failed: None,
            closed: false,
        })
        .collect();
    // Hooks run on the workers; their failures are collected here, by
    // sink, and become the sink's failure when the stream reaches them.
    let hook_failures: std::sync::Mutex<Vec<(usize, Error)>> = Default::default();

    // The hashing pass of one layer; a recorded layer has none.
    let hash_one = |index: usize| -> Result<Hashed> {
        let started = std::time::Instant::now();
        let source = &sources[index];
        let meter = &meters[index];
        progress.line(format_args!(
            "hashing layer {}/{total_layers}: {}, about {}",
            index + 1,
            source.describe(),
            human_bytes(source.estimate_size())
        ));
        let phase = match blob_compression {
            Some(c) if c != Compression::None => Phase::Compressing,
            _ => Phase::Hashing,
        };
        meter.begin(phase, source.estimate_size(), 1);
        let hashed = source.hash(&cx, blob_compression, meter)?;
        source.check_hashed(&cx, &hashed, index + 1)?;
        meter.set_size(hashed.size);
        meter.end(Phase::Idle);
        progress.line(format_args!(
            "hashed layer {}/{total_layers}: sha256:{} {} in {:.2}s",
            index + 1,
            &hashed.digest.hex()[..12],
            human_bytes(hashed.size),
            started.elapsed().as_secs_f64()
        ));
        Ok(hashed)
    };

    let hasher = |index: usize| -> Result<Hashed> {
        let source = &sources[index];
        let meter = &meters[index];
        let mut hashed = match &recorded[index] {
            Some(known) => {
                progress.line(format_args!(
                    "layer {}/{total_layers}: sha256:{} {} from {}",
                    index + 1,
                    &known.digest.hex()[..12],
                    human_bytes(known.size),
                    crate::record::SPEC_KEY
                ));
                known.clone()
            }
            None => hash_one(index)?,
        };
        for (sink_index, hook) in &hooks {
            if several && failed_hook(&hook_failures, *sink_index) {
                continue;
            }
            let layer = Layer {
                number: index + 1,
                total: total_layers,
                hashed: &hashed,
                source,
                cx: &cx,
                meter,
            };
            match hook.hashed(&layer, progress) {
                Ok(Some(blob)) if hashed.blob.is_none() => hashed.blob = Some((blob, 0)),
                Ok(_) => {}
                Err(e) if several => hook_failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*sink_index, e)),
                Err(e) => return Err(e),
            }
        }
        Ok(hashed)
    };

    let schedule = Schedule::new(total_layers);
    if !walk_recorded {
        for (index, known) in recorded.iter().enumerate() {
            if let Some(h) = known {
                schedule.skip_walk(index, h.size);
            }
        }
    }
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Result<Hashed>)>();
    for slot in slots.iter_mut() {
        if let Err(e) = slot.sink.begin(plan) {
            slot.fail(e, several)?;
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
                        Job::Walk(index) => {
                            meters[index].begin(Phase::Walking, 0, 0);
                            match sources[index].walk() {
                                Ok(walked) => {
                                    let meter = &meters[index];
                                    meter.set_label(sources[index].label());
                                    meter.set_size(sources[index].estimate_size());
                                    meter.end(Phase::Idle);
                                    if let Some(count) = walked {
                                        progress.line(format_args!(
                                            "walked {}: {count} entries",
                                            sources[index].describe()
                                        ));
                                    }
                                    schedule.walked(index, sources[index].estimate_size());
                                    continue;
                                }
                                Err(e) => (index, Err(e)),
                            }
                        }
                        Job::Hash(index) => (index, hasher(index)),
                    };
                    let failed = result.is_err();
                    if tx.send((index, result)).is_err() || failed {
                        schedule.stop();
                    }
                }
            });
        });
        let result = stream(
            sources,
            meters,
            &cx,
            &rx,
            schedule,
            &mut slots,
            &hook_failures,
            several,
            progress,
        );
        // Whatever happened, let the workers finish quickly.
        schedule.stop();
        drop(rx);
        result
    })?;
    if !slots.iter().any(Slot::active) {
        // Several sinks, none left to feed.
        return destinations_outcome(slots).map(|()| Summary {
            layers: total_layers,
            bytes: 0,
            sboms: Vec::new(),
        });
    }

    let entries: Vec<LayerEntry<'_>> = sources
        .iter()
        .zip(&streamed)
        .map(|(source, (name, hashed))| LayerEntry {
            diff_id: &hashed.digest,
            paths: match source {
                Source::Base(..) => vec![name.as_str()],
                Source::Store { spec_paths, .. } => spec_paths.iter().map(String::as_str).collect(),
                Source::Custom(c) => vec![c.dir.as_str()],
            },
        })
        .collect();
    let config_bytes = config::encode(plan.spec, plan.config.clone(), &entries);
    let sboms = plan.sboms(&sources, &streamed, &config_bytes)?;
    let finished = Finished {
        config: &config_bytes,
        layers: &streamed,
        sboms: &sboms,
    };
    let mut bytes = 0;
    for slot in slots.iter_mut().filter(|s| s.active()) {
        match slot.sink.finish(plan, &finished, progress) {
            Ok(n) => bytes += n,
            Err(e) => slot.fail(e, several)?,
        }
    }
    let summary = Summary {
        layers: total_layers,
        bytes,
        sboms,
    };
    if bytes > 0 {
        let secs = progress.elapsed();
        progress.summary(format_args!(
            "done: {} layers, {} in {:.2}s ({:.0} MiB/s)",
            summary.layers,
            human_bytes(summary.bytes),
            secs,
            summary.bytes as f64 / 1048576.0 / secs.max(1e-9)
        ));
    }
    destinations_outcome(slots)?;
    Ok(summary)
}

fn failed_hook(failures: &std::sync::Mutex<Vec<(usize, Error)>>, sink: usize) -> bool {
    failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|(i, _)| *i == sink)
}

/// With several sinks: an error naming each that failed, and those that
/// got the image.
fn destinations_outcome(slots: Vec<Slot<'_>>) -> Result<()> {
    if slots.iter().all(|s| s.failed.is_none()) {
        return Ok(());
    }
    let total = slots.len();
    let mut failed = Vec::new();
    let mut succeeded = Vec::new();
    for slot in slots {
        let name = slot.sink.destination();
        match slot.failed {
            Some(e) => failed.push((name, e)),
            None => succeeded.push(name),
        }
    }
    Err(Error::Destinations {
        total,
        failed,
        succeeded,
    })
}

/// Hands every layer, in order, to every sink still running; returns each
/// layer's member name and hashing-pass result.
#[allow(clippy::too_many_arguments)]
fn stream(
    sources: &[Source<'_>],
    meters: &[LayerProgress],
    cx: &Context<'_>,
    rx: &crossbeam_channel::Receiver<(usize, Result<Hashed>)>,
    schedule: &Schedule,
    slots: &mut [Slot<'_>],
    hook_failures: &std::sync::Mutex<Vec<(usize, Error)>>,
    several: bool,
    progress: &Progress,
) -> Result<Vec<(String, Hashed)>> {
    let mut ready: Vec<Option<Hashed>> = vec![None; sources.len()];
    let mut done = Vec::with_capacity(sources.len());
    for (index, source) in sources.iter().enumerate() {
        schedule.streaming(index);
        while ready[index].is_none() {
            let (i, result) = rx.recv().map_err(|_| {
                Error::Output(std::io::Error::other(
                    "hashing workers stopped unexpectedly",
                ))
            })?;
            ready[i] = Some(result?);
        }
        let hashed = ready[index].take().expect("checked above");
        progress.line(format_args!(
            "streaming layer {}/{}: {}",
            index + 1,
            sources.len(),
            human_bytes(hashed.size)
        ));
        for (sink_index, e) in
            std::mem::take(&mut *hook_failures.lock().unwrap_or_else(|p| p.into_inner()))
        {
            slots[sink_index].fail(e, several)?;
        }
        let layer = Layer {
            number: index + 1,
            total: sources.len(),
            hashed: &hashed,
            source,
            cx,
            meter: &meters[index],
        };
        for slot in slots.iter_mut().filter(|s| s.active()) {
            if let Err(e) = slot.sink.layer(&layer, progress) {
                slot.fail(e, several)?;
            }
        }
        meters[index].end(Phase::Done);
        if several && !slots.iter().any(Slot::active) {
            break;
        }
        done.push((layer.member_name(), hashed));
    }
    for (sink_index, e) in
        std::mem::take(&mut *hook_failures.lock().unwrap_or_else(|p| p.into_inner()))
    {
        slots[sink_index].fail(e, several)?;
    }
    Ok(done)
}
