//! The default command: build an image from a spec.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context};
use stream_layered_image::compress::Compression;
use stream_layered_image::image::{self, Options};
use stream_layered_image::oci::Format;
use stream_layered_image::progress::Progress;
use stream_layered_image::relay::DirectOutput;
use stream_layered_image::spec::Spec;

const HELP: &str = "\
stream-layered-image: write a layered Docker image archive from Nix or Guix store paths

USAGE:
    stream-layered-image SPEC.json [-t REPO:TAG] [-o FILE] [--quiet]
                         [--format FORMAT] [--compress none|gzip|zstd[:LEVEL]]
    stream-layered-image SPEC.json --push [docker://]HOST[:PORT]/REPO[:TAG]
                         [--compress C] [--creds USER:PASS] [--insecure]
                         [--cert-dir DIR] [--cache DIR]
    stream-layered-image layers --graph FILE --max-layers N [--strategy NAME] ...
    stream-layered-image diff OLD.tar NEW.tar

Writes a `docker save` (v1.2) archive to stdout, or to FILE with -o: one
<sha256>/layer.tar per layer, then <sha256>.json (the image config), then
manifest.json. The bytes are identical to what nixpkgs' stream_layered_image.py
writes for the same spec, so layer digests and image IDs do not change.

OPTIONS:
    -t, --repo_tag REPO:TAG   replace the spec's repo_tag
    -o, --output FILE         write to FILE instead of stdout (removed on error)
    -q, --quiet               no progress lines and no summary on stderr
    --format FORMAT           docker-archive (default): the archive above;
                              oci-archive: an OCI image layout (oci-layout,
                              blobs/sha256/..., index.json) as a tar;
                              oci-dir DIR: the same layout written into DIR;
                              docker+oci: one tar holding the OCI layout and
                              Docker's manifest.json, like `docker save` of
                              Docker 25+, for docker load, podman load and
                              skopeo copy oci-archive:
    --compress C              layer compression for the OCI formats: none
                              (default), gzip[:0-9] (default level 5) or
                              zstd[:1-22] (default 3); per layer, in parallel,
                              and the same bytes whatever the thread count
    --push [docker://]HOST[:PORT]/REPO[:TAG]
                              upload straight to a registry (OCI distribution
                              API): blobs the registry has are skipped, the
                              others uploaded in chunks as they are
                              compressed, the manifest last
    --creds USER:PASS         credentials for --push (basic, or for the token
                              endpoint of a Bearer challenge); without it
                              they come from $REGISTRY_AUTH_FILE,
                              $XDG_RUNTIME_DIR/containers/auth.json,
                              ~/.config/containers/auth.json or
                              $DOCKER_CONFIG/config.json (~/.docker), with
                              their docker-credential-* helpers
    --insecure                plain HTTP for --push (default: HTTPS with the
                              system's CA roots)
    --cert-dir DIR            for --push: *.crt in DIR are extra CA roots, a
                              NAME.cert with NAME.key the client certificate
    --cache DIR               for --push: remember which compressed blob each
                              layer became; an unchanged layer the registry
                              has is then neither compressed nor uploaded,
                              and a new one is compressed once
    -h, --help                this text
    -V, --version             the version

SPEC KEYS (JSON object; unknown keys are ignored):
    store_layers         list of layers, each a list of store paths (required)
    store_dir            the store, e.g. /nix/store or /gnu/store
                         (default /nix/store); every layer starts with its
                         parent directories, mode 0755
    created              \"now\" or an ISO 8601 time (required); naive times are UTC
    mtime                \"now\" or ISO 8601; mtime of every file (default: created)
    uid, gid             owner of every file (default 0, 0)
    uname, gname         owner names (default \"root\", \"root\")
    architecture         copied into the image config (required), e.g. \"amd64\"
    config               the image config's \"config\" object (required)
    from_image           a docker-archive (optionally gzipped) whose layers come
                         first and whose Env is merged into config.Env; or null
    customisation_layer  a directory holding layer.tar and checksum (its
                         sha256), added as the last layer; or null
    repo_tag             \"name:tag\" for manifest.json (required unless -t)

Each store path is archived with its contents, sorted the way Python's pathlib
sorts; hard links become regular files; fifos, sockets and devices are errors.
If a file changes while the image is being written, the run stops with an
error naming it, before the manifest is written.

EXAMPLE (Nix):
    nix-build -A myImage && ./result | docker load
";

/// Whether `e` is our output closing early, which counts as success.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<stream_layered_image::Error>()
        .is_some_and(|e| e.is_broken_pipe())
}

/// Runs the build command.
pub fn main(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut spec_path: Option<PathBuf> = None;
    let mut output: Option<PathBuf> = None;
    let mut options = Options::default();
    let mut quiet = false;
    let mut push: Option<String> = None;
    let mut creds: Option<String> = None;
    let mut insecure = false;
    let mut cert_dir: Option<PathBuf> = None;
    let mut push_cache: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let mut value = |flag: &str| -> anyhow::Result<OsString> {
            args.next().with_context(|| format!("{flag} needs a value"))
        };
        match &*text {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(());
            }
            "-V" | "--version" => {
                println!("stream-layered-image {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "-q" | "--quiet" => quiet = true,
            "-t" | "--repo_tag" | "--repo-tag" => {
                options.repo_tag = Some(value(&text)?.to_string_lossy().into_owned())
            }
            "-o" | "--output" => output = Some(value(&text)?.into()),
            "--format" => {
                let name = value(&text)?.to_string_lossy().into_owned();
                let dir = if name == "oci-dir" {
                    Some(value("--format oci-dir")?.into())
                } else {
                    None
                };
                options.format = Format::parse(&name, dir)?;
            }
            "--push" => push = Some(value(&text)?.to_string_lossy().into_owned()),
            "--creds" => creds = Some(value(&text)?.to_string_lossy().into_owned()),
            "--insecure" => insecure = true,
            "--cert-dir" => cert_dir = Some(value(&text)?.into()),
            "--cache" => push_cache = Some(value(&text)?.into()),
            "--compress" => {
                options.compression = Compression::parse(&value(&text)?.to_string_lossy())?;
            }
            s if s.starts_with("--repo_tag=") || s.starts_with("--repo-tag=") => {
                options.repo_tag = Some(s.split_once('=').map(|x| x.1).unwrap_or("").to_owned())
            }
            s if s.starts_with('-') && s.len() > 1 => {
                bail!("unknown option {s:?}; see --help")
            }
            _ if spec_path.is_none() => spec_path = Some(arg.into()),
            _ => bail!("unexpected argument {text:?}; see --help"),
        }
    }
    let Some(spec_path) = spec_path else {
        bail!("no spec file given; see --help");
    };
    let spec = Spec::load(&spec_path)?;
    let progress = Progress::new(quiet);

    if let Some(target) = push {
        if output.is_some() || options.format != Format::DockerArchive {
            bail!("--push writes no file; -o and --format do not apply");
        }
        let mut target =
            stream_layered_image::push::Target::parse(&target, insecure, creds.as_deref())?;
        target.cert_dir = cert_dir;
        target.cache = push_cache;
        if options.repo_tag.is_none() {
            options.repo_tag = Some(format!("{}/{}:{}", target.host, target.repo, target.tag));
        }
        options.format = Format::Push(target);
        image::write_docker_archive(&spec, &options, &mut std::io::sink(), &progress)?;
        return Ok(());
    }

    if creds.is_some() || insecure || cert_dir.is_some() || push_cache.is_some() {
        bail!("--creds, --insecure, --cert-dir and --cache apply to --push only");
    }

    if let Format::OciDir(dir) = &options.format {
        if output.is_some() {
            bail!("--format oci-dir writes into {dir:?}; -o does not apply");
        }
        image::write_docker_archive(&spec, &options, &mut std::io::sink(), &progress)?;
        return Ok(());
    }

    match output {
        None => {
            // Stdout is line-buffered; write through our own buffer on a
            // duplicate of its descriptor instead.
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating stdout")?;
            // A bigger pipe means fewer wake-ups of the reader (docker load,
            // skopeo, cat) per gigabyte. Not a pipe, or not allowed: no harm.
            let _ = rustix::pipe::fcntl_setpipe_size(&fd, 1 << 20);
            options.direct_output =
                DirectOutput::new(fd.try_clone().context("duplicating stdout")?)
                    .context("inspecting stdout")?
                    .map(std::sync::Arc::new);
            let mut out = BufWriter::with_capacity(128 << 10, File::from(fd));
            image::write_docker_archive(&spec, &options, &mut out, &progress)?;
            out.flush().map_err(stream_layered_image::Error::Output)?;
        }
        Some(path) => {
            let file = File::create(&path)
                .map_err(|e| stream_layered_image::Error::io(&path, "creating output", e))?;
            options.direct_output = file
                .try_clone()
                .map(OwnedFd::from)
                .and_then(DirectOutput::new)
                .map_err(|e| stream_layered_image::Error::io(&path, "inspecting output", e))?
                .map(std::sync::Arc::new);
            let mut out = BufWriter::with_capacity(128 << 10, file);
            let result = image::write_docker_archive(&spec, &options, &mut out, &progress)
                .and_then(|_| out.flush().map_err(stream_layered_image::Error::Output));
            if let Err(e) = result {
                drop(out);
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}
