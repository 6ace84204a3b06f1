//! SBOMs of the closure (`--sbom spdx|cyclonedx`): checked by independent
//! validators (spdx-tools' `pyspdxtools`, cyclonedx-python-lib's strict
//! JSON schema validator, both from PyPI, installed by
//! `scripts/sbom-validators`), against the image's own layers, and found
//! again from the image digest alone: in an OCI layout through
//! `index.json`, in a real registry through the referrers tag fallback
//! (`sha256-<hex>`) read with skopeo and curl.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clients::{require, run, sha256_file, unavailable, Registry};
use serde_json::{json, Value};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// The store paths of the fixture, by name, with the name and version Nix's
/// `builtins.parseDrvName` gives them: the version starts at the first
/// dash that is followed by a character other than a letter.
const PATHS: [(&str, &str, &str); 5] = [
    (
        "00000000000000000000000000000001-glibc-2.39-52",
        "glibc",
        "2.39-52",
    ),
    (
        "00000000000000000000000000000002-hello-2.12.1",
        "hello",
        "2.12.1",
    ),
    (
        "00000000000000000000000000000003-python3.11-requests-2.31.0",
        "python3.11-requests",
        "2.31.0",
    ),
    (
        "00000000000000000000000000000004-etc-profile",
        "etc-profile",
        "",
    ),
    (
        "00000000000000000000000000000005-font-x11-1",
        "font-x11",
        "1",
    ),
];

/// NAR hashes as Nix writes them, with the hex sha256 each stands for:
/// nix32 (as `nix path-info --json` and exportReferencesGraph write) and
/// SRI (newer Nix). The nix32 text is `nix-hash --to-base32` of the hex;
/// the SRI text is the well-known one of the empty string's sha256.
const NIX32: (&str, &str) = (
    "sha256:1vydmf4nfi9307pwvaw9cx2j60ggrnmqjrs54c0yzkdbi5kla8q1",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
);
const SRI: (&str, &str) = (
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
);

/// A store of [`PATHS`] in three layers, a references graph of them, and
/// optionally a base image (itself built by the tool, from another store).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        for (i, (name, ..)) in PATHS.iter().enumerate() {
            let p = f.store().join(name);
            fs::create_dir_all(p.join("share")).unwrap();
            fs::write(p.join("share/data"), format!("path {i}\n").repeat(100 + i)).unwrap();
        }
        let graph = json!([
            {"path": f.path(0), "narHash": NIX32.0, "narSize": 4096, "references": [f.path(0)]},
            {"path": f.path(1), "narHash": SRI.0, "narSize": 512,
             "references": [f.path(0), f.path(1)]},
            {"path": f.path(2), "narHash": NIX32.0, "narSize": 1, "references": [f.path(0), f.path(3)]},
            {"path": f.path(3), "narSize": 7, "references": []},
            {"path": f.path(4), "references": [f.path(1)]},
        ]);
        fs::write(f.graph(), graph.to_string()).unwrap();
        f
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    fn path(&self, i: usize) -> String {
        self.store().join(PATHS[i].0).display().to_string()
    }

    fn graph(&self) -> PathBuf {
        self.root().join("graph.json")
    }

    /// A spec of the fixture's paths; `extra` members are added.
    fn spec(&self, name: &str, extra: Value) -> PathBuf {
        let mut spec = json!({
            "architecture": "amd64", "config": {"Env": ["A=1"]},
            "created": "2024-05-06T07:08:09+02:00", "store_dir": self.store(),
            "store_layers": [[self.path(0)], [self.path(1), self.path(3)], [self.path(2), self.path(4)]],
            "repo_tag": "example.org/sbom/app:1.0",
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let path = self.root().join(name);
        fs::write(&path, spec.to_string()).unwrap();
        path
    }

    /// A docker-archive base image of one layer of another store path.
    fn base_image(&self) -> PathBuf {
        let store = self.root().join("base-store");
        let busybox = store.join("0000000000000000000000000000000b-busybox-1.36.1");
        fs::create_dir_all(busybox.join("bin")).unwrap();
        fs::write(busybox.join("bin/sh"), "not really a shell\n").unwrap();
        let spec = self.root().join("base.json");
        let text = json!({
            "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
            "store_dir": store, "store_layers": [[busybox]], "repo_tag": "base:1",
        });
        fs::write(&spec, text.to_string()).unwrap();
        let out = self.root().join("base.tar");
        ok(
            tool(&[spec.as_os_str(), "-o".as_ref(), out.as_os_str()]),
            "base image",
        );
        out
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }
}

fn tool(args: &[&OsStr]) -> Output {
    clients::output_without_credentials(TOOL, args)
}

/// The tool with `args`, then both SBOMs written to `spdx` and `cdx`, with
/// the fixture's graph.
fn tool_with_sboms(args: &[&OsStr], f: &Fixture, spdx: &Path, cdx: &Path) -> Output {
    let graph = f.graph();
    let mut all = args.to_vec();
    all.extend([
        "--sbom".as_ref(),
        "spdx,cyclonedx".as_ref(),
        "--sbom-out".as_ref(),
        spdx.as_os_str(),
        "--sbom-out".as_ref(),
        cdx.as_os_str(),
        "--graph".as_ref(),
        graph.as_os_str(),
    ]);
    tool(&all)
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        clients::stderr_text(&out)
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bin directory of the validators (installed once per test binary).
fn validators(test: &str) -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sbom-validators");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sbom-validators");
        let out = Command::new(script)
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "scripts/sbom-validators failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match found {
        Ok(bin) => Some(bin.clone()),
        Err(reason) => {
            unavailable(test, reason);
            None
        }
    }
}

/// Runs both validators on the files; panics with their words if either
/// refuses one.
fn validate(bin: &Path, spdx: &Path, cyclonedx: &Path) {
    for (program, file) in [("pyspdxtools", spdx), ("cyclonedx-validate", cyclonedx)] {
        let mut cmd = Command::new(bin.join(program));
        if program == "pyspdxtools" {
            cmd.arg("-i");
        }
        let out = cmd.arg(file).output().unwrap();
        assert!(
            out.status.success(),
            "{program} refuses {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An OCI layout directory, read by hand.
struct Layout(PathBuf);

impl Layout {
    fn blob_path(&self, digest: &str) -> PathBuf {
        self.0
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
    }

    fn json(&self, digest: &str) -> Value {
        read_json(&self.blob_path(digest))
    }

    fn index(&self) -> Value {
        read_json(&self.0.join("index.json"))
    }

    /// The image's layers, bottom first: diff_id (the layers are not
    /// compressed) and the store paths they hold (the top-level entries
    /// under `store`).
    fn layers(&self, manifest: &Value, store: &Path) -> Vec<(String, BTreeSet<String>)> {
        let prefix = format!("{}/", store.display().to_string().trim_start_matches('/'));
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| {
                let digest = layer["digest"].as_str().unwrap();
                assert_eq!(
                    layer["mediaType"], "application/vnd.oci.image.layer.v1.tar",
                    "uncompressed layers"
                );
                let listing = run(Command::new("tar").arg("-tf").arg(self.blob_path(digest)));
                let paths = String::from_utf8_lossy(&listing.stdout)
                    .lines()
                    .filter_map(|entry| {
                        entry
                            .trim_start_matches("./")
                            .trim_start_matches('/')
                            .strip_prefix(&prefix)
                    })
                    .filter_map(|rest| rest.split('/').next())
                    .filter(|name| !name.is_empty())
                    .map(|name| format!("{}/{name}", store.display()))
                    .collect();
                (digest.to_owned(), paths)
            })
            .collect()
    }

    /// The artifacts `index.json` lists beside the image, by artifactType.
    fn artifacts(&self) -> BTreeMap<String, Value> {
        self.index()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.get("artifactType").is_some())
            .map(|m| {
                let manifest = self.json(m["digest"].as_str().unwrap());
                (m["artifactType"].as_str().unwrap().to_owned(), manifest)
            })
            .collect()
    }
}

/// Each component's store path and layer diff_id, and its name, version
/// and NAR hash, as the CycloneDX document gives them.
fn cyclonedx_components(doc: &Value) -> BTreeMap<String, (String, String, String, Option<String>)> {
    let mut out = BTreeMap::new();
    for c in doc["components"].as_array().unwrap() {
        if c["type"] != "library" {
            continue;
        }
        let property = |name: &str| {
            c["properties"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == format!("stream-layered-image:{name}"))
                .map(|p| p["value"].as_str().unwrap().to_owned())
        };
        let path = property("store_path").expect("a store_path property");
        assert_eq!(c["bom-ref"], path.as_str(), "bom-ref is the store path");
        let nar = c.get("hashes").map(|h| {
            assert_eq!(h[0]["alg"], "SHA-256");
            h[0]["content"].as_str().unwrap().to_owned()
        });
        let entry = (
            property("layer_diff_id").expect("a layer_diff_id property"),
            c["name"].as_str().unwrap().to_owned(),
            c["version"].as_str().unwrap_or("").to_owned(),
            nar,
        );
        assert!(out.insert(path, entry).is_none(), "each path once");
    }
    out
}

/// Each store path's package in the SPDX document: its layer (from the
/// annotation), name, version and NAR hash, by store path; and the
/// `DEPENDS_ON` pairs, as store paths.
#[allow(clippy::type_complexity)]
fn spdx_packages(
    doc: &Value,
) -> (
    BTreeMap<String, (String, String, String, Option<String>)>,
    BTreeSet<(String, String)>,
) {
    let mut by_id = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in doc["packages"].as_array().unwrap() {
        let Some(refs) = p.get("externalRefs") else {
            continue;
        };
        let locator = |kind: &str| {
            refs.as_array()
                .unwrap()
                .iter()
                .find(|r| r["referenceType"] == kind)
                .map(|r| r["referenceLocator"].as_str().unwrap().to_owned())
        };
        let path = locator("store-path").expect("a store-path reference");
        let layer = p["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|a| a["comment"].as_str().unwrap().strip_prefix("layer: "))
            .expect("a layer annotation")
            .to_owned();
        let nar = p.get("checksums").map(|c| {
            assert_eq!(c[0]["algorithm"], "SHA256");
            c[0]["checksumValue"].as_str().unwrap().to_owned()
        });
        by_id.insert(p["SPDXID"].as_str().unwrap().to_owned(), path.clone());
        let entry = (
            layer,
            p["name"].as_str().unwrap().to_owned(),
            p["versionInfo"].as_str().unwrap_or("").to_owned(),
            nar,
        );
        assert!(out.insert(path, entry).is_none(), "each path once");
    }
    let depends = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON")
        .map(|r| {
            let name = |k: &str| by_id[r[k].as_str().unwrap()].clone();
            (name("spdxElementId"), name("relatedSpdxElement"))
        })
        .collect();
    (out, depends)
}

#[test]
fn sboms_pass_the_validators_and_describe_exactly_the_image_layers() {
    if !require("sbom_validate", &["tar", "python3"]) {
        return;
    }
    let Some(bin) = validators("sbom_validate") else {
        return;
    };
    let f = Fixture::new();
    let base = f.base_image();
    let spec = f.spec("spec.json", json!({"from_image": base}));
    let (spdx, cdx, layout) = (
        f.file("a.spdx.json"),
        f.file("a.cdx.json"),
        f.file("layout"),
    );
    ok(
        tool_with_sboms(
            &[
                spec.as_os_str(),
                "--format".as_ref(),
                "oci-dir".as_ref(),
                layout.as_os_str(),
            ],
            &f,
            &spdx,
            &cdx,
        ),
        "oci-dir with both SBOMs",
    );
    validate(&bin, &spdx, &cdx);

    // What the layers hold, read from the layout.
    let layout = Layout(layout);
    let image_entry = layout.index()["manifests"][0].clone();
    let manifest = layout.json(image_entry["digest"].as_str().unwrap());
    let layers = layout.layers(&manifest, &f.store());
    let base_diff_ids = clients::Archive::read(&base).diff_ids();
    let mut in_layers = BTreeMap::new();
    for (diff_id, paths) in &layers {
        for p in paths {
            assert!(
                in_layers.insert(p.clone(), diff_id.clone()).is_none(),
                "{p} in two layers"
            );
        }
    }
    assert_eq!(
        in_layers.len(),
        PATHS.len(),
        "the fixture's paths are in the layers"
    );

    // CycloneDX: every store path of the layers, and only those, each with
    // the layer that holds it.
    let cyclonedx = read_json(&cdx);
    let components = cyclonedx_components(&cyclonedx);
    let layer_of: BTreeMap<String, String> = components
        .iter()
        .map(|(p, (layer, ..))| (p.clone(), layer.clone()))
        .collect();
    assert_eq!(layer_of, in_layers);
    // SPDX: the same.
    let (packages, depends) = spdx_packages(&read_json(&spdx));
    let spdx_layer_of: BTreeMap<String, String> = packages
        .iter()
        .map(|(p, (layer, ..))| (p.clone(), layer.clone()))
        .collect();
    assert_eq!(spdx_layer_of, in_layers);

    // Names, versions and NAR hashes.
    let nar = [Some(NIX32.1), Some(SRI.1), Some(NIX32.1), None, None];
    for (i, (_, name, version)) in PATHS.iter().enumerate() {
        let want = (
            name.to_string(),
            version.to_string(),
            nar[i].map(str::to_owned),
        );
        let (_, n, v, h) = &components[&f.path(i)];
        assert_eq!(
            (n.clone(), v.clone(), h.clone()),
            want,
            "CycloneDX {}",
            PATHS[i].0
        );
        let (_, n, v, h) = &packages[&f.path(i)];
        assert_eq!(
            (n.clone(), v.clone(), h.clone()),
            want,
            "SPDX {}",
            PATHS[i].0
        );
    }

    // Dependencies: the graph's references, without self-references.
    let want: BTreeSet<(String, String)> = [(1, 0), (2, 0), (2, 3), (4, 1)]
        .iter()
        .map(|&(a, b)| (f.path(a), f.path(b)))
        .collect();
    assert_eq!(depends, want, "SPDX DEPENDS_ON");
    let cdx_depends: BTreeSet<(String, String)> = cyclonedx["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ref"] != "image")
        .flat_map(|d| {
            let from = d["ref"].as_str().unwrap().to_owned();
            d["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |to| (from.clone(), to.as_str().unwrap().to_owned()))
        })
        .collect();
    assert_eq!(cdx_depends, want, "CycloneDX dependencies");

    // The base image's layers are listed as such, by diff_id, and the
    // image's config digest names the image.
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let cdx_base: Vec<String> = cyclonedx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "file")
        .map(|c| format!("sha256:{}", c["hashes"][0]["content"].as_str().unwrap()))
        .collect();
    assert_eq!(cdx_base, base_diff_ids);
    assert_eq!(
        format!(
            "sha256:{}",
            cyclonedx["metadata"]["component"]["hashes"][0]["content"]
                .as_str()
                .unwrap()
        ),
        config_digest
    );
    let spdx_doc = read_json(&spdx);
    let spdx_base: Vec<String> = spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .unwrap()
                .starts_with("SPDXRef-BaseLayer-")
        })
        .map(|p| {
            format!(
                "sha256:{}",
                p["checksums"][0]["checksumValue"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(spdx_base, base_diff_ids);
    // No wall-clock time: the spec's `created`, in UTC.
    assert_eq!(cyclonedx["metadata"]["timestamp"], "2024-05-06T05:08:09Z");
    assert_eq!(spdx_doc["creationInfo"]["created"], "2024-05-06T05:08:09Z");

    // The layout holds each as an OCI 1.1 artifact about the image.
    let artifacts = layout.artifacts();
    assert_eq!(
        artifacts.keys().collect::<Vec<_>>(),
        ["application/spdx+json", "application/vnd.cyclonedx+json"]
    );
    for (kind, file) in [
        ("application/spdx+json", &spdx),
        ("application/vnd.cyclonedx+json", &cdx),
    ] {
        let artifact = &artifacts[kind];
        assert_eq!(artifact["artifactType"], kind);
        assert_eq!(artifact["subject"]["digest"], image_entry["digest"]);
        assert_eq!(artifact["subject"]["size"], image_entry["size"]);
        assert_eq!(
            artifact["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(
            fs::read(layout.blob_path(artifact["config"]["digest"].as_str().unwrap())).unwrap(),
            b"{}"
        );
        let layer = &artifact["layers"][0];
        assert_eq!(layer["mediaType"], kind);
        assert_eq!(
            fs::read(layout.blob_path(layer["digest"].as_str().unwrap())).unwrap(),
            fs::read(file).unwrap(),
            "the artifact's blob is the --sbom-out file"
        );
    }
}

#[test]
fn sboms_are_the_same_bytes_from_the_same_spec_and_the_image_is_unchanged() {
    if !require("sbom_deterministic", &["skopeo"]) {
        return;
    }
    let f = Fixture::new();
    let spec = f.spec("spec.json", json!({}));
    let build = |n: u32, format: &str| {
        let (spdx, cdx, out) = (
            f.file(&format!("{n}.spdx.json")),
            f.file(&format!("{n}.cdx.json")),
            f.file(&format!("{n}.tar")),
        );
        ok(
            tool(&[
                spec.as_os_str(),
                "--format".as_ref(),
                format.as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
                "--sbom".as_ref(),
                "cyclonedx".as_ref(),
                "--sbom".as_ref(),
                "spdx".as_ref(),
                "--sbom-out".as_ref(),
                cdx.as_os_str(),
                "--sbom-out".as_ref(),
                spdx.as_os_str(),
            ]),
            "build with SBOMs",
        );
        (fs::read(spdx).unwrap(), fs::read(cdx).unwrap(), out)
    };
    let (spdx1, cdx1, archive) = build(1, "docker-archive");
    let (spdx2, cdx2, oci) = build(2, "oci-archive");
    assert_eq!(spdx1, spdx2, "SPDX bytes");
    assert_eq!(cdx1, cdx2, "CycloneDX bytes");
    assert!(!spdx1.is_empty() && !cdx1.is_empty());

    // --sbom leaves the image as it is: the docker-archive is the one a run
    // without it writes.
    let plain = f.file("plain.tar");
    ok(
        tool(&[spec.as_os_str(), "-o".as_ref(), plain.as_os_str()]),
        "build without SBOMs",
    );
    assert_eq!(sha256_file(&plain), sha256_file(&archive));

    // skopeo still finds the image in the OCI archive by its tag, beside
    // the artifacts.
    let out = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}:1.0", oci.display())));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        clients::strings(&inspected["Layers"]),
        clients::Archive::read(&plain).diff_ids()
    );
}

/// skopeo's digest of the manifest under `reference` in the registry, as
/// hex.
fn manifest_digest(reference: &str) -> String {
    let out = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", reference]));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = inspected["Digest"].as_str().unwrap();
    digest.strip_prefix("sha256:").unwrap().to_owned()
}

/// `skopeo inspect --raw` of `reference` in the registry: the bytes.
fn raw(reference: &str) -> Vec<u8> {
    run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", reference])).stdout
}

#[test]
fn a_pushed_sbom_is_found_from_the_image_digest_through_the_referrers_tag() {
    if !require("sbom_push", &["docker-registry", "skopeo", "curl"]) {
        return;
    }
    let registry = Registry::start();
    let f = Fixture::new();
    let spec = f.spec("spec.json", json!({}));
    let (spdx, cdx) = (f.file("p.spdx.json"), f.file("p.cdx.json"));
    let push = |tag: &str| {
        let target = format!("{}/sbom/app:{tag}", registry.host());
        ok(
            tool_with_sboms(
                &[
                    spec.as_os_str(),
                    "--insecure".as_ref(),
                    "--push".as_ref(),
                    target.as_ref(),
                ],
                &f,
                &spdx,
                &cdx,
            ),
            "push with SBOMs",
        )
    };
    let out = push("1.0");
    let stderr = clients::stderr_text(&out);
    assert!(
        stderr.contains("referrers tag sha256-"),
        "the fallback is reported: {stderr}"
    );

    // From the image digest alone.
    let repo = format!("docker://{}/sbom/app", registry.host());
    let digest = manifest_digest(&format!("{repo}:1.0"));
    let find = || -> BTreeMap<String, Value> {
        let index: Value =
            serde_json::from_slice(&raw(&format!("{repo}:sha256-{digest}"))).unwrap();
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let d = m["digest"].as_str().unwrap();
                let manifest: Value = serde_json::from_slice(&raw(&format!("{repo}@{d}"))).unwrap();
                assert_eq!(m["artifactType"], manifest["artifactType"]);
                (m["artifactType"].as_str().unwrap().to_owned(), manifest)
            })
            .collect()
    };
    let found = find();
    assert_eq!(found.len(), 2, "{found:?}");
    for (kind, file) in [
        ("application/spdx+json", &spdx),
        ("application/vnd.cyclonedx+json", &cdx),
    ] {
        let artifact = &found[kind];
        assert_eq!(artifact["subject"]["digest"], format!("sha256:{digest}"));
        let blob = artifact["layers"][0]["digest"].as_str().unwrap();
        let fetched = run(Command::new("curl").args([
            "-sSf",
            &format!("http://{}/v2/sbom/app/blobs/{blob}", registry.host()),
        ]))
        .stdout;
        assert_eq!(fetched, fs::read(file).unwrap(), "{kind} bytes");
    }

    // The same image under another tag: its referrers stay listed once.
    push("latest");
    assert_eq!(find(), found);
}

#[test]
fn each_platform_of_a_multi_platform_layout_gets_its_sbom() {
    let f = Fixture::new();
    let amd = f.spec("amd64.json", json!({"architecture": "amd64"}));
    let arm = f.spec(
        "arm64.json",
        json!({"architecture": "arm64", "variant": "v8"}),
    );
    let layout = f.file("multi");
    ok(
        tool(&[
            amd.as_os_str(),
            arm.as_os_str(),
            "--format".as_ref(),
            "oci-dir".as_ref(),
            layout.as_os_str(),
            "--sbom".as_ref(),
            "cyclonedx".as_ref(),
        ]),
        "multi-platform layout with an SBOM",
    );
    let layout = Layout(layout);
    let listed = layout.index()["manifests"].as_array().unwrap().clone();
    let image_index = layout.json(listed[0]["digest"].as_str().unwrap());
    let mut platform_manifests: BTreeSet<String> = image_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(platform_manifests.len(), 2);
    let subjects: BTreeSet<String> = listed[1..]
        .iter()
        .map(|m| {
            assert_eq!(m["artifactType"], "application/vnd.cyclonedx+json");
            let artifact = layout.json(m["digest"].as_str().unwrap());
            artifact["subject"]["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(subjects, std::mem::take(&mut platform_manifests));
}

/// Runs the tool and expects one error line naming `needle`, status 1 and
/// none of the named outputs.
fn refused(args: &[&OsStr], needle: &str, outputs: &[&Path]) {
    let out = tool(args);
    let stderr = clients::stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("stream-layered-image: error: ") && lines[0].contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
    for p in outputs {
        assert!(!p.exists(), "{} was written", p.display());
    }
}

#[test]
fn bad_sbom_arguments_are_one_line_errors() {
    let f = Fixture::new();
    let spec = f.spec("spec.json", json!({}));
    let (image, sbom) = (f.file("image.tar"), f.file("sbom.json"));
    fs::write(f.file("bad-graph.json"), "{not json").unwrap();
    let path = |p: PathBuf| p.display().to_string();
    let (graph, missing, bad) = (
        path(f.graph()),
        path(f.file("no-such-graph.json")),
        path(f.file("bad-graph.json")),
    );
    let unwritable = path(f.file("no-such-dir/sbom.json"));
    let sbom_out = path(sbom.clone());
    // Arguments after `SPEC -o IMAGE`, and the message's words; neither
    // the image nor the SBOM may be written.
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--sbom-out", &sbom_out],
            "--sbom-out and --graph go with --sbom".into(),
        ),
        (
            vec!["--graph", &graph],
            "--sbom-out and --graph go with --sbom".into(),
        ),
        (
            vec!["--sbom", "spdx,spdx"],
            "--sbom spdx is given twice".into(),
        ),
        (
            vec!["--sbom", "spdx,cyclonedx", "--sbom-out", &sbom_out],
            "one FILE per --sbom format (2 formats, 1 files)".into(),
        ),
        (vec!["--sbom", "swid"], "--sbom \"swid\"".into()),
        (
            vec!["--sbom", "spdx"],
            "a docker-archive cannot hold an SBOM; add --sbom-out FILE".into(),
        ),
        (
            vec![
                "--sbom",
                "spdx",
                "--sbom-out",
                &sbom_out,
                "--graph",
                &missing,
            ],
            missing.clone(),
        ),
        (
            vec!["--sbom", "spdx", "--sbom-out", &sbom_out, "--graph", &bad],
            bad.clone(),
        ),
        // An --sbom-out that cannot be written fails before the image is.
        (
            vec!["--sbom", "spdx", "--sbom-out", &unwritable],
            unwritable.clone(),
        ),
    ];
    let spec = path(spec);
    let image_arg = path(image.clone());
    for (extra, needle) in &cases {
        let mut args: Vec<&OsStr> = vec![spec.as_ref(), "-o".as_ref(), image_arg.as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        refused(&args, needle, &[&image, &sbom]);
    }
    let several: Vec<&OsStr> = [
        &spec,
        &spec,
        "--format",
        "oci-archive",
        "-o",
        &image_arg,
        "--sbom",
        "spdx",
        "--sbom-out",
        &sbom_out,
    ]
    .iter()
    .map(|a| OsStr::new(*a))
    .collect();
    refused(&several, "--sbom-out: several specs", &[&image, &sbom]);
}

#[test]
fn a_referrers_tag_that_holds_no_index_is_a_clear_error() {
    if !require("sbom_bad_referrers_tag", &["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start();
    let f = Fixture::new();
    let spec = f.spec("spec.json", json!({}));
    let target = format!("{}/sbom/app:1.0", registry.host());
    let push = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec![
            spec.as_os_str(),
            "--insecure".as_ref(),
            "--push".as_ref(),
            target.as_ref(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        tool(&args)
    };
    ok(push(&[]), "push without SBOMs");
    // The fallback tag of the image's digest, taken by the image itself
    // (an image manifest, not an index of referrers).
    let repo = format!("docker://{}/sbom/app", registry.host());
    let tag = format!("sha256-{}", manifest_digest(&format!("{repo}:1.0")));
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("{repo}:1.0"),
        &format!("{repo}:{tag}"),
    ]));
    let before = raw(&format!("{repo}:{tag}"));

    let out = push(&["--sbom", "spdx"]);
    let stderr = clients::stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains(&format!(
            "the referrers tag {}/sbom/app:{tag} holds something other than an image index",
            registry.host()
        )),
        "{stderr}"
    );
    // What the tag held is left as it was.
    assert_eq!(raw(&format!("{repo}:{tag}")), before);
}
