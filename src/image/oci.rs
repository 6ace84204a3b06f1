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
/// the full name (`io.containerd.image.name`), then listing the
/// artifacts that refer to it (its SBOMs), untagged.
pub fn index(manifest: &[u8], repo_tag: &str, referrers: &[Referrer]) -> Vec<u8> {
    layout_index(MANIFEST_MEDIA_TYPE, manifest, repo_tag, referrers)
}

fn layout_index(media_type: &str, named: &[u8], repo_tag: &str, referrers: &[Referrer]) -> Vec<u8> {
    let (_, tag) = split_tag(repo_tag);
    let mut manifests = vec![json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", Sha256Digest::of(named)),
        "size": named.len(),
        "annotations": {
            "io.containerd.image.name": repo_tag,
            "org.opencontainers.image.ref.name": tag,
        },
    })];
    manifests.extend(referrers.iter().map(Referrer::descriptor));
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// Media type of the empty descriptor's blob, `{}`: the config of an
/// artifact that has none (image spec v1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty descriptor's blob.
pub const EMPTY_BLOB: &[u8] = b"{}";

/// An artifact manifest that refers to another manifest (its `subject`),
/// as an index of referrers lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// sha256 of the artifact manifest's bytes.
    pub digest: Sha256Digest,
    /// Their size.
    pub size: u64,
    /// Its `artifactType`.
    pub artifact_type: String,
}

impl Referrer {
    fn descriptor(&self) -> Value {
        json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{}", self.digest),
            "size": self.size,
            "artifactType": self.artifact_type,
        })
    }
}

/// An OCI 1.1 artifact: an image manifest with `artifactType`, the empty
/// config, one layer holding `blob` (of media type `artifact_type`, named
/// `title`), and `subject`, the manifest it is about. `created` is
/// recorded as `org.opencontainers.image.created`.
pub fn artifact_manifest(
    artifact_type: &str,
    blob: &[u8],
    title: &str,
    subject: &[u8],
    created: &str,
) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of(EMPTY_BLOB)),
            "size": EMPTY_BLOB.len(),
        },
        "layers": [{
            "mediaType": artifact_type,
            "digest": format!("sha256:{}", Sha256Digest::of(blob)),
            "size": blob.len(),
            "annotations": {"org.opencontainers.image.title": title},
        }],
        "subject": {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": format!("sha256:{}", Sha256Digest::of(subject)),
            "size": subject.len(),
        },
        "annotations": {"org.opencontainers.image.created": created},
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// The tag under which a registry without the referrers API keeps the
/// referrers of `subject` (distribution spec v1.1: `<alg>-<hex>`).
pub fn referrers_tag(subject: &Sha256Digest) -> String {
    format!("sha256-{subject}")
}

/// The index of referrers under the fallback tag: `existing` (the index
/// found there, if any) with `added` appended where it is not listed yet.
/// `None` when `existing` is not an image index.
pub fn referrers_index(existing: Option<&[u8]>, added: &[Referrer]) -> Option<Vec<u8>> {
    let mut manifests: Vec<Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let doc: Value = serde_json::from_slice(bytes).ok()?;
            // An OCI index (its mediaType is optional), not, say, a Docker
            // manifest list, which also has `manifests`.
            match doc.get("mediaType") {
                None => {}
                Some(t) if t == INDEX_MEDIA_TYPE => {}
                Some(_) => return None,
            }
            doc.get("manifests")?.as_array()?.clone()
        }
    };
    for referrer in added {
        let digest = format!("sha256:{}", referrer.digest);
        if !manifests.iter().any(|m| m["digest"] == digest.as_str()) {
            manifests.push(referrer.descriptor());
        }
    }
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    });
    Some(serde_json::to_vec(&doc).expect("plain JSON"))
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
/// of the layout) with the tag, as [`index`] names a single image, then
/// the artifacts that refer to its images.
pub fn layout_index_of_index(
    image_index: &[u8],
    repo_tag: &str,
    referrers: &[Referrer],
) -> Vec<u8> {
    layout_index(INDEX_MEDIA_TYPE, image_index, repo_tag, referrers)
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
    fn a_referrers_index_keeps_what_it_listed_and_refuses_other_manifests() {
        let referrer = |n: u8| Referrer {
            digest: Sha256Digest([n; 32]),
            size: u64::from(n),
            artifact_type: "application/spdx+json".into(),
        };
        let digests = |index: &[u8]| -> Vec<String> {
            let doc: Value = serde_json::from_slice(index).unwrap();
            assert_eq!(doc["mediaType"], INDEX_MEDIA_TYPE);
            doc["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["digest"].as_str().unwrap().to_owned())
                .collect()
        };
        let first = referrers_index(None, &[referrer(1)]).unwrap();
        let second = referrers_index(Some(&first), &[referrer(1), referrer(2)]).unwrap();
        let hex = |n: u8| format!("sha256:{}", Sha256Digest([n; 32]));
        assert_eq!(digests(&second), [hex(1), hex(2)]);
        // An index without mediaType is an index still.
        let bare = br#"{"schemaVersion": 2, "manifests": []}"#;
        assert_eq!(
            digests(&referrers_index(Some(bare), &[referrer(3)]).unwrap()),
            [hex(3)]
        );
        let image = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}"#;
        let list = br#"{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": []}"#;
        for other in [&image[..], &list[..], b"not json"] {
            assert_eq!(referrers_index(Some(other), &[referrer(1)]), None);
        }
    }

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
