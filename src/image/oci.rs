//! The OCI documents: manifest, index, layout marker and Docker's manifest.json.
//!
//! Input: the image config (the same bytes the docker-archive stores as
//! `<sha256>.json`), the repo tag, and each layer's blob digest and size as
//! found by the hashing pass in [`crate::pipeline`]. Output: the manifest,
//! `index.json`, `oci-layout`, and for `docker+oci` the Docker
//! `manifest.json`, as the OCI image spec (v1.1) and `docker save` (Docker
//! 25 and later) write them.
//!
//! The OCI documents are compact JSON with keys in a fixed order, so the
//! same image always gives the same manifest digest.

use serde_json::{json, Value};

use crate::compress::Compression;
use crate::digest::Sha256Digest;

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The contents of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A layer as stored in the layout.
#[derive(Debug, Clone, Copy)]
pub struct BlobRef {
    /// sha256 of the stored (possibly compressed) bytes.
    pub digest: Sha256Digest,
    /// Their size.
    pub size: u64,
}

/// The path of a blob inside the layout.
pub fn blob_path(digest: &Sha256Digest) -> String {
    format!("blobs/sha256/{digest}")
}

/// The image manifest.
pub fn manifest(config: &[u8], layers: &[BlobRef], compression: Compression) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": compression.layer_media_type(),
                "digest": format!("sha256:{}", l.digest),
                "size": l.size,
            })
        })
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of(config)),
            "size": config.len(),
        },
        "layers": layers,
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// Splits `name:tag` (the tag is what follows the last colon after the
/// last slash); no tag means `latest`.
pub fn split_tag(repo_tag: &str) -> (&str, &str) {
    let slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    match repo_tag[slash..].rfind(':') {
        Some(i) => (&repo_tag[..slash + i], &repo_tag[slash + i + 1..]),
        None => (repo_tag, "latest"),
    }
}

/// `index.json`, naming the manifest with the tag
/// (`org.opencontainers.image.ref.name`) and, as containerd and Docker do,
/// the full name (`io.containerd.image.name`).
pub fn index(manifest: &[u8], repo_tag: &str) -> Vec<u8> {
    let (_, tag) = split_tag(repo_tag);
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of(manifest)),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": repo_tag,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// A platform of a multi-platform image (OCI image index `platform`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// The spec's `architecture`, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// The spec's `variant`, e.g. `v8`.
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest of a multi-platform image, as its index names it.
#[derive(Debug, Clone)]
pub struct PlatformManifest {
    /// sha256 of the manifest's bytes.
    pub digest: Sha256Digest,
    /// Their size.
    pub size: u64,
    /// The platform its image runs on.
    pub platform: Platform,
}

/// The OCI image index of a multi-platform image: one entry per platform,
/// in the order given.
pub fn image_index(manifests: &[PlatformManifest]) -> Vec<u8> {
    let entries: Vec<Value> = manifests
        .iter()
        .map(|m| {
            let mut platform = json!({
                "architecture": m.platform.architecture,
                "os": m.platform.os,
            });
            if let Some(v) = &m.platform.variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": format!("sha256:{}", m.digest),
                "size": m.size,
                "platform": platform,
            })
        })
        .collect();
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// A layout's `index.json` naming a multi-platform image's index (a blob
/// of the layout) with the tag, as [`index`] names a single image.
pub fn layout_index_of_index(image_index: &[u8], repo_tag: &str) -> Vec<u8> {
    let (_, tag) = split_tag(repo_tag);
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": INDEX_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of(image_index)),
            "size": image_index.len(),
            "annotations": {
                "io.containerd.image.name": repo_tag,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// Docker's `manifest.json` pointing into the layout's blobs.
pub fn docker_manifest(config: &[u8], layers: &[BlobRef], repo_tag: &str) -> Vec<u8> {
    let layers: Vec<String> = layers.iter().map(|l| blob_path(&l.digest)).collect();
    let doc = json!([{
        "Config": blob_path(&Sha256Digest::of(config)),
        "RepoTags": [repo_tag],
        "Layers": layers,
    }]);
    serde_json::to_vec(&doc).expect("plain JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tags() {
        assert_eq!(split_tag("foo:1"), ("foo", "1"));
        assert_eq!(
            split_tag("localhost:5000/foo"),
            ("localhost:5000/foo", "latest")
        );
        assert_eq!(split_tag("h:5/a/b:t"), ("h:5/a/b", "t"));
    }

    #[test]
    fn image_index_names_each_platform() {
        let m = |arch: &str, variant: Option<&str>, byte: u8| PlatformManifest {
            digest: Sha256Digest([byte; 32]),
            size: 100 + u64::from(byte),
            platform: Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(str::to_owned),
            },
        };
        let doc: Value = serde_json::from_slice(&image_index(&[
            m("amd64", None, 1),
            m("arm64", Some("v8"), 2),
        ]))
        .unwrap();
        assert_eq!(doc["mediaType"], INDEX_MEDIA_TYPE);
        assert_eq!(
            doc["manifests"][0]["platform"],
            json!({"architecture": "amd64", "os": "linux"})
        );
        assert_eq!(
            doc["manifests"][1]["platform"],
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        assert_eq!(doc["manifests"][1]["size"], 102);
        assert_eq!(
            doc["manifests"][1]["digest"],
            format!("sha256:{}", "02".repeat(32))
        );
    }
}
