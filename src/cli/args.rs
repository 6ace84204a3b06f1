//! The command line, declared once: parsing, `--help`, the man page, the
//! shell completions and the README's option table all come from these
//! types.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// The spec keys, shown after the options in `--help` and the man page.
pub const SPEC_KEYS: &str = "\
Spec keys (JSON object; unknown keys are ignored):
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
  store_layer_digests  one record per store layer, as `stream-layered-image
                       digest SPEC.json` prints them: the layers are then
                       not hashed ahead but checked as they are written,
                       and a push reads no layer the registry has

Each store path is archived with its contents, sorted the way Python's pathlib
sorts; hard links become regular files; fifos, sockets and devices are errors.
If a file changes while the image is being written, the run stops with an
error naming it, before the manifest is written.

Example (Nix):
  nix-build -A myImage && ./result | docker load";

/// Writes a layered container image from Nix or Guix store paths.
///
/// By default, a `docker save` (v1.2) archive on stdout, or in FILE with
/// -o: one <sha256>/layer.tar per layer, then <sha256>.json (the image
/// config), then manifest.json. The bytes are identical to what nixpkgs'
/// stream_layered_image.py writes for the same spec, so layer digests and
/// image IDs do not change.
#[derive(Debug, Parser)]
#[command(
    name = "stream-layered-image",
    version,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    after_long_help = SPEC_KEYS,
    max_term_width = 100
)]
pub struct Cli {
    /// A subcommand; without one, builds the image.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The image to build.
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Building an image from a spec.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The spec: nixpkgs' conf.json, or any JSON object with the keys below.
    /// Several specs (one per platform) make one multi-platform image: an
    /// OCI image index naming each spec's image with its architecture (and
    /// `variant`), for --push, --format oci-archive and oci-dir.
    #[arg(value_name = "SPEC.json")]
    pub specs: Vec<PathBuf>,

    /// Replace the spec's repo_tag (an empty value keeps the spec's, as in
    /// the reference).
    #[arg(
        short = 't',
        long = "repo_tag",
        visible_alias = "repo-tag",
        value_name = "REPO:TAG"
    )]
    pub repo_tag: Option<String>,

    /// Write to FILE instead of stdout. FILE appears only once complete (it
    /// is written under a temporary name beside it, then renamed), and a
    /// run that fails or is interrupted leaves no FILE.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// No progress lines and no summary on stderr (--progress none).
    #[arg(short, long)]
    pub quiet: bool,

    /// How progress shows on stderr: auto (bars when stderr is a terminal
    /// and TERM is not dumb, else plain), bar (live bars: one line per
    /// active layer with its phase, bytes and throughput, and a total with
    /// the time left), plain (one line per event, as in build logs) or
    /// none. NO_COLOR turns the bars' colours off.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ProgressName::Auto)]
    pub progress: ProgressName,

    /// What to write: docker-archive (default); oci-archive, an OCI image
    /// layout (oci-layout, blobs/sha256/..., index.json) as a tar; oci-dir
    /// DIR, the same layout written into DIR; docker+oci, one tar holding
    /// the OCI layout and Docker's manifest.json, for docker load, podman
    /// load and skopeo copy oci-archive:.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatName>,

    /// The directory of --format oci-dir (also given as `--format oci-dir
    /// DIR`).
    #[arg(long, value_name = "DIR")]
    pub oci_dir: Option<PathBuf>,

    /// Layer compression for the OCI formats and --push: none (the
    /// default), gzip[:0-9] (level 5 by default) or zstd[:1-22] (3 by
    /// default); per layer, in parallel, and the same bytes whatever the
    /// thread count.
    #[arg(long, value_name = "C")]
    pub compress: Option<String>,

    /// Upload to a registry (OCI distribution API), once per --push: blobs
    /// the registry has are skipped, the others uploaded in chunks as they
    /// are compressed, the manifest last. Several --push (and -o) feed one
    /// run: one failing destination does not stop the others.
    #[arg(long, value_name = "[docker://]HOST[:PORT]/REPO[:TAG]")]
    pub push: Vec<String>,

    /// Credentials for --push (basic, or for the token endpoint of a Bearer
    /// challenge); without it they come from $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json
    /// or $DOCKER_CONFIG/config.json (~/.docker), with their
    /// docker-credential-* helpers.
    #[arg(long, value_name = "USER:PASS")]
    pub creds: Option<String>,

    /// Plain HTTP for --push (default: HTTPS with the system's CA roots).
    #[arg(long)]
    pub insecure: bool,

    /// For --push: *.crt in DIR are extra CA roots, a NAME.cert with
    /// NAME.key the client certificate.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Remember each store layer's record (its digests, found again by its
    /// files' inodes, sizes and times) and, for --push, which compressed
    /// blob it became: an unchanged layer that the registry or the engine
    /// has is then not read at all, and a new one is read once.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Describe the closure in an SBOM: spdx (SPDX 2.3 JSON) or cyclonedx
    /// (CycloneDX 1.5 JSON); give both, repeated or comma-separated, for
    /// both. Every store path of the image is a component, with the layer
    /// that holds it. It is attached to the image as an OCI 1.1 artifact
    /// whose subject is the image manifest: in the layout for the OCI
    /// formats, through the referrers API or its tag fallback (sha256-HEX)
    /// for --push. A docker-archive cannot hold one: use --sbom-out.
    #[arg(long, value_enum, value_name = "FORMAT", value_delimiter = ',')]
    pub sbom: Vec<SbomName>,

    /// Also write the SBOM to FILE; once per --sbom format, in the same
    /// order.
    #[arg(long, value_name = "FILE")]
    pub sbom_out: Vec<PathBuf>,

    /// The closure's references graph (exportReferencesGraph JSON, its
    /// text form, Guix's references graph, or closureInfo's registration),
    /// for --sbom: it gives each component its dependencies and, where the
    /// graph has them, its NAR hash and size.
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,

    /// Load the image into a local engine, in the same run as -o and
    /// --push. docker (the default): through the Engine API at $DOCKER_HOST
    /// (unix:// only) or /var/run/docker.sock, sending only the layers the
    /// engine lacks (the image ID is the one `docker load` of the whole
    /// archive gives); podman: the whole archive to `podman load`, which
    /// takes no other. The engine gets a docker-archive whatever --format
    /// says of -o.
    #[arg(
        long,
        value_enum,
        value_name = "ENGINE",
        num_args = 0..=1,
        default_missing_value = "docker"
    )]
    pub load: Option<LoadEngine>,
}

/// The `--sbom` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomName {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.5 JSON.
    Cyclonedx,
}

impl From<SbomName> for stream_layered_image::sbom::Format {
    fn from(name: SbomName) -> Self {
        match name {
            SbomName::Spdx => Self::Spdx,
            SbomName::Cyclonedx => Self::CycloneDx,
        }
    }
}

/// The `--format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatName {
    /// A `docker save` v1.2 archive, byte-identical to nixpkgs' script.
    DockerArchive,
    /// An OCI image layout as a tar.
    OciArchive,
    /// An OCI image layout written into a directory.
    OciDir,
    /// A tar holding the OCI layout and Docker's manifest.json.
    #[value(name = "docker+oci")]
    DockerOci,
}

/// The engines of `--load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadEngine {
    /// The Docker engine, through its API.
    Docker,
    /// podman, through `podman load`.
    Podman,
}

/// The `--progress` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressName {
    /// Bars on a terminal, plain lines elsewhere.
    Auto,
    /// Live bars.
    Bar,
    /// One line per event.
    Plain,
    /// Nothing.
    None,
}

impl From<ProgressName> for stream_layered_image::progress::Mode {
    fn from(name: ProgressName) -> Self {
        use stream_layered_image::progress::Mode;
        match name {
            ProgressName::Auto => Mode::Auto,
            ProgressName::Bar => Mode::Bar,
            ProgressName::Plain => Mode::Plain,
            ProgressName::None => Mode::None,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Split a closure into layers and print `store_layers` JSON.
    Layers(LayersArgs),
    /// Learn layering hints from references graphs, oldest first (several
    /// images, several versions, or both), for `layers --hints`.
    Hints(HintsArgs),
    /// Show which layers of NEW a host that has OLD already holds, and what
    /// pulling NEW transfers.
    Diff(DiffArgs),
    /// Hash a spec's store layers (or one) ahead of the build and print
    /// their records as JSON: each layer's diff_id, size and XXH3-128
    /// and, for each --compress, its blob's digest and size. Put the list
    /// under the spec's store_layer_digests key: a build then streams in
    /// one pass, checking each layer against its record, and a push reads
    /// no layer the registry has.
    Digest(DigestArgs),
    /// Write a spec's customisation layer (DIR/layer.tar and DIR/checksum)
    /// from a tree, deterministically; prints its sha256.
    CustomLayer(CustomLayerArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Print the README's table of build options (Markdown).
    #[command(hide = true)]
    OptionsTable,
}

/// `layers`: a layering from a references graph.
#[derive(Debug, Args)]
pub struct LayersArgs {
    /// The references graph: exportReferencesGraph's JSON or text, or
    /// closureInfo's registration.
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// At most N layers.
    #[arg(long, value_name = "N")]
    pub max_layers: Option<usize>,
    /// default, popularity (nixpkgs' popularity contest), auto (nixpkgs'
    /// auto-layer.py) or size (Guix's --max-layers rule).
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<String>,
    /// A nixpkgs layeringPipeline (JSON) instead of --strategy.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// Store paths (one a line) to leave out: another layer ships them.
    #[arg(long, value_name = "FILE")]
    pub exclude: Option<PathBuf>,
    /// Layering hints (`stream-layered-image hints`) for the default
    /// strategy.
    #[arg(long, value_name = "FILE")]
    pub hints: Option<PathBuf>,
    /// Print the layers with their sizes and reasons on stderr.
    #[arg(long)]
    pub explain: bool,
    /// JSON lines of requests ({"graph", "max_layers", "strategy"}), one
    /// answer line each; - for stdin.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
}

/// `digest`: records of a spec's store layers, for `store_layer_digests`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The spec (its store_layers, store_dir, mtime and owner are used).
    #[arg(value_name = "SPEC.json")]
    pub spec: PathBuf,
    /// Only store_layers[N] (0-based), printed as one record; without it,
    /// every store layer, as the list store_layer_digests takes.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Also record the blob this compression makes (none, gzip[:0-9],
    /// zstd[:1-22], as for the build); once per compression.
    #[arg(long, value_name = "C")]
    pub compress: Vec<String>,
}

/// `custom-layer`: a customisation layer from a tree.
#[derive(Debug, Args)]
pub struct CustomLayerArgs {
    /// The tree (its root is not itself a member).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Where layer.tar and checksum go (created if need be).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Modification time of every member, in seconds since the epoch
    /// (guix pack's and nixpkgs' own default: 1).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 1,
        allow_hyphen_values = true
    )]
    pub mtime: i64,
}

/// `hints`: what history says about how packages change.
#[derive(Debug, Args)]
pub struct HintsArgs {
    /// References graphs, oldest first (`--graph A B C` or `--graph A
    /// --graph B`).
    #[arg(long = "graph", value_name = "G", num_args = 1.., action = clap::ArgAction::Append)]
    pub graphs: Vec<PathBuf>,
    /// Hints to fold the new graphs into.
    #[arg(long, value_name = "HINTS")]
    pub previous: Option<PathBuf>,
    /// Where the hints go (default stdout).
    #[arg(short, long, value_name = "HINTS.json")]
    pub output: Option<PathBuf>,
}

/// `diff`: two docker-archives compared layer by layer.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The image a host already has.
    #[arg(value_name = "OLD.tar")]
    pub old: PathBuf,
    /// The image it pulls.
    #[arg(value_name = "NEW.tar")]
    pub new: PathBuf,
    /// Width of the size bars.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub width: usize,
}

/// What parsing gave: a command to run, or text to print (help, version).
pub enum Parsed {
    /// Run this.
    Run(Box<Cli>),
    /// Print this on stdout and exit with success.
    Print(String),
}

/// Parses the arguments after the program name.
///
/// Errors are one line, like every other error of the tool. `--format
/// oci-dir DIR` takes two words, which no declarative parser expresses
/// without also swallowing the spec after `--format oci-archive`, so it is
/// rewritten to `--format oci-dir --oci-dir DIR` first.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Parsed> {
    let mut argv: Vec<OsString> = vec!["stream-layered-image".into()];
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        let oci_dir = arg == "oci-dir" && argv.last().is_some_and(|a| a == "--format");
        // `--load SPEC.json`: the engine is optional, and an existing file
        // after it is the spec, not an engine's name.
        if arg == "--load" && it.peek().is_some_and(|a| std::path::Path::new(a).is_file()) {
            argv.push("--load=docker".into());
            continue;
        }
        argv.push(arg);
        if oci_dir {
            if let Some(dir) = it.next_if(|a| !a.to_string_lossy().starts_with('-')) {
                argv.push("--oci-dir".into());
                argv.push(dir);
            }
        }
    }
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(Parsed::Run(Box::new(cli))),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Ok(Parsed::Print(e.render().to_string()))
            }
            _ => Err(anyhow::anyhow!(one_line(&e))),
        },
    }
}

/// A parse error as one line, in the tool's own words where it has them.
fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(s)) => Some(s.join(", ")),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg).unwrap_or_default();
    let problem = match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            let name = arg.split('=').next().unwrap_or(&arg);
            format!("unknown option {name:?}")
        }
        ErrorKind::UnknownArgument => format!("unexpected argument {arg:?}"),
        ErrorKind::MissingRequiredArgument => {
            format!("missing {arg}")
        }
        ErrorKind::NoEquals | ErrorKind::InvalidValue | ErrorKind::ValueValidation
            if context(ContextKind::InvalidValue).as_deref() == Some("") =>
        {
            format!("{} needs a value", flag_name(&arg))
        }
        ErrorKind::InvalidValue if flag_name(&arg) == "--format" => {
            let value = context(ContextKind::InvalidValue).unwrap_or_default();
            format!("--format {value:?}: expected docker-archive, oci-archive, oci-dir DIR or docker+oci")
        }
        ErrorKind::InvalidValue
            if context(ContextKind::ValidValue).is_some_and(|v| !v.is_empty()) =>
        {
            let value = context(ContextKind::InvalidValue).unwrap_or_default();
            let valid = context(ContextKind::ValidValue).unwrap_or_default();
            format!("{} {value:?}: expected one of {valid}", flag_name(&arg))
        }
        ErrorKind::InvalidSubcommand => format!("unexpected argument {arg:?}"),
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            stream_layered_image::escape::controls(first)
        }
    };
    format!("{problem}; see --help")
}

/// `--name` of `--name <VALUE>`.
fn flag_name(arg: &str) -> &str {
    arg.split([' ', '=']).next().unwrap_or(arg)
}

/// The clap command, for generated documents.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The README's Markdown table of the build options, from the same
/// declarations as `--help`.
pub fn options_table() -> String {
    let cmd = command();
    let mut out = String::from("| option | meaning |\n| --- | --- |\n");
    for arg in cmd.get_arguments() {
        if arg.is_positional() || arg.is_hide_set() {
            continue;
        }
        let mut names = Vec::new();
        if let Some(s) = arg.get_short() {
            names.push(format!("`-{s}`"));
        }
        if let Some(l) = arg.get_long() {
            let value = match arg.get_value_names() {
                Some(v) if arg.get_action().takes_values() => {
                    format!(
                        " {}",
                        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
                    )
                }
                _ => String::new(),
            };
            names.push(format!("`--{l}{value}`"));
            if let Some(aliases) = arg.get_visible_aliases() {
                names.extend(aliases.iter().map(|a| format!("`--{a}`")));
            }
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let help = help.replace('|', "\\|");
        out.push_str(&format!("| {} | {} |\n", names.join(", "), help));
    }
    out
}
