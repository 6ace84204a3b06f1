//! The `docker save` v1.2 archive, byte-identical to nixpkgs' script:
//! `<sha256>/layer.tar` per layer (base image layers keep their own member
//! names and headers), then `<sha256>.json` (the config), then
//! `manifest.json`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::image::config::dict;
use crate::pipeline::{Finished, Layer, Plan};
use crate::progress::Progress;
use crate::pycompat::json::{self, PyValue};
use crate::sink::members::{plain_member, Members, TarStream};
use crate::sink::Sink;
use crate::tar::header::Header;
use crate::tar::relay::DirectOutput;

/// Writes a docker-archive to a stream.
pub struct DockerArchive<W: Write> {
    stream: TarStream<W>,
    direct: Option<Arc<DirectOutput>>,
    destination: String,
}

impl<W: Write> DockerArchive<W> {
    /// An archive written to `out`. `direct` is the descriptor `out`
    /// finally writes to, when it can take spliced pages: large store files
    /// are then spliced into it (after `out` is flushed) instead of being
    /// copied through `out`.
    pub fn new(out: W, direct: Option<Arc<DirectOutput>>, destination: String) -> Self {
        DockerArchive {
            stream: TarStream::new(out),
            direct,
            destination,
        }
    }

    /// The writer, once the archive is finished.
    pub fn into_inner(self) -> W {
        self.stream.into_inner()
    }
}

impl<W: Write> Sink for DockerArchive<W> {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    fn layer(&mut self, layer: &Layer<'_>, _progress: &Progress) -> Result<()> {
        let name = layer.member_name();
        let size = layer.hashed.size;
        let owner;
        let header = if let Some(base) = layer.base_header() {
            Header {
                name: &base.name,
                mode: base.mode,
                uid: base.uid,
                gid: base.gid,
                size,
                mtime: base.mtime,
                entry_type: base.entry_type(),
                linkname: &base.linkname,
                uname: &base.uname,
                gname: &base.gname,
                pax: &base.pax,
            }
        } else if let Some(meta) = layer.custom_metadata() {
            // As the reference's `gettarinfo` of the file: its mode and
            // owner, with names looked up as `tarfile` does.
            owner = (
                account_name("/etc/passwd", meta.uid()),
                account_name("/etc/group", meta.gid()),
            );
            Header {
                mode: meta.mode(),
                uid: i64::from(meta.uid()),
                gid: i64::from(meta.gid()),
                uname: owner.0.as_bytes(),
                gname: owner.1.as_bytes(),
                size,
                ..plain_member(name.as_bytes(), layer.mtime())
            }
        } else {
            Header {
                size,
                ..plain_member(name.as_bytes(), layer.mtime())
            }
        };
        self.stream.header(&header)?;
        let before = self.stream.offset();
        let written = layer.produce(&mut self.stream, self.direct.as_deref())?;
        let through = self.stream.offset() - before;
        self.stream.wrote_around(written - through);
        self.stream.pad(written)
    }

    fn finish(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        _progress: &Progress,
    ) -> Result<u64> {
        let config_name = format!("{}.json", Sha256Digest::of(image.config));
        self.stream
            .small_file(&config_name, image.config, plan.mtime())?;
        let layer_names = image
            .layers
            .iter()
            .map(|(name, _)| PyValue::from(name.as_str()))
            .collect();
        let manifest = PyValue::List(vec![dict(vec![
            ("Config", PyValue::from(config_name)),
            ("RepoTags", PyValue::List(vec![plan.repo_tag().clone()])),
            ("Layers", PyValue::List(layer_names)),
        ])]);
        let manifest = json::dumps_value_indent4(&manifest).into_bytes();
        self.stream
            .small_file("manifest.json", &manifest, plan.mtime())?;
        self.stream.finish()?;
        Ok(self.stream.offset())
    }
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
