//! The default command: build an image from a spec, into every destination
//! the options name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use stream_layered_image::compress::Compression;
use stream_layered_image::engine::Docker;
use stream_layered_image::pipeline::{self, Options, Plan, Summary};
use stream_layered_image::progress::{Mode, Progress};
use stream_layered_image::record_cache;
use stream_layered_image::registry::Target;
use stream_layered_image::sink::docker_archive::DockerArchive;
use stream_layered_image::sink::engine::{DockerLoad, PodmanLoad};
use stream_layered_image::sink::members::{DirMembers, TarStream};
use stream_layered_image::sink::oci_layout::OciLayout;
use stream_layered_image::sink::registry::RegistrySink;
use stream_layered_image::sink::Sink;
use stream_layered_image::spec::Spec;
use stream_layered_image::tar::relay::DirectOutput;
use stream_layered_image::Error;

use super::args::{BuildArgs, FormatName, LoadEngine};
use super::output::OutputFile;

/// Whether `e` is our output closing early, which counts as success.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Error>()
        .is_some_and(|e| e.is_broken_pipe())
}

/// Where the image's bytes go, besides registries.
enum Stream {
    Stdout,
    File(PathBuf),
    Dir(PathBuf),
    None,
}

/// The progress reporter that `--progress` and `--quiet` ask for.
fn progress_of(args: &BuildArgs) -> Progress {
    Progress::with_mode(if args.quiet {
        Mode::None
    } else {
        args.progress.into()
    })
}

/// Runs the build command.
pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(FormatName::DockerArchive);
    let stream = match (format, &args.oci_dir, &args.output) {
        (FormatName::OciDir, None, _) => bail!("--format oci-dir needs a directory"),
        (FormatName::OciDir, Some(dir), None) => Stream::Dir(dir.clone()),
        (FormatName::OciDir, Some(dir), Some(_)) => {
            bail!("--format oci-dir writes into {dir:?}; -o does not apply")
        }
        (_, Some(_), _) => bail!("--oci-dir goes with --format oci-dir"),
        (_, None, Some(path)) => Stream::File(path.clone()),
        (_, None, None) if !args.push.is_empty() => {
            if args.format.is_some() {
                bail!("--push writes no file; --format applies to -o FILE or oci-dir DIR");
            }
            Stream::None
        }
        (_, None, None) if args.load.is_some() => {
            if args.format.is_some_and(|f| f != FormatName::DockerArchive) {
                bail!("--load sends the engine a docker-archive; --format applies to -o FILE or oci-dir DIR");
            }
            Stream::None
        }
        (_, None, None) => Stream::Stdout,
    };
    if args.push.is_empty() && (args.creds.is_some() || args.insecure || args.cert_dir.is_some()) {
        bail!("--creds, --insecure and --cert-dir apply to --push only");
    }
    let Some(spec_path) = args.specs.first() else {
        bail!("no spec file given; see --help");
    };
    let compression = match &args.compress {
        Some(c) => Compression::parse(c)?,
        None => Compression::None,
    };
    if compression != Compression::None
        && args.push.is_empty()
        && format == FormatName::DockerArchive
    {
        return Err(Error::Usage(
            "--compress applies to the OCI formats; a docker-archive stores plain layer tars"
                .into(),
        )
        .into());
    }
    let targets = args
        .push
        .iter()
        .map(|text| {
            let mut target = Target::parse(text, args.insecure, args.creds.as_deref())?;
            target.cert_dir = args.cert_dir.clone();
            target.cache = args.cache.clone();
            Ok(target)
        })
        .collect::<stream_layered_image::Result<Vec<_>>>()?;

    let sbom = sbom_request(&args, format, &stream)?;
    // Opened before the run, so that an unwritable --sbom-out fails it
    // before any image is written.
    let sbom_files = args
        .sbom_out
        .iter()
        .map(|path| OutputFile::create(path).map(|file| (file, path)))
        .collect::<Result<Vec<_>, _>>()?;
    if args.specs.len() > 1 {
        if args.load.is_some() {
            bail!("--load takes one spec: an engine loads one image, not a multi-platform index");
        }
        return run_multi_platform(&args, format, stream, compression, targets, sbom);
    }
    let mut spec = Spec::load(spec_path)?;
    let progress = progress_of(&args);
    if let Some(cache) = &args.cache {
        remember_records(&mut spec, cache, compression, &progress)?;
    }
    let repo_tag = args.repo_tag.clone().or_else(|| {
        // A spec without a repo_tag can still be pushed: the image is then
        // named after its first registry.
        spec.repo_tag
            .is_none()
            .then(|| targets.first())
            .flatten()
            .map(|t| format!("{}/{}:{}", t.host, t.repo, t.tag))
    });
    let plan = Plan::new(
        &spec,
        Options {
            repo_tag,
            compression,
            sbom,
        },
    )?;

    let mut registries = targets
        .into_iter()
        .map(RegistrySink::new)
        .collect::<stream_layered_image::Result<Vec<_>>>()?;
    let mut docker_load = match args.load {
        Some(LoadEngine::Docker) => Some(DockerLoad::new(Docker::from_env()?)),
        _ => None,
    };
    let mut podman_load = (args.load == Some(LoadEngine::Podman)).then(PodmanLoad::new);
    let mut sinks: Vec<&mut dyn Sink> = Vec::new();
    for registry in registries.iter_mut() {
        sinks.push(registry);
    }
    if let Some(load) = docker_load.as_mut() {
        sinks.push(load);
    }
    if let Some(load) = podman_load.as_mut() {
        sinks.push(load);
    }
    let summary = match stream {
        Stream::None => pipeline::run(&plan, &mut sinks, &progress)?,
        Stream::Dir(dir) => {
            let mut layout = OciLayout::new(
                DirMembers::create(&dir)?,
                false,
                format!("{}", dir.display()),
            );
            run_with(&plan, &mut layout, &mut sinks, &progress)?
        }
        Stream::Stdout => {
            // Stdout is line-buffered; write through our own buffer on a
            // duplicate of its descriptor instead.
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?;
            // A bigger pipe means fewer wake-ups of the reader (docker load,
            // skopeo, cat) per gigabyte. Not a pipe, or not allowed: no harm.
            let _ = rustix::pipe::fcntl_setpipe_size(&fd, 1 << 20);
            let direct = DirectOutput::new(fd.try_clone().context("duplicating stdout")?)
                .context("inspecting stdout")?
                .map(Arc::new);
            let out = BufWriter::with_capacity(128 << 10, File::from(fd));
            let (_, outcome) = write_stream(
                &plan,
                format,
                out,
                direct,
                "stdout".into(),
                sinks,
                &progress,
            );
            outcome?
        }
        Stream::File(path) => {
            let output = OutputFile::create(&path)?;
            let direct = output
                .file()
                .try_clone()
                .map(OwnedFd::from)
                .and_then(DirectOutput::new)
                .map_err(|e| Error::io(&path, "inspecting output", e))?
                .map(Arc::new);
            let out = BufWriter::with_capacity(128 << 10, output);
            let name = format!("-o {}", path.display());
            let (out, outcome) = write_stream(&plan, format, out, direct, name, sinks, &progress);
            // The file is whole when its own sink finished, even if another
            // destination failed.
            if let Some(out) = out {
                out.into_inner()
                    .map_err(|e| Error::Output(e.into_error()))?
                    .commit()?;
            }
            outcome?
        }
    };
    for (document, (mut file, path)) in summary.sboms.iter().zip(sbom_files) {
        file.write_all(&document.bytes)
            .map_err(|e| Error::io(path, "writing", e))?;
        file.commit()?;
    }
    Ok(())
}

/// With `--cache`: records for the spec's store layers from the record
/// cache, the missing ones hashed now (see [`record_cache`]).
fn remember_records(
    spec: &mut Spec,
    cache: &Path,
    compression: Compression,
    progress: &Progress,
) -> anyhow::Result<()> {
    let layers = spec.store_layers.len();
    let filled = record_cache::fill(spec, cache, compression)?;
    for warning in &filled.warnings {
        progress.warning(format_args!("{warning}"));
    }
    if filled.found + filled.hashed > 0 {
        progress.line(format_args!(
            "record cache: {} of {layers} store layers known, {} hashed now",
            filled.found, filled.hashed
        ));
    }
    Ok(())
}

/// The SBOMs `--sbom` asks for, checked against where the image goes.
fn sbom_request(
    args: &BuildArgs,
    format: FormatName,
    stream: &Stream,
) -> anyhow::Result<stream_layered_image::sbom::Request> {
    use stream_layered_image::sbom::{Format, Request};
    if args.sbom.is_empty() {
        if !args.sbom_out.is_empty() || args.graph.is_some() {
            bail!("--sbom-out and --graph go with --sbom FORMAT");
        }
        return Ok(Request::default());
    }
    let mut formats: Vec<Format> = Vec::new();
    for &name in &args.sbom {
        let format = Format::from(name);
        if formats.contains(&format) {
            bail!("--sbom {} is given twice", format.name());
        }
        formats.push(format);
    }
    if !args.sbom_out.is_empty() && args.sbom_out.len() != formats.len() {
        bail!(
            "--sbom-out: give one FILE per --sbom format ({} formats, {} files)",
            formats.len(),
            args.sbom_out.len()
        );
    }
    if !args.sbom_out.is_empty() && args.specs.len() > 1 {
        bail!("--sbom-out: several specs make one SBOM per platform; they are attached to the images instead");
    }
    // No stream at all and no push: a --load alone, whose engine gets a
    // docker-archive too.
    let archive_only = args.push.is_empty()
        && (matches!(stream, Stream::None)
            || format == FormatName::DockerArchive
                && matches!(stream, Stream::Stdout | Stream::File(_)));
    if archive_only && args.sbom_out.is_empty() {
        bail!(
            "--sbom: a docker-archive cannot hold an SBOM; add --sbom-out FILE, use an OCI --format, or --push"
        );
    }
    let graph = match &args.graph {
        Some(path) => Some(std::sync::Arc::new(
            stream_layered_image::layering::graph::Graph::read(path)?,
        )),
        None => None,
    };
    Ok(Request { formats, graph })
}

/// Runs the pipeline with a stream destination of `format` on `out` (plus
/// `others`); gives `out` back when that destination got the whole image.
fn write_stream<W: Write + 'static>(
    plan: &Plan<'_>,
    format: FormatName,
    out: W,
    direct: Option<Arc<DirectOutput>>,
    destination: String,
    others: Vec<&mut dyn Sink>,
    progress: &Progress,
) -> (Option<W>, stream_layered_image::Result<Summary>) {
    let mut others = others;
    let whole = |outcome: &stream_layered_image::Result<Summary>| match outcome {
        Ok(_) => true,
        Err(Error::Destinations { succeeded, .. }) => succeeded.contains(&destination),
        Err(_) => false,
    };
    match format {
        FormatName::DockerArchive => {
            let mut archive = DockerArchive::new(out, direct, destination.clone());
            let outcome = run_with(plan, &mut archive, &mut others, progress);
            (whole(&outcome).then(|| archive.into_inner()), outcome)
        }
        FormatName::OciArchive | FormatName::DockerOci => {
            let mut layout = OciLayout::new(
                TarStream::new(out),
                format == FormatName::DockerOci,
                destination.clone(),
            );
            let outcome = run_with(plan, &mut layout, &mut others, progress);
            (
                whole(&outcome).then(|| layout.into_members().into_inner()),
                outcome,
            )
        }
        FormatName::OciDir => unreachable!("a directory is not a stream"),
    }
}

/// Runs the pipeline into `first` and then `others`.
fn run_with(
    plan: &Plan<'_>,
    first: &mut dyn Sink,
    others: &mut [&mut dyn Sink],
    progress: &Progress,
) -> stream_layered_image::Result<Summary> {
    let mut all: Vec<&mut dyn Sink> = vec![first];
    all.extend(others.iter_mut().map(|s| &mut **s as &mut dyn Sink));
    pipeline::run(plan, &mut all, progress)
}

/// Several specs: one image per spec, and an image index naming each with
/// its platform, in one OCI layout and under each registry's tag. Layers the
/// images share are stored (and uploaded) once.
fn run_multi_platform(
    args: &BuildArgs,
    format: FormatName,
    stream: Stream,
    compression: Compression,
    targets: Vec<Target>,
    sbom: stream_layered_image::sbom::Request,
) -> anyhow::Result<()> {
    let holds_index = match stream {
        Stream::None | Stream::Dir(_) => true,
        Stream::Stdout | Stream::File(_) => format == FormatName::OciArchive,
    };
    if !holds_index {
        let name = match format {
            FormatName::DockerOci => "docker+oci archive",
            _ => "docker-archive",
        };
        bail!(
            "several specs make a multi-platform image, which a {name} cannot hold; \
             use --format oci-archive, --format oci-dir DIR or --push"
        );
    }
    let mut specs = args
        .specs
        .iter()
        .map(|p| Spec::load(p))
        .collect::<stream_layered_image::Result<Vec<_>>>()?;
    let progress = progress_of(args);
    if let Some(cache) = &args.cache {
        for spec in specs.iter_mut() {
            remember_records(spec, cache, compression, &progress)?;
        }
    }
    let first_target = targets
        .first()
        .map(|t| format!("{}/{}:{}", t.host, t.repo, t.tag));
    let mut plans = Vec::new();
    let mut platforms: Vec<(stream_layered_image::image::oci::Platform, &Path)> = Vec::new();
    for spec in &specs {
        let repo_tag = args.repo_tag.clone().or_else(|| {
            spec.repo_tag
                .is_none()
                .then(|| first_target.clone())
                .flatten()
        });
        let plan = Plan::new(
            spec,
            Options {
                repo_tag,
                compression,
                sbom: sbom.clone(),
            },
        )?;
        let platform = plan.platform()?;
        if let Some((_, other)) = platforms.iter().find(|(p, _)| *p == platform) {
            bail!(
                "{:?}: platform {platform} is also that of {:?}; each spec of a multi-platform image needs a platform of its own",
                spec.path,
                other
            );
        }
        platforms.push((platform, &spec.path));
        plans.push(plan);
    }
    let tag = plans[0].repo_tag_text()?;
    let mtime = plans[0].mtime();
    let mut registries = targets
        .into_iter()
        .map(RegistrySink::multi_platform)
        .collect::<stream_layered_image::Result<Vec<_>>>()?;
    let mut outcome = Outcome::default();
    match stream {
        Stream::None => {
            for plan in &plans {
                outcome.run(plan, None, &mut registries, &progress)?;
            }
            outcome.finish_registries(&mut registries, &progress)?;
        }
        Stream::Dir(dir) => {
            let mut layout =
                OciLayout::multi_platform(DirMembers::create(&dir)?, format!("{}", dir.display()));
            for plan in &plans {
                outcome.run(plan, Some(&mut layout), &mut registries, &progress)?;
            }
            outcome.finish_layout(&mut layout, &tag, mtime)?;
            outcome.finish_registries(&mut registries, &progress)?;
        }
        Stream::Stdout => {
            let out = BufWriter::with_capacity(128 << 10, std::io::stdout().lock());
            let mut layout = OciLayout::multi_platform(TarStream::new(out), "stdout".into());
            for plan in &plans {
                outcome.run(plan, Some(&mut layout), &mut registries, &progress)?;
            }
            outcome.finish_layout(&mut layout, &tag, mtime)?;
            outcome.finish_registries(&mut registries, &progress)?;
        }
        Stream::File(path) => {
            let output = OutputFile::create(&path)?;
            let out = BufWriter::with_capacity(128 << 10, output);
            let mut layout =
                OciLayout::multi_platform(TarStream::new(out), format!("-o {}", path.display()));
            for plan in &plans {
                outcome.run(plan, Some(&mut layout), &mut registries, &progress)?;
            }
            if outcome.finish_layout(&mut layout, &tag, mtime)? {
                layout
                    .into_members()
                    .into_inner()
                    .into_inner()
                    .map_err(|e| Error::Output(e.into_error()))?
                    .commit()?;
            }
            outcome.finish_registries(&mut registries, &progress)?;
        }
    }
    let bytes = outcome.bytes;
    if bytes > 0 {
        progress.summary(format_args!(
            "done: {} images, {} in {:.2}s",
            plans.len(),
            stream_layered_image::progress::human_bytes(bytes),
            progress.elapsed()
        ));
    }
    outcome.into_result()
}

/// The destinations of a multi-platform run: which failed, and the bytes
/// written. One failing destination drops out of the later images; with
/// several, the others go on.
#[derive(Default)]
struct Outcome {
    total: usize,
    failed: Vec<(String, Error)>,
    succeeded: Vec<String>,
    bytes: u64,
}

impl Outcome {
    fn alive(&self, name: &str) -> bool {
        !self.failed.iter().any(|(n, _)| n == name)
    }

    /// Records `e` as `name`'s failure; a lone destination's failure ends
    /// the run with its own error.
    fn fail(&mut self, name: String, e: Error) -> stream_layered_image::Result<()> {
        if self.total <= 1 {
            return Err(e);
        }
        if self.alive(&name) {
            self.failed.push((name, e));
        }
        Ok(())
    }

    /// One platform's image, into the destinations still alive.
    fn run(
        &mut self,
        plan: &Plan<'_>,
        layout: Option<&mut dyn Sink>,
        registries: &mut [RegistrySink],
        progress: &Progress,
    ) -> stream_layered_image::Result<()> {
        self.total = registries.len() + usize::from(layout.is_some());
        let mut sinks: Vec<&mut dyn Sink> = Vec::new();
        if let Some(layout) = layout {
            if self.alive(&layout.destination()) {
                sinks.push(layout);
            }
        }
        for registry in registries.iter_mut() {
            if self.alive(&registry.destination()) {
                sinks.push(registry);
            }
        }
        if sinks.is_empty() {
            // Every destination failed on an earlier image.
            return Ok(());
        }
        let names: Vec<String> = sinks.iter().map(|s| s.destination()).collect();
        match pipeline::run(plan, &mut sinks, progress) {
            Ok(_) => Ok(()),
            Err(Error::Destinations { failed, .. }) => {
                for (name, e) in failed {
                    self.fail(name, e)?;
                }
                Ok(())
            }
            Err(e) if names.len() == 1 => self.fail(names[0].clone(), e),
            Err(e) => Err(e),
        }
    }

    /// Ends the layout, if it is still alive; whether it is whole.
    fn finish_layout<M: stream_layered_image::sink::members::Members>(
        &mut self,
        layout: &mut OciLayout<M>,
        tag: &str,
        mtime: i64,
    ) -> stream_layered_image::Result<bool> {
        let name = layout.destination();
        if !self.alive(&name) {
            return Ok(false);
        }
        match layout.finish_index(tag, mtime) {
            Ok(n) => {
                self.bytes += n;
                self.succeeded.push(name);
                Ok(true)
            }
            Err(e) => self.fail(name, e).map(|()| false),
        }
    }

    fn finish_registries(
        &mut self,
        registries: &mut [RegistrySink],
        progress: &Progress,
    ) -> stream_layered_image::Result<()> {
        for registry in registries.iter_mut() {
            let name = registry.destination();
            if !self.alive(&name) {
                continue;
            }
            match registry.finish_index(progress) {
                Ok(()) => self.succeeded.push(name),
                Err(e) => self.fail(name, e)?,
            }
        }
        Ok(())
    }

    fn into_result(self) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(Error::Destinations {
            total: self.total,
            failed: self.failed,
            succeeded: self.succeeded,
        }
        .into())
    }
}
