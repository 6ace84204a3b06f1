//! The SPDX 2.3 JSON document.
//!
//! One package for the image (`primaryPackagePurpose` `CONTAINER`), which
//! the document `DESCRIBES` and which `CONTAINS` one package per store path
//! and one per base image layer. A store path's package carries its name
//! and version, its store path and hash part as external references of
//! category `OTHER`, its NAR hash as a `SHA256` checksum, and an annotation
//! naming the layer (and the NAR size) that holds it; its references are
//! `DEPENDS_ON` relationships. No file is analysed (`filesAnalyzed`
//! false), so no verification code is owed.

use serde_json::{json, Map, Value};

use super::{stable_uuid, Component, Image, TOOL, TOOL_VERSION};
use crate::digest::Sha256Digest;

/// The document, as compact JSON.
pub fn document(image: &Image<'_>, components: &[Component<'_>]) -> Vec<u8> {
    let created = image.created.utc_text();
    let tool = format!("Tool: {TOOL}-{TOOL_VERSION}");
    let annotation = |comment: String| {
        json!({
            "annotationDate": created,
            "annotationType": "OTHER",
            "annotator": tool,
            "comment": comment,
        })
    };
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image.name,
        "versionInfo": image.tag,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [checksum(&Sha256Digest::of(image.config))],
        "primaryPackagePurpose": "CONTAINER",
        "comment": "The image; its checksum is the sha256 of its config.",
    })];
    let mut relationships = vec![relationship(
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        "SPDXRef-Image",
    )];
    for (i, diff_id) in image.base_layers().enumerate() {
        let id = format!("SPDXRef-BaseLayer-{}", i + 1);
        packages.push(json!({
            "SPDXID": id,
            "name": format!("base image layer {}", i + 1),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [checksum(diff_id)],
            "primaryPackagePurpose": "ARCHIVE",
            "comment": "A layer of the base image (from_image); its checksum is its diff_id.",
        }));
        relationships.push(relationship("SPDXRef-Image", "CONTAINS", &id));
    }
    for (i, c) in components.iter().enumerate() {
        let mut package = Map::new();
        package.insert("SPDXID".into(), json!(package_id(i)));
        package.insert("name".into(), json!(c.name));
        if !c.version.is_empty() {
            package.insert("versionInfo".into(), json!(c.version));
        }
        package.insert("downloadLocation".into(), json!("NOASSERTION"));
        package.insert("filesAnalyzed".into(), json!(false));
        let mut notes = vec![annotation(format!("layer: sha256:{}", c.layer))];
        if let Some((hash, size)) = &c.nar {
            package.insert("checksums".into(), json!([checksum(hash)]));
            notes.push(annotation(format!("narSize: {size}")));
        }
        let mut refs = vec![external_ref("store-path", c.path)];
        if let Some(hash) = c.hash_part {
            refs.push(external_ref("store-path-hash", hash));
        }
        package.insert("externalRefs".into(), Value::Array(refs));
        package.insert("annotations".into(), Value::Array(notes));
        packages.push(Value::Object(package));
        relationships.push(relationship("SPDXRef-Image", "CONTAINS", &package_id(i)));
        for &d in &c.depends_on {
            relationships.push(relationship(&package_id(i), "DEPENDS_ON", &package_id(d)));
        }
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}:{}", image.name, image.tag),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/{TOOL}-{}",
            stable_uuid("spdx", image)
        ),
        "creationInfo": {
            "created": created,
            "creators": [tool],
        },
        "packages": packages,
        "relationships": relationships,
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

/// The SPDX identifier of the `i`th store path; indices keep identifiers
/// within SPDX's `[A-Za-z0-9.-]` whatever the path's name.
fn package_id(i: usize) -> String {
    format!("SPDXRef-StorePath-{}", i + 1)
}

fn checksum(digest: &Sha256Digest) -> Value {
    json!({"algorithm": "SHA256", "checksumValue": digest.hex()})
}

fn external_ref(kind: &str, locator: &str) -> Value {
    json!({
        "referenceCategory": "OTHER",
        "referenceType": kind,
        "referenceLocator": locator,
    })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}
