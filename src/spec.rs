//! The JSON spec that nixpkgs' `dockerTools.streamLayeredImage` writes.
//!
//! Keys are read the way the reference reads them, with the defaults that
//! specs from older nixpkgs need (`mtime` defaults to `created`, `uid`/`gid`
//! to 0, `uname`/`gname` to "root", `store_dir` to `/nix/store`), and unknown
//! keys are ignored. The text is parsed the way Python's `json` module parses
//! it (`NaN`, lone surrogates, duplicate keys and all, see [`pyjson`]), and
//! `config`, `architecture` and `repo_tag` are kept as values because they
//! are copied into the image configuration as they are, in their key order.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pycompat::isotime::IsoDateTime;
use crate::pycompat::json::{self as pyjson, PyValue};
use crate::tar::layer::Stamp;
use crate::tar::walk;

/// A parsed and checked spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `architecture`, as given.
    pub architecture: PyValue,
    /// `config`, as given.
    pub config: PyValue,
    /// `created`, with "now" resolved.
    pub created: IsoDateTime,
    /// Time and ownership applied to store layer members.
    pub stamp: Stamp,
    /// `store_dir`.
    pub store_dir: String,
    /// `from_image`: a docker-archive, possibly gzip-compressed.
    pub from_image: Option<PathBuf>,
    /// `store_layers`, each path as written in the spec (these strings go
    /// into the history comments).
    pub store_layers: Vec<Vec<String>>,
    /// `store_layers` normalised like `pathlib` and checked to lie in the store.
    pub store_layer_paths: Vec<Vec<String>>,
    /// `customisation_layer`, a directory with `layer.tar` and `checksum`.
    pub customisation_layer: Option<String>,
    /// `repo_tag`, as given (absent is `None`).
    pub repo_tag: Option<PyValue>,
    /// `variant` (not a key of nixpkgs' specs): the CPU variant of a
    /// multi-platform image's entry, e.g. `v8` for `arm64`.
    pub variant: Option<String>,
    /// `store_layer_digests` (not a key of nixpkgs' specs): what
    /// `stream-layered-image digest` found for each store layer, see
    /// [`crate::record`].
    pub store_layer_digests: Option<Vec<crate::record::LayerRecord>>,
    /// The file the spec was read from, for messages.
    pub path: PathBuf,
}

impl Spec {
    /// Reads and checks the spec at `path`.
    pub fn load(path: &Path) -> Result<Spec> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading spec", e))?;
        Spec::parse(path, &bytes, IsoDateTime::now_utc())
    }

    /// Parses spec text; `path` is only used in messages, `now` is what
    /// "now" means.
    pub fn parse(path: &Path, bytes: &[u8], now: IsoDateTime) -> Result<Spec> {
        let value = pyjson::loads(bytes).map_err(|e| Error::Json {
            path: path.to_owned(),
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        let key_err = |key: &str, problem: String| Error::SpecKey {
            path: path.to_owned(),
            key: key.to_owned(),
            problem,
        };
        if !value.is_dict() {
            return Err(key_err("(top level)", "expected a JSON object".into()));
        }
        let map = &value;
        let required = |key: &str| -> Result<&PyValue> {
            map.get(key)
                .ok_or_else(|| key_err(key, "missing from the spec".into()))
        };
        let time = |key: &str, v: &PyValue| -> Result<IsoDateTime> {
            match v.as_str() {
                Some("now") => Ok(now),
                Some(s) => {
                    crate::pycompat::isotime::parse(s).map_err(|e| key_err(key, e.to_string()))
                }
                None => Err(key_err(
                    key,
                    format!("expected \"now\" or an ISO 8601 time, found {}", kind(v)),
                )),
            }
        };
        let int = |key: &str, default: i64| -> Result<i64> {
            match map.get(key) {
                None => Ok(default),
                // Python's int() truncates floats and accepts booleans.
                Some(PyValue::Int(n)) => n
                    .parse()
                    .map_err(|_| key_err(key, format!("{n} is out of range"))),
                Some(PyValue::Float(f)) if f.is_finite() && f.abs() < 9.2e18 => {
                    Ok(f.trunc() as i64)
                }
                Some(PyValue::Bool(b)) => Ok(i64::from(*b)),
                Some(v) if v.as_str().is_some_and(|s| s.trim().parse::<i64>().is_ok()) => Ok(v
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .parse()
                    .unwrap_or(default)),
                Some(other) => Err(key_err(
                    key,
                    format!("expected an integer, found {}", kind(other)),
                )),
            }
        };
        let string = |key: &str, default: &str| -> Result<String> {
            match map.get(key) {
                None => Ok(default.to_owned()),
                Some(v) if v.as_str().is_some() => Ok(v.as_str().unwrap_or_default().to_owned()),
                Some(other) => Err(key_err(
                    key,
                    format!("expected a string of valid Unicode, found {}", kind(other)),
                )),
            }
        };
        let optional_path = |key: &str| -> Result<Option<String>> {
            match map.get(key) {
                None | Some(PyValue::Null) => Ok(None),
                Some(v) if v.as_str().is_some() => Ok(v.as_str().map(str::to_owned)),
                Some(other) => Err(key_err(
                    key,
                    format!("expected a path or null, found {}", kind(other)),
                )),
            }
        };

        let architecture = required("architecture")?.clone();
        let config = required("config")?.clone();
        let created = time("created", required("created")?)?;
        let mtime_key = if map.get("mtime").is_some() {
            "mtime"
        } else {
            "created"
        };
        let mtime_time = match map.get("mtime") {
            None => created,
            Some(v) => time("mtime", v)?,
        };
        let mtime = match mtime_time.utc_offset_micros {
            Some(_) => mtime_time.unix_seconds(),
            None => {
                let tz = std::env::var("TZ").unwrap_or_default();
                let offset = local_offset_seconds(&tz).ok_or_else(|| {
                    key_err(
                        mtime_key,
                        format!(
                            "a time without a UTC offset is local time, and TZ={tz:?} is not a \
                             fixed offset; write the time with an offset such as \"Z\""
                        ),
                    )
                })?;
                mtime_time.unix_seconds() - offset
            }
        };
        let stamp = Stamp {
            mtime,
            uid: int("uid", 0)?,
            gid: int("gid", 0)?,
            uname: string("uname", "root")?,
            gname: string("gname", "root")?,
        };
        let store_dir = string("store_dir", "/nix/store")?;
        if !store_dir.starts_with('/') || walk::store_parents(&store_dir).is_empty() {
            return Err(key_err(
                "store_dir",
                format!("expected an absolute directory, found {store_dir:?}"),
            ));
        }

        let layers_value = required("store_layers")?;
        let Some(layers) = layers_value.as_list() else {
            return Err(key_err(
                "store_layers",
                format!("expected a list of layers, found {}", kind(layers_value)),
            ));
        };
        let mut store_layers = Vec::with_capacity(layers.len());
        let mut store_layer_paths = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let Some(paths) = layer.as_list() else {
                return Err(key_err(
                    &format!("store_layers[{i}]"),
                    format!("expected a list of store paths, found {}", kind(layer)),
                ));
            };
            let mut raw = Vec::with_capacity(paths.len());
            let mut norm = Vec::with_capacity(paths.len());
            for (j, p) in paths.iter().enumerate() {
                let Some(p) = p.as_str() else {
                    return Err(key_err(
                        &format!("store_layers[{i}][{j}]"),
                        format!("expected a store path, found {}", kind(p)),
                    ));
                };
                let checked = walk::check_store_path(p, &store_dir)
                    .map_err(|e| key_err(&format!("store_layers[{i}][{j}]"), e.to_string()))?;
                norm.push(checked);
                raw.push(p.to_owned());
            }
            store_layers.push(raw);
            store_layer_paths.push(norm);
        }

        Ok(Spec {
            architecture,
            config,
            created,
            stamp,
            store_dir,
            from_image: optional_path("from_image")?.map(PathBuf::from),
            store_layers,
            store_layer_paths,
            customisation_layer: optional_path("customisation_layer")?,
            repo_tag: map.get("repo_tag").cloned(),
            variant: match map.get("variant") {
                None | Some(PyValue::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| key_err("variant", "expected a non-empty string".into()))?
                        .to_owned(),
                ),
            },
            store_layer_digests: match map.get(crate::record::SPEC_KEY) {
                None => None,
                Some(v) => crate::record::parse(path, v)?,
            },
            path: path.to_owned(),
        })
    }
}

/// The local time's offset east of UTC, in seconds, for a POSIX `TZ`
/// value without daylight saving rules (`UTC0`, `IST-5:30`, `<+03>-3`).
/// An empty or unset `TZ` means UTC: that is the case in Nix and Guix build
/// sandboxes, which have no `/etc/localtime` either. Zone names and rules
/// with daylight saving time give `None`.
pub fn local_offset_seconds(tz: &str) -> Option<i64> {
    let tz = tz.strip_prefix(':').unwrap_or(tz);
    if tz.is_empty() || tz == "UTC" || tz == "GMT" {
        return Some(0);
    }
    let rest = if let Some(quoted) = tz.strip_prefix('<') {
        &quoted[quoted.find('>')? + 1..]
    } else {
        let name_len = tz.bytes().take_while(u8::is_ascii_alphabetic).count();
        if name_len < 3 {
            return None;
        }
        &tz[name_len..]
    };
    let (sign, rest) = match rest.as_bytes().first()? {
        b'-' => (1, &rest[1..]),
        b'+' => (-1, &rest[1..]),
        _ => (-1, rest),
    };
    let mut seconds = 0i64;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        seconds += part.parse::<i64>().ok()? * [3600, 60, 1][i];
    }
    Some(sign * seconds)
}

fn kind(v: &PyValue) -> &'static str {
    match v {
        PyValue::Null => "null",
        PyValue::Bool(_) => "a boolean",
        PyValue::Int(_) | PyValue::Float(_) => "a number",
        PyValue::Str(s) if s.as_str().is_none() => "a string with lone surrogates",
        PyValue::Str(_) => "a string",
        PyValue::List(_) => "a list",
        PyValue::Dict(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec> {
        let now = crate::pycompat::isotime::parse("2000-01-01T00:00:00+00:00").unwrap();
        Spec::parse(Path::new("spec.json"), text.as_bytes(), now)
    }

    const MINIMAL: &str = r#"{"architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
        "store_layers": [["/nix/store/abc-x"]], "repo_tag": "x:y"}"#;

    #[test]
    fn old_specs_get_defaults() {
        let spec = parse(MINIMAL).unwrap();
        assert_eq!(spec.stamp.mtime, 1);
        assert_eq!((spec.stamp.uid, spec.stamp.gid), (0, 0));
        assert_eq!(
            (spec.stamp.uname.as_str(), spec.stamp.gname.as_str()),
            ("root", "root")
        );
        assert_eq!(spec.store_dir, "/nix/store");
        assert!(spec.customisation_layer.is_none() && spec.from_image.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(r#"{"architecture": "amd64", "config": {}, "created": "now"}"#).unwrap_err();
        assert!(e.to_string().contains("\"store_layers\""), "{e}");
        let e = parse(&MINIMAL.replace("[[\"/nix/store/abc-x\"]]", "[[1]]")).unwrap_err();
        assert!(e.to_string().contains("store_layers[0][0]"), "{e}");
        let e = parse(&MINIMAL.replace("\"x:y\"", "\"x:y\", \"uid\": \"root\"")).unwrap_err();
        assert!(e.to_string().contains("\"uid\""), "{e}");
    }

    #[test]
    fn invalid_json_gives_line_and_column() {
        let e = parse("{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert!(e.to_string().contains("line 3, column 3"), "{e}");
    }

    #[test]
    fn posix_tz_offsets() {
        assert_eq!(local_offset_seconds(""), Some(0));
        assert_eq!(local_offset_seconds("UTC0"), Some(0));
        assert_eq!(local_offset_seconds("IST-5:30"), Some(5 * 3600 + 30 * 60));
        assert_eq!(local_offset_seconds("EST5"), Some(-5 * 3600));
        assert_eq!(local_offset_seconds("<+03>-3"), Some(3 * 3600));
        assert_eq!(local_offset_seconds("EST5EDT,M3.2.0,M11.1.0"), None);
        assert_eq!(local_offset_seconds("Europe/Paris"), None);
    }

    #[test]
    fn paths_outside_the_store_are_rejected() {
        let e = parse(&MINIMAL.replace("/nix/store/abc-x", "/etc/passwd")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("store_layers[0][0]") && text.contains("not inside store_dir"),
            "{e}"
        );
    }
}
