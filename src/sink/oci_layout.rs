//! An OCI image layout (image spec v1.1): `oci-layout`, every blob under
//! `blobs/sha256/`, the manifest, and `index.json` last, so that a layout
//! cut short names no image. As a tar (`oci-archive`), as a tar that also
//! holds Docker's `manifest.json` (`docker+oci`, as `docker save` of Docker
//! 25 and later writes it), or as a directory (`oci-dir`).
//!
//! Layers are stored as blobs compressed as the run's options say; their
//! digests come from the hashing pass, which compresses each layer once in
//! parallel, and the bytes written here must be the same bytes.

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::image::oci;
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
}

impl<M: Members> OciLayout<M> {
    /// A layout written to `members`; with `docker_manifest`, Docker's
    /// `manifest.json` too.
    pub fn new(members: M, docker_manifest: bool, destination: String) -> Self {
        OciLayout {
            members,
            docker_manifest,
            destination,
        }
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
        let tag = plan.repo_tag_text()?;
        let mtime = plan.mtime();
        let blobs = image.blobs();
        let config_path = oci::blob_path(&Sha256Digest::of(image.config));
        self.members.small_file(&config_path, image.config, mtime)?;
        let manifest = oci::manifest(image.config, &blobs, plan.compression());
        self.members.small_file(
            &oci::blob_path(&Sha256Digest::of(&manifest)),
            &manifest,
            mtime,
        )?;
        if self.docker_manifest {
            let docker = oci::docker_manifest(image.config, &blobs, &tag);
            self.members.small_file("manifest.json", &docker, mtime)?;
        }
        // Last: a layout is only usable once everything it names is there.
        self.members
            .small_file("index.json", &oci::index(&manifest, &tag), mtime)?;
        self.members.finish()?;
        Ok(self.members.offset())
    }
}
