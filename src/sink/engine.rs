//! `--load`: the image straight into a local engine.
//!
//! * [`DockerLoad`] streams a docker-archive to the Docker Engine API's
//!   `POST /images/load`, leaving out the `layer.tar` of each layer whose
//!   chain the engine already holds (moby looks a layer up by chain ID
//!   before it opens its file). Every member it sends, and the config, are
//!   byte for byte those of the full archive, so the image ID is the one a
//!   `docker load` of the full archive gives. An engine that refuses the
//!   thin archive for a layer it lacks after all (an image deleted since the
//!   engine was asked) gets the full archive, in a second run of the
//!   pipeline; an engine with containerd's image store, which loads only
//!   whole archives, gets the full archive from the start.
//! * [`PodmanLoad`] streams the full archive to `podman load` on a pipe:
//!   podman refuses archives that lack a layer's file, whatever its store
//!   holds.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::engine::{self, Docker, Loaded, Upload};
use crate::error::{Error, Result};
use crate::pipeline::{self, Finished, Layer, Plan};
use crate::progress::{human_bytes, Phase, Progress};
use crate::sink::docker_archive::DockerArchive;
use crate::sink::Sink;
use crate::tar::header;
use crate::tar::relay::DirectOutput;

/// A load into a Docker engine through its API.
pub struct DockerLoad {
    docker: Docker,
    /// Whether layers the engine holds may be left out.
    thin: bool,
    /// The engine's layer chains, asked before the first layer.
    chains: HashSet<String>,
    /// The question under way: asked on a thread of its own when the run
    /// begins (an image inspected per call, which adds up on an engine
    /// with many images) while the layers are walked and hashed, and
    /// awaited by the first layer.
    asking: Option<JoinHandle<Result<HashSet<String>>>>,
    /// Why every layer is sent although a thin archive was asked for, to
    /// say once the run shows progress.
    note: Option<String>,
    archive: Option<DockerArchive<Upload>>,
    /// The chain ID of the layers so far.
    chain: Option<String>,
    /// Each layer left out: its member name and its bytes in the full
    /// archive.
    skipped: Vec<(String, u64)>,
    layers: usize,
    sent: u64,
}

impl DockerLoad {
    /// A load that leaves out the layers the engine has.
    pub fn new(docker: Docker) -> DockerLoad {
        DockerLoad {
            docker,
            thin: true,
            chains: HashSet::new(),
            asking: None,
            note: None,
            archive: None,
            chain: None,
            skipped: Vec::new(),
            layers: 0,
            sent: 0,
        }
    }

    /// A load of the full archive.
    pub fn full(docker: Docker) -> DockerLoad {
        DockerLoad {
            thin: false,
            ..DockerLoad::new(docker)
        }
    }

    /// The bytes sent to the engine (both archives, after a refusal).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The member names (`<hex>/layer.tar`) of the layers left out.
    pub fn skipped(&self) -> impl Iterator<Item = &str> {
        self.skipped.iter().map(|(name, _)| name.as_str())
    }

    /// The upload's failure `e` as the engine's error.
    fn failed(&mut self, e: Error) -> Error {
        match e {
            Error::Output(io) => match self.archive.take() {
                Some(archive) => archive.into_inner().failed(io),
                None => self.docker_error(io.to_string()),
            },
            e => e,
        }
    }

    fn docker_error(&self, problem: String) -> Error {
        Error::Engine {
            engine: "docker",
            call: format!("POST /images/load on {}", self.docker.socket().display()),
            problem,
        }
    }

    /// Whether the engine's `message` refuses the archive for lacking one
    /// of the layers left out: moby opens the missing `<hex>/layer.tar`
    /// ("no such file or directory"); a content store names the digest it
    /// did not find.
    fn refused_for_missing_layer(&self, message: &str) -> bool {
        let missing =
            message.contains("no such file or directory") || message.contains("not found");
        missing
            && self.skipped.iter().any(|(name, _)| {
                let hex = name.split('/').next().unwrap_or(name);
                message.contains(name.as_str()) || (hex.len() == 64 && message.contains(hex))
            })
    }
}

impl Sink for DockerLoad {
    fn destination(&self) -> String {
        "--load docker".into()
    }

    fn begin(&mut self, _plan: &Plan<'_>) -> Result<()> {
        if self.thin {
            if self.docker.containerd_store()? {
                self.thin = false;
                self.note = Some(
                    "the engine keeps images in containerd's image store, which loads only whole archives; sending every layer"
                        .into(),
                );
            } else {
                let docker = self.docker.clone();
                self.asking = Some(std::thread::spawn(move || docker.layer_chains()));
            }
        }
        Ok(())
    }

    fn layer(&mut self, layer: &Layer<'_>, progress: &Progress) -> Result<()> {
        if let Some(note) = self.note.take() {
            progress.warning(format_args!("--load docker: {note}"));
        }
        if let Some(asking) = self.asking.take() {
            self.chains = asking.join().unwrap_or_else(|_| {
                Err(Error::Engine {
                    engine: "docker",
                    call: format!("GET /images/json on {}", self.docker.socket().display()),
                    problem: "the thread asking it stopped".into(),
                })
            })?;
        }
        if self.archive.is_none() {
            // The load starts once the question is answered: the engine is
            // always asked before it is sent anything.
            let upload = self.docker.start_load()?;
            self.archive = Some(DockerArchive::new(upload, None, self.destination()));
        }
        let diff_id = format!("sha256:{}", layer.hashed.digest.hex());
        let chain = match &self.chain {
            None => diff_id,
            Some(parent) => engine::next_chain(parent, &diff_id),
        };
        self.layers += 1;
        let present = self.thin && self.chains.contains(&chain);
        self.chain = Some(chain);
        if present {
            let size = layer.hashed.size;
            let member = header::BLOCK as u64 + size + header::data_padding(size) as u64;
            self.skipped.push((layer.member_name(), member));
            layer.progress().skip(Phase::Skipped);
            progress.line(format_args!(
                "--load docker: skipping layer {}/{} sha256:{} ({}): the engine has it",
                layer.number,
                layer.total,
                &layer.hashed.digest.hex()[..12],
                human_bytes(size)
            ));
            return Ok(());
        }
        let sent = self.archive.as_mut().expect("begun").layer(layer, progress);
        sent.map_err(|e| self.failed(e))
    }

    fn finish(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        progress: &Progress,
    ) -> Result<u64> {
        let mut archive = match self.archive.take() {
            Some(archive) => archive,
            // An image without layers.
            None => DockerArchive::new(self.docker.start_load()?, None, self.destination()),
        };
        let sent = match archive.finish(plan, image, progress) {
            Ok(n) => n,
            Err(e) => {
                self.archive = Some(archive);
                return Err(self.failed(e));
            }
        };
        self.sent += sent;
        let skipped_bytes: u64 = self.skipped.iter().map(|(_, n)| n).sum();
        progress.summary(format_args!(
            "--load docker: sent {} of {} layers, {sent} bytes ({}); the full archive is about {} ({}){}",
            self.layers - self.skipped.len(),
            self.layers,
            human_bytes(sent),
            sent + skipped_bytes,
            human_bytes(sent + skipped_bytes),
            match self.skipped.len() {
                0 => String::new(),
                n => format!("; the engine had the other {n}"),
            }
        ));
        match archive.into_inner().finish()? {
            Loaded::Image(said) => {
                for line in said {
                    progress.summary(format_args!("--load docker: {line}"));
                }
                Ok(sent)
            }
            Loaded::Refused(message) if self.refused_for_missing_layer(&message) => {
                progress.warning(format_args!(
                    "--load docker: the engine refused the archive without the layers it had ({message}); sending the full archive"
                ));
                let mut full = DockerLoad::full(self.docker.clone());
                pipeline::run(plan, &mut [&mut full], progress)?;
                self.sent += full.sent;
                Ok(sent + full.sent)
            }
            Loaded::Refused(message) => Err(self.docker_error(message)),
        }
    }
}

/// A load into podman: the full archive on the stdin of `podman load`.
pub struct PodmanLoad {
    program: String,
    child: Option<Child>,
    archive: Option<DockerArchive<BufWriter<File>>>,
    /// The child's stdout and stderr, read while it runs (so that neither
    /// pipe fills).
    output: Vec<JoinHandle<Vec<u8>>>,
}

impl PodmanLoad {
    /// A load with `podman` from PATH.
    pub fn new() -> PodmanLoad {
        PodmanLoad::with_program("podman")
    }

    /// A load with `program` as podman.
    pub fn with_program(program: impl Into<String>) -> PodmanLoad {
        PodmanLoad {
            program: program.into(),
            child: None,
            archive: None,
            output: Vec::new(),
        }
    }

    fn error(&self, problem: impl std::fmt::Display) -> Error {
        Error::Engine {
            engine: "podman",
            call: format!("{} load", self.program),
            problem: problem.to_string(),
        }
    }

    /// Waits for the child; its stdout when it succeeded, else its error
    /// (`write_error`: why the archive could not be written, if it could
    /// not).
    fn wait(&mut self, write_error: Option<Error>) -> Result<String> {
        // Closing the pipe ends podman's input.
        drop(self.archive.take());
        let Some(mut child) = self.child.take() else {
            return Err(write_error.unwrap_or_else(|| self.error("not started")));
        };
        let status = child.wait().map_err(|e| self.error(e))?;
        let mut output: Vec<String> = std::mem::take(&mut self.output)
            .into_iter()
            .map(|t| String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned())
            .collect();
        let stderr = output.pop().unwrap_or_default();
        let stdout = output.pop().unwrap_or_default();
        if !status.success() {
            let why = stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no message");
            return Err(self.error(format!("{status}: {why}")));
        }
        match write_error {
            Some(Error::Output(e)) => Err(self.error(format!("writing to its stdin: {e}"))),
            Some(e) => Err(e),
            None => Ok(stdout),
        }
    }
}

impl Default for PodmanLoad {
    fn default() -> Self {
        PodmanLoad::new()
    }
}

impl Sink for PodmanLoad {
    fn destination(&self) -> String {
        "--load podman".into()
    }

    fn begin(&mut self, _plan: &Plan<'_>) -> Result<()> {
        let mut child = Command::new(&self.program)
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.error(e))?;
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let mut pipe = pipe;
            self.output.push(std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                text
            }));
        }
        let stdin = OwnedFd::from(child.stdin.take().expect("piped"));
        self.child = Some(child);
        // Large store files are spliced into the pipe, as into stdout.
        let direct = stdin
            .try_clone()
            .and_then(DirectOutput::new)
            .map_err(|e| self.error(e))?
            .map(Arc::new);
        let out = BufWriter::with_capacity(128 << 10, File::from(stdin));
        self.archive = Some(DockerArchive::new(out, direct, self.destination()));
        Ok(())
    }

    fn layer(&mut self, layer: &Layer<'_>, progress: &Progress) -> Result<()> {
        let archive = self.archive.as_mut().expect("begun");
        match archive.layer(layer, progress) {
            Ok(()) => Ok(()),
            Err(e) => Err(match self.wait(Some(e)) {
                Ok(_) => self.error("ended before the archive did"),
                Err(e) => e,
            }),
        }
    }

    fn finish(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        progress: &Progress,
    ) -> Result<u64> {
        let archive = self.archive.as_mut().expect("begun");
        let written = archive.finish(plan, image, progress);
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                return Err(self
                    .wait(Some(e))
                    .err()
                    .unwrap_or_else(|| self.error("ended before the archive did")))
            }
        };
        let said = self.wait(None)?;
        for line in said.lines().map(str::trim).filter(|l| !l.is_empty()) {
            progress.summary(format_args!("--load podman: {line}"));
        }
        progress.line(format_args!(
            "--load podman: sent the full archive, {written} bytes ({}); podman load takes only whole archives",
            human_bytes(written)
        ));
        Ok(written)
    }
}
