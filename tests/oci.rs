//! The OCI formats (`--format oci-archive|oci-dir|docker+oci`) and layer
//! compression (`--compress gzip|zstd`), checked by reading the layout
//! directly and with the real clients: skopeo, umoci, docker and podman.
//!
//! The image comes from a small scratch store in a temporary directory
//! ending in `/store`. A test whose client is missing prints why and passes;
//! with `CI=true` it fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clients::{require, require_docker, run, run_json, run_text, Archive, LoadedImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// A temporary store with a few store paths, and a spec of two layers.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let hello = store.join("aaaa-hello");
        fs::create_dir_all(hello.join("bin")).unwrap();
        fs::create_dir_all(hello.join("share/empty")).unwrap();
        // Compressible and incompressible contents, several MiB in all.
        let mut noise = Vec::with_capacity(3 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while noise.len() < 3 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        fs::write(hello.join("bin/hello"), &noise).unwrap();
        fs::set_permissions(hello.join("bin/hello"), fs::Permissions::from_mode(0o555)).unwrap();
        let lib = store.join("bbbb-lib");
        fs::create_dir_all(&lib).unwrap();
        let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        fs::write(lib.join("data.txt"), text).unwrap();
        fs::write(lib.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("../bbbb-lib/data.txt", hello.join("link")).unwrap();
        let spec = format!(
            r#"{{"architecture": "amd64", "config": {{"Cmd": ["/bin/sh"]}},
                "created": "1970-01-01T00:00:01Z", "store_dir": {store:?},
                "store_layers": [[{hello:?}], [{lib:?}]], "repo_tag": "oci-test:1"}}"#,
            store = store.display().to_string(),
            hello = hello.display().to_string(),
            lib = lib.display().to_string(),
        );
        fs::write(dir.path().join("spec.json"), spec).unwrap();
        Store { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn spec(&self) -> PathBuf {
        self.dir.path().join("spec.json")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the tool on the spec with `args` (and `threads` rayon threads,
    /// if given) and returns the output file.
    fn build(&self, name: &str, args: &[&str], threads: Option<usize>) -> PathBuf {
        let out = self.path(name);
        let mut cmd = Command::new(TOOL);
        cmd.arg(self.spec())
            .arg("-q")
            .args(args)
            .arg("-o")
            .arg(&out);
        if let Some(n) = threads {
            cmd.env("RAYON_NUM_THREADS", n.to_string());
        }
        run(&mut cmd);
        out
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unpack(archive: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into));
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn decompress(media_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" => out.extend_from_slice(bytes),
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .unwrap();
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => {
            out = zstd::stream::decode_all(bytes).unwrap();
        }
        other => panic!("unexpected layer media type {other}"),
    }
    out
}

/// Checks a layout: every blob matches its name, the index names the tag,
/// every layer has the expected media type and decompresses to its diff_id,
/// and the config is the docker-archive's. Returns the manifest.
fn check_layout(layout: &Path, media_type: &str, docker: &Archive) -> Value {
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            entry.file_name().to_string_lossy(),
            "a blob does not match its name"
        );
    }
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let descriptor = &index["manifests"][0];
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    let manifest_bytes = read_blob(layout, descriptor["digest"].as_str().unwrap());
    assert_eq!(descriptor["size"], manifest_bytes.len());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = read_blob(layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config, docker.config_bytes,
        "the config differs from the docker-archive's"
    );
    let diff_ids = docker.diff_ids();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        assert_eq!(layer["mediaType"], media_type);
        let blob = read_blob(layout, layer["digest"].as_str().unwrap());
        assert_eq!(layer["size"], blob.len());
        let plain = decompress(media_type, &blob);
        assert_eq!(&format!("sha256:{}", sha256_hex(&plain)), diff_id);
    }
    manifest
}

fn check_compressed_archive(compress: &str, media_type: &str) {
    let s = Store::new();
    let docker = Archive::read(&s.build("docker.tar", &[], None));
    let args = ["--format", "oci-archive", "--compress", compress];
    let archive = s.build("oci.tar", &args, None);
    // The thread count sizes both the hashing pool and the compression
    // pool (the 3 MiB layer is compressed in several chunks).
    for threads in [1, 7] {
        let other = s.build(&format!("oci-{threads}.tar"), &args, Some(threads));
        assert!(
            fs::read(&archive).unwrap() == fs::read(&other).unwrap(),
            "{threads} threads and the default pool wrote different bytes"
        );
    }
    let layout = s.path("layout");
    unpack(&archive, &layout);
    let manifest = check_layout(&layout, media_type, &docker);

    // oci-dir writes the same layout.
    let dir = s.path("dir");
    run(Command::new(TOOL)
        .arg(s.spec())
        .args(["-q", "--format", "oci-dir"])
        .arg(&dir)
        .args(["--compress", compress]));
    let listing = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(p.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v.push(("index.json".into(), fs::read(p.join("index.json")).unwrap()));
        v
    };
    assert!(
        listing(&layout) == listing(&dir),
        "oci-dir differs from oci-archive"
    );

    if require("oci_archive", &["skopeo"]) {
        let inspect = run_json(
            "skopeo",
            [
                "inspect".to_string(),
                format!("oci-archive:{}", archive.display()),
            ],
        );
        let expected: Vec<Value> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].clone())
            .collect();
        assert_eq!(inspect["Layers"], Value::Array(expected));
    }
    if compress.starts_with("gzip") && require("oci_archive_umoci", &["umoci"]) {
        let bundle = s.path("bundle");
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle));
        let store = s.store();
        let unpacked = bundle.join("rootfs").join(store.strip_prefix("/").unwrap());
        run(Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(&store)
            .arg(&unpacked));
    }
}

#[test]
fn oci_archive_with_gzip() {
    check_compressed_archive("gzip", "application/vnd.oci.image.layer.v1.tar+gzip");
}

#[test]
fn oci_archive_with_zstd() {
    check_compressed_archive("zstd:9", "application/vnd.oci.image.layer.v1.tar+zstd");
}

#[test]
fn oci_archive_uncompressed_layers_are_the_docker_layers() {
    let s = Store::new();
    let docker = Archive::read(&s.build("docker.tar", &[], None));
    let archive = s.build("oci.tar", &["--format", "oci-archive"], None);
    let layout = s.path("layout");
    unpack(&archive, &layout);
    let manifest = check_layout(&layout, "application/vnd.oci.image.layer.v1.tar", &docker);
    let digests: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(digests, docker.diff_ids());
}

#[test]
fn compress_is_refused_for_docker_archive() {
    let s = Store::new();
    let out = Command::new(TOOL)
        .arg(s.spec())
        .args(["-q", "--compress", "gzip", "-o"])
        .arg(s.path("x.tar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--compress"));
}

/// docker+oci with gzip'd layers: docker load and podman load both read it,
/// and skopeo reads it as an oci-archive.
#[test]
fn docker_plus_oci_loads_everywhere() {
    let s = Store::new();
    let docker = Archive::read(&s.build("docker.tar", &[], None));
    let tag = format!("{}:1", clients::unique_name("docker-oci"));
    let archive = s.build(
        "both.tar",
        &["--format", "docker+oci", "--compress", "gzip", "-t", &tag],
        None,
    );
    let layout = s.path("layout");
    unpack(&archive, &layout);
    let both: Value =
        serde_json::from_slice(&fs::read(layout.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(both[0]["RepoTags"][0], tag.as_str());
    let config_path = both[0]["Config"].as_str().unwrap();
    assert_eq!(
        fs::read(layout.join(config_path)).unwrap(),
        docker.config_bytes
    );
    for layer in clients::strings(&both[0]["Layers"]) {
        assert!(layout.join(layer).is_file());
    }
    check_layout(
        &layout,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &docker,
    );
    let image_id = format!("sha256:{}", sha256_hex(&docker.config_bytes));

    if require("docker_plus_oci_skopeo", &["skopeo"]) {
        run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", archive.display())));
    }
    if require("docker_plus_oci_podman", &["podman"]) {
        let _cleanup = LoadedImage {
            client: "podman",
            reference: format!("localhost/{tag}"),
        };
        run(Command::new("podman").arg("load").arg("-i").arg(&archive));
        let id = run_text("podman", ["image", "inspect", "--format", "{{.Id}}", &tag]);
        assert_eq!(format!("sha256:{}", id.trim()), image_id);
    }
    if require_docker("docker_plus_oci_docker") {
        let _cleanup = LoadedImage {
            client: "docker",
            reference: tag.clone(),
        };
        run(Command::new("docker").arg("load").arg("-i").arg(&archive));
        let inspect = run_json("docker", ["image", "inspect", &tag]);
        let layers = clients::strings(&inspect[0]["RootFS"]["Layers"]);
        assert_eq!(layers, docker.diff_ids());
    }
}
