//! A push to a registry, through [`crate::registry`].
//!
//! Layers go up from the hashing workers, each as soon as it is hashed
//! ([`Registry::push_layer`]: skipped when the registry has the blob,
//! mounted when the cache knows another repository that holds it, or
//! compressed as it is produced and uploaded in chunks). The config and
//! the manifest go up last, once every layer is in, so a failed push never
//! leaves a tag naming missing blobs.

use std::sync::Arc;
use std::time::Instant;

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::image::oci::{self, BlobRef, PlatformManifest};
use crate::pipeline::{Finished, Layer, Plan};
use crate::progress::{human_bytes, Phase, Progress};
use crate::registry::{How, Registry, Target};
use crate::sink::{LayerHook, Sink};

/// Pushes the image to one repository and tag of a registry.
pub struct RegistrySink {
    registry: Arc<Registry>,
    /// For a multi-platform image: the manifests pushed so far, by digest;
    /// the index goes under the tag at the end.
    multi: Option<Vec<PlatformManifest>>,
}

impl RegistrySink {
    /// Connects to `target` (nothing is sent yet).
    pub fn new(target: Target) -> Result<Self> {
        Ok(RegistrySink {
            registry: Arc::new(Registry::new(target)?),
            multi: None,
        })
    }

    /// Like [`RegistrySink::new`], for a multi-platform image: each
    /// pipeline run pushes one platform's image, its manifest by digest;
    /// [`RegistrySink::finish_index`] then puts the index under the tag.
    pub fn multi_platform(target: Target) -> Result<Self> {
        Ok(RegistrySink {
            multi: Some(Vec::new()),
            ..RegistrySink::new(target)?
        })
    }

    /// Puts the image index of the images pushed so far under the tag.
    pub fn finish_index(&mut self, progress: &Progress) -> Result<()> {
        let manifests = self.multi.as_deref().expect("a multi-platform push");
        let index = oci::image_index(manifests);
        self.registry.put_manifest(&index, oci::INDEX_MEDIA_TYPE)?;
        let platforms: Vec<String> = manifests.iter().map(|m| m.platform.to_string()).collect();
        progress.summary(format_args!(
            "pushed index sha256:{} ({}) to {}",
            Sha256Digest::of(&index),
            platforms.join(", "),
            self.destination()
        ));
        Ok(())
    }
}

impl RegistrySink {
    /// Pushes the image's SBOMs as artifacts whose subject is `manifest`
    /// (already pushed). A registry with the referrers API lists them
    /// itself; for one without, the index of referrers under the fallback
    /// tag (`sha256-<hex>`) gets them, keeping what it listed before, as
    /// the distribution spec v1.1 describes and cosign and ORAS read.
    fn attach(
        &self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        manifest: &[u8],
        progress: &Progress,
    ) -> Result<()> {
        if image.sboms.is_empty() {
            return Ok(());
        }
        let registry = &self.registry;
        registry.put_small_blob(oci::EMPTY_BLOB)?;
        let mut unlisted = Vec::new();
        for document in image.sboms {
            registry.put_small_blob(&document.bytes)?;
            let (artifact, referrer) = document.artifact(manifest, &plan.spec().created);
            let subject = registry.put_manifest_at(
                &format!("sha256:{}", referrer.digest),
                &artifact,
                oci::MANIFEST_MEDIA_TYPE,
            )?;
            progress.line(format_args!(
                "{} SBOM: pushed artifact sha256:{}",
                document.format.name(),
                referrer.digest
            ));
            if subject.is_none() {
                unlisted.push(referrer);
            }
        }
        if unlisted.is_empty() {
            return Ok(());
        }
        let tag = oci::referrers_tag(&Sha256Digest::of(manifest));
        let existing = registry.get_manifest(&tag)?;
        let index = oci::referrers_index(existing.as_deref(), &unlisted).ok_or_else(|| {
            crate::Error::Push {
                registry: registry.target().host.clone(),
                problem: format!(
                    "the referrers tag {}:{tag} holds something other than an image index; \
                     the SBOMs were pushed but are not listed",
                    registry.target().repository()
                ),
            }
        })?;
        registry.put_manifest_at(&tag, &index, oci::INDEX_MEDIA_TYPE)?;
        progress.line(format_args!(
            "SBOMs listed under the referrers tag {tag} (the registry has no referrers API)"
        ));
        Ok(())
    }
}

impl Sink for RegistrySink {
    fn destination(&self) -> String {
        let t = self.registry.target();
        format!("{}:{}", t.repository(), t.tag)
    }

    /// Without a cache, the hashing pass compresses each layer, so that the
    /// registry can be asked for the blob before anything is uploaded; with
    /// one, the cache knows the blob of an unchanged layer, and a new layer
    /// is compressed only once, as it is uploaded.
    fn wants_blobs(&self) -> bool {
        !self.registry.has_cache()
    }

    fn reads_layers(&self) -> bool {
        false
    }

    fn hook(&mut self) -> Option<Arc<dyn LayerHook>> {
        Some(Arc::new(PushLayers(self.registry.clone())))
    }

    fn layer(&mut self, layer: &Layer<'_>, progress: &Progress) -> Result<()> {
        let (blob, _) = layer.hashed.blob.expect("pushed by the hook");
        progress.line(format_args!(
            "layer {}: the registry has sha256:{}",
            layer.number,
            &blob.digest.hex()[..12]
        ));
        Ok(())
    }

    fn finish(
        &mut self,
        plan: &Plan<'_>,
        image: &Finished<'_>,
        progress: &Progress,
    ) -> Result<u64> {
        let registry = &self.registry;
        registry.put_small_blob(image.config)?;
        let manifest = oci::manifest(image.config, &image.blobs(), plan.compression());
        let digest = Sha256Digest::of(&manifest);
        match &mut self.multi {
            Some(manifests) => {
                registry.put_manifest_at(
                    &format!("sha256:{digest}"),
                    &manifest,
                    oci::MANIFEST_MEDIA_TYPE,
                )?;
                manifests.push(PlatformManifest {
                    digest,
                    size: manifest.len() as u64,
                    platform: plan.platform()?,
                });
            }
            None => registry.put_manifest(&manifest, oci::MANIFEST_MEDIA_TYPE)?,
        }
        self.attach(plan, image, &manifest, progress)?;
        let registry = &self.registry;
        progress.summary(format_args!(
            "pushed sha256:{} to {} ({} blob uploads, {} mounts) in {:.2}s",
            Sha256Digest::of(&manifest),
            registry.target().repository(),
            registry.uploads(),
            registry.mounts(),
            progress.elapsed()
        ));
        Ok(0)
    }
}

/// The hook: pushes each layer from its hashing worker.
struct PushLayers(Arc<Registry>);

impl LayerHook for PushLayers {
    fn hashed(&self, layer: &Layer<'_>, progress: &Progress) -> Result<Option<BlobRef>> {
        let started = Instant::now();
        let label = format!("layer {}/{}", layer.number, layer.total);
        let known = layer.hashed.blob.map(|(blob, _)| blob);
        let meter = layer.progress();
        meter.begin(Phase::Checking, 0, 0);
        let pushed = self.0.push_layer(
            &label,
            &layer.hashed.digest,
            layer.compression(),
            known,
            &mut |w| {
                // Counted on the way into the compressor: the layer's size
                // is the total known before the upload starts.
                meter.begin(Phase::Uploading, layer.hashed.size, 1);
                layer.produce_here(w)
            },
        );
        for warning in self.0.take_warnings() {
            progress.warning(format_args!("{warning}"));
        }
        let pushed = pushed.inspect_err(|_| meter.end(Phase::Idle))?;
        let how = match pushed.how {
            How::Present => "the registry has",
            How::Mounted => "mounted",
            How::Uploaded => "uploaded",
        };
        match pushed.how {
            How::Present => meter.skip(Phase::Skipped),
            How::Mounted => meter.skip(Phase::Mounted),
            How::Uploaded => meter.end(Phase::Uploaded),
        }
        progress.line(format_args!(
            "{label}: {how} sha256:{} {} in {:.2}s",
            &pushed.blob.digest.hex()[..12],
            human_bytes(pushed.blob.size),
            started.elapsed().as_secs_f64()
        ));
        Ok(Some(pushed.blob))
    }
}
