//! An OCI image layout (image spec v1.1): `oci-layout`, every blob under
//! `blobs/sha256/`, the manifest, and `index.json` last, so that a layout
//! cut short names no image. As a tar (`oci-archive`), as a tar that also
//! holds Docker's `manifest.json` (`docker+oci`, as `docker save` of Docker
//! 25 and later writes it), or as a directory (`oci-dir`).
//!
//! Layers are stored as blobs compressed as the run's options say; their
//! digests come from the hashing pass, which compresses each layer once in
//! parallel, and the bytes written here must be the same bytes.

use std::collections::HashSet;

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::image::oci::{self, PlatformManifest};
use crate::pipeline::{Finished, Layer, Plan};
use crate::progress::Progress;
use crate::sink::members::{plain_member, Members};
use crate::sink::Sink;
use crate::tar::header::{EntryType, Header};

/// Writes an OCI layout through [`Members`].
pub struct OciLayout<M> {
    members: M,
    docker_manifest: bool,
    destination: String,
    /// For a multi-platform image: its images so far.
    multi: Option<Images>,
}

/// The images of a multi-platform layout: one pipeline run each, then the
/// index ([`OciLayout::finish_index`]).
#[derive(Default)]
struct Images {
    manifests: Vec<PlatformManifest>,
    /// Blobs already in the layout: a layer the images share is stored once.
    written: HashSet<Sha256Digest>,
    /// The images' SBOM artifacts, listed in `index.json` beside the index.
    referrers: Vec<oci::Referrer>,
    begun: bool,
}

impl<M: Members> OciLayout<M> {
    /// A layout written to `members`; with `docker_manifest`, Docker's
    /// `manifest.json` too.
    pub fn new(members: M, docker_manifest: bool, destination: String) -> Self {
        OciLayout {
            members,
            docker_manifest,
            destination,
            multi: None,
        }
    }

    /// A layout for a multi-platform image: each pipeline run adds one
    /// platform's image; [`OciLayout::finish_index`] then writes the image
    /// index and `index.json`.
    pub fn multi_platform(members: M, destination: String) -> Self {
        OciLayout {
            multi: Some(Images::default()),
            ..OciLayout::new(members, false, destination)
        }
    }

    /// Writes a member holding `data` as the blob it is, unless the layout
    /// has it already.
    fn blob(&mut self, data: &[u8], mtime: i64) -> Result<Sha256Digest> {
        let digest = Sha256Digest::of(data);
        let new = self
            .multi
            .as_mut()
            .is_none_or(|images| images.written.insert(digest));
        if new {
            self.members
                .small_file(&oci::blob_path(&digest), data, mtime)?;
        }
        Ok(digest)
    }

    /// Stores the image's SBOMs as artifacts whose subject is `manifest`;
    /// returns their entries for `index.json`.
    fn attach(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        manifest: &[u8],
    ) -> Result<Vec<oci::Referrer>> {
        let mtime = plan.mtime();
        let mut referrers = Vec::new();
        for (i, document) in image.sboms.iter().enumerate() {
            if i == 0 {
                self.blob(oci::EMPTY_BLOB, mtime)?;
            }
            self.blob(&document.bytes, mtime)?;
            let (artifact, referrer) = document.artifact(manifest, &plan.spec().created);
            self.blob(&artifact, mtime)?;
            referrers.push(referrer);
        }
        Ok(referrers)
    }

    /// Ends a multi-platform layout: the image index, naming each image
    /// with its platform, then `index.json` naming the index with the tag.
    /// Returns the bytes written.
    pub fn finish_index(&mut self, repo_tag: &str, mtime: i64) -> Result<u64> {
        let mut images = self.multi.take().expect("a multi-platform layout");
        let index = oci::image_index(&images.manifests);
        let referrers = std::mem::take(&mut images.referrers);
        self.multi = Some(images);
        self.blob(&index, mtime)?;
        self.members.small_file(
            "index.json",
            &oci::layout_index_of_index(&index, repo_tag, &referrers),
            mtime,
        )?;
        self.members.finish()?;
        Ok(self.members.offset())
    }

    /// Where the members went, once the layout is finished.
    pub fn into_members(self) -> M {
        self.members
    }
}

impl<M: Members> Sink for OciLayout<M> {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    fn wants_blobs(&self) -> bool {
        true
    }

    fn begin(&mut self, plan: &Plan<'_>) -> Result<()> {
        if let Some(images) = &mut self.multi {
            if std::mem::replace(&mut images.begun, true) {
                return Ok(());
            }
        }
        let mtime = plan.mtime();
        self.members
            .small_file("oci-layout", oci::OCI_LAYOUT, mtime)?;
        for dir in ["blobs", "blobs/sha256"] {
            self.members.header(&Header {
                mode: 0o755,
                entry_type: EntryType::Directory,
                ..plain_member(dir.as_bytes(), mtime)
            })?;
        }
        Ok(())
    }

    fn layer(&mut self, layer: &Layer<'_>, _progress: &Progress) -> Result<()> {
        let (blob, _) = layer.hashed.blob.expect("asked for blobs");
        if let Some(images) = &mut self.multi {
            if !images.written.insert(blob.digest) {
                return Ok(());
            }
        }
        let member = oci::blob_path(&blob.digest);
        self.members.header(&Header {
            size: blob.size,
            ..plain_member(member.as_bytes(), layer.mtime())
        })?;
        layer.produce_blob(layer.compression(), &mut self.members)?;
        self.members.pad(blob.size)
    }

    fn finish(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        _progress: &Progress,
    ) -> Result<u64> {
        let mtime = plan.mtime();
        let blobs = image.blobs();
        self.blob(image.config, mtime)?;
        let manifest = oci::manifest(image.config, &blobs, plan.compression());
        let manifest_digest = self.blob(&manifest, mtime)?;
        let referrers = self.attach(plan, image, &manifest)?;
        if let Some(images) = &mut self.multi {
            images.referrers.extend(referrers);
            images.manifests.push(PlatformManifest {
                digest: manifest_digest,
                size: manifest.len() as u64,
                platform: plan.platform()?,
            });
            return Ok(0);
        }
        let tag = plan.repo_tag_text()?;
        if self.docker_manifest {
            let docker = oci::docker_manifest(image.config, &blobs, &tag);
            self.members.small_file("manifest.json", &docker, mtime)?;
        }
        // Last: a layout is only usable once everything it names is there.
        self.members.small_file(
            "index.json",
            &oci::index(&manifest, &tag, &referrers),
            mtime,
        )?;
        self.members.finish()?;
        Ok(self.members.offset())
    }
}
