//! Multi-platform images: several specs, one OCI image index naming each
//! spec's image with its platform, in an OCI layout and in a real registry;
//! read back by skopeo, umoci and docker. Layers the images share are
//! stored and uploaded once.
//!
//! A test whose client is missing prints why and passes; with `CI=true` it
//! fails instead.

#[path = "common/clients.rs"]
mod clients;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clients::{require, require_docker, run, run_json, Registry};
use serde_json::Value;

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// Two specs over one store: a shared data layer and a per-platform app.
fn specs(dir: &Path) -> (PathBuf, PathBuf) {
    let store = dir.join("store");
    let data = store.join("dddd-data");
    fs::create_dir_all(&data).unwrap();
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i * 131 % 241) as u8).collect();
    fs::write(data.join("data.bin"), bytes).unwrap();
    let write = |arch: &str, variant: Option<&str>| {
        let app = store.join(format!("aaaa-app-{arch}"));
        fs::create_dir_all(&app).unwrap();
        fs::write(app.join("arch"), format!("built for {arch}\n")).unwrap();
        let mut spec = serde_json::json!({
            "architecture": arch, "config": {"Env": [format!("ARCH={arch}")]},
            "created": "1970-01-01T00:00:01Z", "store_dir": store,
            "store_layers": [[data], [app]], "repo_tag": "multi:1",
        });
        if let Some(v) = variant {
            spec["variant"] = v.into();
        }
        let path = dir.join(format!("{arch}.json"));
        fs::write(&path, spec.to_string()).unwrap();
        path
    };
    (write("amd64", None), write("arm64", Some("v8")))
}

fn tool(args: &[&std::ffi::OsStr]) -> Output {
    clients::output_without_credentials(TOOL, args)
}

fn stderr(out: &Output) -> String {
    clients::stderr_text(out)
}

/// The platforms an index names, as `os/arch[/variant]`.
fn platforms(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect()
}

#[test]
fn oci_archive_holds_an_index_of_both_platforms() {
    if !require("multi_oci_archive", &["skopeo", "umoci"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (amd, arm) = specs(dir.path());
    let archive = dir.path().join("multi.tar");
    let out = tool(&[
        amd.as_os_str(),
        arm.as_os_str(),
        "--format".as_ref(),
        "oci-archive".as_ref(),
        "--compress".as_ref(),
        "gzip".as_ref(),
        "-o".as_ref(),
        archive.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = format!("oci-archive:{}:1", archive.display());
    let index = run_json("skopeo", ["inspect", "--raw", &reference]);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64/v8"]);
    // The shared data layer is stored once: 3 layer blobs (data, two
    // apps), 2 configs, 2 manifests, 1 index.
    let listing = run(Command::new("tar").arg("tf").arg(&archive));
    let blobs = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| l.starts_with("blobs/sha256/") && l.len() > "blobs/sha256/".len())
        .count();
    assert_eq!(blobs, 8);
    // skopeo copies every image, and umoci unpacks each platform's.
    let all = dir.path().join("all");
    run(Command::new("skopeo")
        .args(["copy", "--all", &reference])
        .arg(format!("oci:{}:1", all.display())));
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let single = dir.path().join(format!("single-{arch}"));
        let mut copy = Command::new("skopeo");
        copy.args(["--override-os", "linux", "--override-arch", arch]);
        if let Some(v) = variant {
            copy.args(["--override-variant", v]);
        }
        run(copy
            .args(["copy", &format!("oci:{}:1", all.display())])
            .arg(format!("oci:{}:{arch}", single.display())));
        let bundle = dir.path().join(format!("bundle-{arch}"));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{arch}", single.display()))
            .arg(&bundle));
        let store = dir.path().join("store");
        let rootfs_app = bundle
            .join("rootfs")
            .join(store.strip_prefix("/").unwrap())
            .join(format!("aaaa-app-{arch}/arch"));
        assert_eq!(
            fs::read_to_string(rootfs_app).unwrap(),
            format!("built for {arch}\n")
        );
        let config = run_json(
            "skopeo",
            [
                "inspect",
                "--config",
                &format!("oci:{}:{arch}", single.display()),
            ],
        );
        assert_eq!(config["architecture"], arch);
    }
}

#[test]
fn push_puts_an_index_that_skopeo_and_docker_read() {
    if !require("multi_push", &["docker-registry", "skopeo"]) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (amd, arm) = specs(dir.path());
    let target = format!("{}/multi/app:1", registry.host());
    let out = tool(&[
        amd.as_os_str(),
        arm.as_os_str(),
        "--insecure".as_ref(),
        "--compress".as_ref(),
        "gzip".as_ref(),
        "--push".as_ref(),
        target.as_ref(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // The data layer went up once; the second image found it there.
    assert!(err.contains("pushed index sha256:"), "{err}");
    assert_eq!(err.matches("layer 1/2: uploaded").count(), 1, "{err}");
    assert_eq!(
        err.matches("layer 1/2: the registry has").count(),
        1,
        "{err}"
    );
    let reference = format!("docker://{target}");
    let index = run_json(
        "skopeo",
        ["inspect", "--tls-verify=false", "--raw", &reference],
    );
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64/v8"]);
    let copy = dir.path().join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false", &reference])
        .arg(format!("oci:{}:1", copy.display())));
    for arch in ["amd64", "arm64"] {
        let config = run_json(
            "skopeo",
            [
                "--override-arch",
                arch,
                "inspect",
                "--tls-verify=false",
                "--config",
                &reference,
            ],
        );
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["config"]["Env"][0], format!("ARCH={arch}"));
    }
    if !require_docker("multi_push_docker_pull") {
        return;
    }
    let _cleanup = clients::LoadedImage {
        client: "docker",
        reference: target.clone(),
    };
    run(Command::new("docker").args(["pull", "-q", "--platform", "linux/arm64", &target]));
    let inspect = run(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}} {{.Os}}",
        &target,
    ]));
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "arm64 linux"
    );
}

#[test]
fn bad_multi_platform_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (amd, arm) = specs(dir.path());
    let one_line = |out: &Output, needle: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    };
    // A docker-archive holds one image.
    one_line(
        &tool(&[amd.as_os_str(), arm.as_os_str()]),
        "which a docker-archive cannot hold",
    );
    one_line(
        &tool(&[
            amd.as_os_str(),
            arm.as_os_str(),
            "--format".as_ref(),
            "docker+oci".as_ref(),
        ]),
        "which a docker+oci archive cannot hold",
    );
    // Two specs of one platform; the message names both.
    let twin = dir.path().join("twin.json");
    fs::copy(&amd, &twin).unwrap();
    let out = tool(&[
        amd.as_os_str(),
        twin.as_os_str(),
        "--format".as_ref(),
        "oci-dir".as_ref(),
        dir.path().join("d").as_os_str(),
    ]);
    one_line(&out, "platform linux/amd64 is also that of");
    assert!(stderr(&out).contains("twin.json"), "{}", stderr(&out));
    // A spec whose architecture is not a string.
    let text = fs::read_to_string(&arm)
        .unwrap()
        .replace("\"arm64\"", "null");
    let bad = dir.path().join("noarch.json");
    fs::write(&bad, text).unwrap();
    let out = tool(&[
        amd.as_os_str(),
        bad.as_os_str(),
        "--format".as_ref(),
        "oci-archive".as_ref(),
        "-o".as_ref(),
        dir.path().join("x.tar").as_os_str(),
    ]);
    one_line(&out, "key \"architecture\": a multi-platform image needs");
    assert!(stderr(&out).contains("noarch.json"), "{}", stderr(&out));
    assert!(!dir.path().join("x.tar").exists());
    // A variant that is not a string.
    let text = fs::read_to_string(&arm).unwrap().replace("\"v8\"", "8");
    fs::write(&bad, text).unwrap();
    one_line(
        &tool(&[
            amd.as_os_str(),
            bad.as_os_str(),
            "--format".as_ref(),
            "oci-archive".as_ref(),
        ]),
        "key \"variant\"",
    );
}
