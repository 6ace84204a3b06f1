//! The image config, byte for byte as the reference writes it.
//!
//! Its sha256 is the image ID, so every key, its order and the JSON text
//! (CPython's `json.dumps(..., indent=4)`) must match: `created`,
//! `architecture`, `os`, the spec's `config` (with a base image's `Env`
//! merged in), `rootfs.diff_ids`, and one `history` entry per layer whose
//! comment is Python's `repr` of the layer's store paths.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::image::base::BaseImage;
use crate::pycompat::json::{self, PyStr, PyValue};
use crate::pycompat::repr;
use crate::spec::Spec;

/// What the config says of one layer.
pub struct LayerEntry<'a> {
    /// The layer's diff_id (the sha256 of its uncompressed tar).
    pub diff_id: &'a Sha256Digest,
    /// The store paths (or, for a base layer, its member name; for the
    /// customisation layer, its directory) that the history names.
    pub paths: Vec<&'a str>,
}

/// The config's JSON text.
pub fn encode(spec: &Spec, config: PyValue, layers: &[LayerEntry<'_>]) -> Vec<u8> {
    let created = PyValue::from(spec.created.isoformat());
    let mut diff_ids = Vec::with_capacity(layers.len());
    let mut history = Vec::with_capacity(layers.len());
    for layer in layers {
        diff_ids.push(PyValue::from(format!("sha256:{}", layer.diff_id)));
        history.push(dict(vec![
            ("created", created.clone()),
            (
                "comment",
                PyValue::from(format!(
                    "store paths: {}",
                    repr::repr_str_list(&layer.paths)
                )),
            ),
        ]));
    }
    let image_json = dict(vec![
        ("created", created),
        ("architecture", spec.architecture.clone()),
        ("os", PyValue::from("linux")),
        ("config", config),
        (
            "rootfs",
            dict(vec![
                ("diff_ids", PyValue::List(diff_ids)),
                ("type", PyValue::from("layers")),
            ]),
        ),
        ("history", PyValue::List(history)),
    ]);
    json::dumps_value_indent4(&image_json).into_bytes()
}

/// A dict with these keys in this order.
pub fn dict(entries: Vec<(&str, PyValue)>) -> PyValue {
    PyValue::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Merges the base image's `Env` into the spec's config like the reference:
/// base entries first, then the spec's, the last value of a name winning
/// while keeping the position of its first appearance.
pub fn overlay_base(base: Option<&BaseImage>, mut config: PyValue) -> Result<PyValue> {
    let Some(base) = base else {
        return Ok(config);
    };
    let env_of = |v: Option<&PyValue>, whose: &str| -> Result<Vec<PyValue>> {
        let problem = match v {
            None | Some(PyValue::Null) => return Ok(Vec::new()),
            Some(PyValue::List(items)) if items.iter().all(|i| i.as_pystr().is_some()) => {
                return Ok(items.clone())
            }
            Some(PyValue::List(_)) => format!("{whose} Env holds a non-string entry"),
            Some(_) => format!("{whose} Env is not a list"),
        };
        Err(Error::BaseImage {
            path: base.path().to_owned(),
            problem,
        })
    };
    let base_config = base.config.get("config");
    let mut env = env_of(base_config.and_then(|c| c.get("Env")), "the base image's")?;
    env.extend(env_of(config.get("Env"), "the spec's")?);
    if !env.is_empty() {
        let mut resolved = PyValue::Dict(Vec::new());
        for entry in env {
            let text = entry.as_pystr().expect("checked above");
            // entry.split("=", 1)[0]
            let name =
                PyStr::from_code_points(text.code_points().take_while(|&c| c != u32::from(b'=')))
                    .expect("a prefix of a valid str");
            let _ = resolved.set(name, entry);
        }
        let values = resolved
            .as_dict()
            .map(|d| d.iter().map(|(_, v)| v.clone()).collect())
            .unwrap_or_default();
        let _ = config.set("Env", PyValue::List(values));
    }
    Ok(config)
}
