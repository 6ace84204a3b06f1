//! The default command: build an image from a spec, into every destination
//! the options name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use stream_layered_image::compress::Compression;
use stream_layered_image::pipeline::{self, Options, Plan};
use stream_layered_image::progress::{Mode, Progress};
use stream_layered_image::registry::Target;
use stream_layered_image::sink::docker_archive::DockerArchive;
use stream_layered_image::sink::members::{DirMembers, TarStream};
use stream_layered_image::sink::oci_layout::OciLayout;
use stream_layered_image::sink::registry::RegistrySink;
use stream_layered_image::sink::Sink;
use stream_layered_image::spec::Spec;
use stream_layered_image::tar::relay::DirectOutput;
use stream_layered_image::Error;

use super::args::{BuildArgs, FormatName};
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
        (_, None, None) => Stream::Stdout,
    };
    if args.push.is_empty()
        && (args.creds.is_some()
            || args.insecure
            || args.cert_dir.is_some()
            || args.cache.is_some())
    {
        bail!("--creds, --insecure, --cert-dir and --cache apply to --push only");
    }
    let Some(spec_path) = &args.spec else {
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

    let spec = Spec::load(spec_path)?;
    let progress = Progress::with_mode(if args.quiet {
        Mode::None
    } else {
        args.progress.into()
    });
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
        },
    )?;

    let mut registries = targets
        .into_iter()
        .map(RegistrySink::new)
        .collect::<stream_layered_image::Result<Vec<_>>>()?;
    let mut sinks: Vec<&mut dyn Sink> = Vec::new();
    for registry in registries.iter_mut() {
        sinks.push(registry);
    }
    match stream {
        Stream::None => {
            pipeline::run(&plan, &mut sinks, &progress)?;
        }
        Stream::Dir(dir) => {
            let mut layout = OciLayout::new(
                DirMembers::create(&dir)?,
                false,
                format!("{}", dir.display()),
            );
            run_with(&plan, &mut layout, &mut sinks, &progress)?;
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
            outcome?;
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
            outcome?;
        }
    }
    Ok(())
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
) -> (Option<W>, stream_layered_image::Result<()>) {
    let mut others = others;
    let whole = |outcome: &stream_layered_image::Result<()>| match outcome {
        Ok(()) => true,
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
) -> stream_layered_image::Result<()> {
    let mut all: Vec<&mut dyn Sink> = vec![first];
    all.extend(others.iter_mut().map(|s| &mut **s as &mut dyn Sink));
    pipeline::run(plan, &mut all, progress).map(drop)
}
