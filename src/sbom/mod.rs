//! SBOMs of the image's closure, as SPDX 2.3 ([`spdx`]) and CycloneDX 1.5
//! ([`cyclonedx`]) JSON documents.
//!
//! Inputs: the image's layers, each with its diff_id and what it holds (a
//! base image's layer, store paths from `store_layers`, or the
//! customisation layer), the image config, its name and tag, the spec's
//! `created` time, and optionally the closure's references graph (any
//! format [`crate::layering::graph`] reads).
//!
//! Every store path of a store layer is one component: its name and
//! version split from the path's name as Nix's `builtins.parseDrvName`
//! splits them, its store path and hash part as identifiers, the diff_id
//! of the layer that holds it, and, where the graph gives them, its NAR
//! hash, NAR size and references (as dependencies, to the other paths of
//! the image only). Base image layers are listed as such, by diff_id; the
//! customisation layer holds no store path and is left out.
//!
//! The documents are a function of those inputs alone: no clock, no
//! random serial number (the CycloneDX serial number and the SPDX
//! namespace derive from the config's digest), and keys in a fixed order.
//! So the same spec gives the same bytes.

pub mod cyclonedx;
pub mod spdx;

use std::sync::Arc;

use crate::digest::Sha256Digest;
use crate::image::oci;
use crate::layering::graph::Graph;
use crate::pycompat::isotime::IsoDateTime;

/// The tool as SBOM documents name it.
const TOOL: &str = env!("CARGO_PKG_NAME");
const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An SBOM format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.5 JSON.
    CycloneDx,
}

impl Format {
    /// The media type, used as the OCI artifact's `artifactType` and its
    /// blob's `mediaType`.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Spdx => "application/spdx+json",
            Format::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Spdx => "spdx",
            Format::CycloneDx => "cyclonedx",
        }
    }

    /// A file name for the document inside an artifact
    /// (`org.opencontainers.image.title`).
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Spdx => "sbom.spdx.json",
            Format::CycloneDx => "sbom.cdx.json",
        }
    }
}

/// What the run is asked for: which SBOMs, and the graph that gives their
/// dependencies and NAR hashes.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The formats, in the order given; empty for none.
    pub formats: Vec<Format>,
    /// The closure's references graph, if given.
    pub graph: Option<Arc<Graph>>,
}

/// One SBOM of a finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its format.
    pub format: Format,
    /// Its bytes (JSON).
    pub bytes: Vec<u8>,
}

impl Document {
    /// The OCI 1.1 artifact that attaches this document to the image whose
    /// manifest is `subject`: the artifact manifest's bytes, and its entry
    /// in an index of referrers.
    pub fn artifact(&self, subject: &[u8], created: &IsoDateTime) -> (Vec<u8>, oci::Referrer) {
        let media_type = self.format.media_type();
        let manifest = oci::artifact_manifest(
            media_type,
            &self.bytes,
            self.format.file_name(),
            subject,
            &created.utc_text(),
        );
        let referrer = oci::Referrer {
            digest: Sha256Digest::of(&manifest),
            size: manifest.len() as u64,
            artifact_type: media_type.to_owned(),
        };
        (manifest, referrer)
    }
}

/// What a layer of the image holds.
#[derive(Debug, Clone, Copy)]
pub enum Contents<'a> {
    /// A layer of the base image (`from_image`).
    Base,
    /// These store paths (one entry of `store_layers`).
    Store(&'a [String]),
    /// The customisation layer.
    Custom,
}

/// A layer of the image.
#[derive(Debug, Clone, Copy)]
pub struct ImageLayer<'a> {
    /// Its diff_id.
    pub diff_id: Sha256Digest,
    /// What it holds.
    pub contents: Contents<'a>,
}

/// The image an SBOM describes.
#[derive(Debug, Clone)]
pub struct Image<'a> {
    /// The repository name, e.g. `localhost:5000/app`.
    pub name: &'a str,
    /// The tag.
    pub tag: &'a str,
    /// The spec's `created` time (the documents' creation time).
    pub created: IsoDateTime,
    /// The image config's bytes.
    pub config: &'a [u8],
    /// Its layers, bottom first.
    pub layers: Vec<ImageLayer<'a>>,
    /// The references graph, if given.
    pub graph: Option<&'a Graph>,
}

/// A store path of the image, as both formats describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component<'a> {
    /// The store path.
    pub path: &'a str,
    /// The hash part of its name, if it has one.
    pub hash_part: Option<&'a str>,
    /// The name, as `builtins.parseDrvName` gives it.
    pub name: &'a str,
    /// The version, as `builtins.parseDrvName` gives it (may be empty).
    pub version: &'a str,
    /// Its NAR hash and size, if the graph gives them.
    pub nar: Option<(Sha256Digest, u64)>,
    /// The diff_id of the layer that holds it.
    pub layer: Sha256Digest,
    /// Indices (into the component list) of the paths it refers to.
    pub depends_on: Vec<usize>,
}

impl Image<'_> {
    /// The store paths of the image, in layer order then spec order, each
    /// once.
    pub fn components(&self) -> Vec<Component<'_>> {
        let mut index = std::collections::HashMap::new();
        let mut out: Vec<Component<'_>> = Vec::new();
        for layer in &self.layers {
            let Contents::Store(paths) = layer.contents else {
                continue;
            };
            for path in paths {
                if index.contains_key(path.as_str()) {
                    continue;
                }
                index.insert(path.as_str(), out.len());
                let (hash_part, full_name) = store_path_parts(path);
                let (name, version) = parse_drv_name(full_name);
                out.push(Component {
                    path,
                    hash_part,
                    name,
                    version,
                    nar: None,
                    layer: layer.diff_id,
                    depends_on: Vec::new(),
                });
            }
        }
        if let Some(graph) = self.graph {
            for component in &mut out {
                let Some(i) = graph.index_of(component.path) else {
                    continue;
                };
                let node = graph.node(i);
                component.nar = graph
                    .nar_hash(i)
                    .and_then(nar_hash)
                    .map(|hash| (hash, node.nar_size));
                component.depends_on = node
                    .references
                    .iter()
                    .filter_map(|&r| index.get(graph.node(r).path.as_str()).copied())
                    .collect();
            }
        }
        out
    }

    /// The diff_ids of the base image's layers, bottom first.
    pub fn base_layers(&self) -> impl Iterator<Item = &Sha256Digest> {
        self.layers
            .iter()
            .filter(|l| matches!(l.contents, Contents::Base))
            .map(|l| &l.diff_id)
    }

    /// The documents `formats` ask for.
    pub fn documents(&self, formats: &[Format]) -> Vec<Document> {
        let components = self.components();
        formats
            .iter()
            .map(|&format| Document {
                format,
                bytes: match format {
                    Format::Spdx => spdx::document(self, &components),
                    Format::CycloneDx => cyclonedx::document(self, &components),
                },
            })
            .collect()
    }
}

/// Splits a store path into the hash part and the name:
/// `/nix/store/<hash>-hello-2.12` gives `(Some(hash), "hello-2.12")`. A
/// base name without a dash has no hash part.
pub fn store_path_parts(path: &str) -> (Option<&str>, &str) {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((hash, name)) if !hash.is_empty() && !name.is_empty() => (Some(hash), name),
        _ => (None, base),
    }
}

/// Splits a name into name and version as Nix's `builtins.parseDrvName`
/// does: at the first dash that is followed by a character that is not a
/// letter. Without one, the version is empty.
pub fn parse_drv_name(full: &str) -> (&str, &str) {
    let bytes = full.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&full[..i], &full[i + 1..]);
        }
    }
    (full, "")
}

/// The digits of Nix's base-32 encoding, in value order.
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A NAR hash as a graph writes it: `sha256:` with Nix base 32 or hex, or
/// the SRI form `sha256-` with base64. `None` for any other algorithm or a
/// malformed value.
pub fn nar_hash(text: &str) -> Option<Sha256Digest> {
    if let Some(rest) = text.strip_prefix("sha256:") {
        if rest.len() == 64 {
            Sha256Digest::from_hex(rest)
        } else {
            decode_nix_base32(rest)
        }
    } else if let Some(rest) = text.strip_prefix("sha256-") {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        Some(Sha256Digest(bytes.try_into().ok()?))
    } else {
        None
    }
}

/// Nix's base 32 of a sha256: the last character holds the lowest five
/// bits.
fn decode_nix_base32(text: &str) -> Option<Sha256Digest> {
    if text.len() != 52 {
        return None;
    }
    let mut out = [0u8; 32];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = NIX_BASE32.iter().position(|&d| d == c)? as u16;
        let (byte, bit) = (n * 5 / 8, n * 5 % 8);
        let value = digit << bit;
        out[byte] |= value as u8;
        let carry = (value >> 8) as u8;
        match out.get_mut(byte + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(Sha256Digest(out))
}

/// A name-based identifier that stays the same for the same image: the
/// first 16 bytes of sha256(`kind` NUL config digest), as UUID text with
/// the version nibble 5 and the RFC 4122 variant.
fn stable_uuid(kind: &str, image: &Image<'_>) -> String {
    let mut seed = kind.as_bytes().to_vec();
    seed.push(0);
    seed.extend_from_slice(Sha256Digest::of(image.config).hex().as_bytes());
    let mut b = Sha256Digest::of(&seed).0;
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_as_nix_splits_them() {
        // builtins.parseDrvName's documented examples and edge cases.
        assert_eq!(parse_drv_name("nix-0.12pre12876"), ("nix", "0.12pre12876"));
        assert_eq!(parse_drv_name("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(parse_drv_name("gtk+-3.24"), ("gtk+", "3.24"));
        assert_eq!(
            parse_drv_name("python3.11-numpy-1.26.4"),
            ("python3.11-numpy", "1.26.4")
        );
        assert_eq!(
            parse_drv_name("glibc-2.38-44-bin"),
            ("glibc", "2.38-44-bin")
        );
        assert_eq!(parse_drv_name("bash-interactive"), ("bash-interactive", ""));
        assert_eq!(parse_drv_name("foo-"), ("foo-", ""));
        assert_eq!(parse_drv_name("-1"), ("", "1"));
    }

    #[test]
    fn store_paths_split_into_hash_and_name() {
        assert_eq!(
            store_path_parts("/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12"),
            (Some("0mdqa9w1p6cmli6976v4wi0sw9r4p5pr"), "hello-2.12")
        );
        assert_eq!(store_path_parts("/gnu/store/abc-x"), (Some("abc"), "x"));
        assert_eq!(store_path_parts("/nix/store/plain"), (None, "plain"));
    }

    #[test]
    fn nar_hashes_in_every_notation_give_the_same_hex() {
        // sha256 of the empty string, in the notations Nix prints
        // (base 32 as `nix-hash --to-base32` gives it).
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let forms = [
            format!("sha256:{hex}"),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73".into(),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
        ];
        for form in &forms {
            assert_eq!(
                nar_hash(form).map(|d| d.hex()).as_deref(),
                Some(hex),
                "{form}"
            );
        }
        assert_eq!(
            nar_hash("sha256:1vydmf4nfi9307pwvaw9cx2j60ggrnmqjrs54c0yzkdbi5kla8q1")
                .map(|d| d.hex())
                .as_deref(),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        for bad in [
            "md5:abc",
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c7e",
            "sha256:zz",
            "sha256-AAAA",
            "sha256:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(nar_hash(bad), None, "{bad}");
        }
    }

    /// Nix's `printHash32`, written from its definition: character `n`
    /// from the end holds bits `5n .. 5n+4` of the hash, read as one
    /// little-endian number.
    fn nix_base32(bytes: &[u8; 32]) -> String {
        (0..52)
            .rev()
            .map(|n| {
                let (byte, bit) = (n * 5 / 8, n * 5 % 8);
                let low = u16::from(bytes[byte]) >> bit;
                let high = bytes
                    .get(byte + 1)
                    .map_or(0, |&b| u16::from(b) << (8 - bit));
                NIX_BASE32[usize::from((low | high) & 31)] as char
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn every_sha256_reads_back_from_nix_base32_and_sri(bytes in proptest::array::uniform32(0u8..)) {
            use base64::Engine;
            let text = nix_base32(&bytes);
            proptest::prop_assert_eq!(nar_hash(&format!("sha256:{text}")), Some(Sha256Digest(bytes)));
            let sri = base64::engine::general_purpose::STANDARD.encode(bytes);
            proptest::prop_assert_eq!(nar_hash(&format!("sha256-{sri}")), Some(Sha256Digest(bytes)));
        }

        #[test]
        fn a_split_name_joins_back_and_splits_at_the_first_version_dash(full in "[a-z0-9.+-]{0,24}") {
            let (name, version) = parse_drv_name(&full);
            if version.is_empty() {
                proptest::prop_assert_eq!(name, full.as_str());
            } else {
                proptest::prop_assert_eq!(format!("{name}-{version}"), full.clone());
                proptest::prop_assert!(!version.starts_with(|c: char| c.is_ascii_alphabetic()));
            }
            // No earlier dash starts a version.
            for (i, &c) in name.as_bytes().iter().enumerate() {
                let next = full.as_bytes().get(i + 1);
                proptest::prop_assert!(c != b'-' || next.is_none_or(|c| c.is_ascii_alphabetic()));
            }
        }
    }
}
