//! The CycloneDX 1.5 JSON document.
//!
//! `metadata.component` is the image (type `container`); each store path
//! is a `library` component whose `bom-ref` is its store path, with its
//! name, version, NAR hash (`SHA-256`) and properties for the store path,
//! the hash part, the NAR size and the diff_id of the layer that holds it.
//! Base image layers are `file` components. `dependencies` has one entry
//! per store path with its references, and one for the image, which
//! depends on the paths no other path of the image refers to, and on its
//! base layers.

use serde_json::{json, Map, Value};

use super::{stable_uuid, Component, Image, TOOL, TOOL_VERSION};
use crate::digest::Sha256Digest;

/// The prefix of our property names (CycloneDX's property taxonomy leaves
/// names outside its own namespace to their producer).
const PROPERTY: &str = "stream-layered-image";
const IMAGE_REF: &str = "image";

/// The document, as compact JSON.
pub fn document(image: &Image<'_>, components: &[Component<'_>]) -> Vec<u8> {
    let property =
        |name: &str, value: String| json!({"name": format!("{PROPERTY}:{name}"), "value": value});
    let mut entries = Vec::new();
    let mut image_depends: Vec<String> = Vec::new();
    for (i, diff_id) in image.base_layers().enumerate() {
        let reference = format!("base-layer-{}", i + 1);
        entries.push(json!({
            "type": "file",
            "bom-ref": reference,
            "name": format!("base image layer {}", i + 1),
            "hashes": [hash(diff_id)],
            "properties": [property("base_layer_diff_id", format!("sha256:{diff_id}"))],
        }));
        image_depends.push(reference);
    }
    let mut referred = vec![false; components.len()];
    for c in components {
        for &d in &c.depends_on {
            referred[d] = true;
        }
    }
    for (c, &referred) in components.iter().zip(&referred) {
        let mut entry = Map::new();
        entry.insert("type".into(), json!("library"));
        entry.insert("bom-ref".into(), json!(c.path));
        entry.insert("name".into(), json!(c.name));
        if !c.version.is_empty() {
            entry.insert("version".into(), json!(c.version));
        }
        let mut properties = vec![property("store_path", c.path.to_owned())];
        if let Some(hash_part) = c.hash_part {
            properties.push(property("store_path_hash", hash_part.to_owned()));
        }
        if let Some((nar_hash, size)) = &c.nar {
            entry.insert("hashes".into(), json!([hash(nar_hash)]));
            properties.push(property("nar_size", size.to_string()));
        }
        properties.push(property("layer_diff_id", format!("sha256:{}", c.layer)));
        entry.insert("properties".into(), Value::Array(properties));
        entries.push(Value::Object(entry));
        if !referred {
            image_depends.push(c.path.to_owned());
        }
    }
    let mut dependencies = vec![json!({"ref": IMAGE_REF, "dependsOn": image_depends})];
    dependencies.extend(components.iter().map(|c| {
        let on: Vec<&str> = c.depends_on.iter().map(|&d| components[d].path).collect();
        json!({"ref": c.path, "dependsOn": on})
    }));
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", stable_uuid("cyclonedx", image)),
        "version": 1,
        "metadata": {
            "timestamp": image.created.utc_text(),
            "tools": {
                "components": [{"type": "application", "name": TOOL, "version": TOOL_VERSION}],
            },
            "component": {
                "type": "container",
                "bom-ref": IMAGE_REF,
                "name": image.name,
                "version": image.tag,
                "hashes": [hash(&Sha256Digest::of(image.config))],
                "properties": [property("image_config_digest", format!("sha256:{}", Sha256Digest::of(image.config)))],
            },
        },
        "components": entries,
        "dependencies": dependencies,
    });
    serde_json::to_vec(&doc).expect("plain JSON")
}

fn hash(digest: &Sha256Digest) -> Value {
    json!({"alg": "SHA-256", "content": digest.hex()})
}
