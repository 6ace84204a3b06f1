//! No raw input bytes in messages: whatever a base image, a spec, a store
//! path or a registry sends, stderr gets no control character (but the
//! newlines that end lines) and no byte that is not UTF-8.
//!
//! The hostile registry here is a few lines of TCP on loopback that answer
//! every request with what a broken or malicious server might send.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const TOOL: &str = env!("CARGO_BIN_EXE_stream-layered-image");

/// What a terminal must never be sent.
const HOSTILE: &[u8] = b"\x1b]0;pwned\x07\x1b[2J\x9b31m\xff\xfe\r\x08";

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(TOOL)
        .args(args)
        .stdin(Stdio::null())
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// stderr is UTF-8, its only control characters end lines, and it is
/// not empty.
fn assert_clean(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
    let text = String::from_utf8(out.stderr.clone())
        .unwrap_or_else(|_| panic!("{what}: stderr is not UTF-8: {:?}", out.stderr));
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: a control character reached stderr: {text:?}"
    );
    assert!(text.contains("error:"), "{what}: {text}");
    text
}

fn spec(dir: &Path, extra: &str, layers: &str) -> std::path::PathBuf {
    let p = dir.join("spec.json");
    fs::write(
        &p,
        format!(
            r#"{{"architecture": "amd64", "config": {{}}, "created": "1970-01-01T00:00:01Z",
               "store_dir": {store:?}, "store_layers": {layers}, "repo_tag": "m:1"{extra}}}"#,
            store = dir.join("store").display().to_string()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_base_image_of_hostile_bytes() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("store")).unwrap();
    // Random-looking bytes with escape sequences where tar's header fields
    // are, which the tar reader quotes when it rejects them.
    let mut bytes = Vec::new();
    while bytes.len() < 4096 {
        bytes.extend_from_slice(HOSTILE);
        bytes.extend((0..97u8).map(|i| i.wrapping_mul(37)));
    }
    let base = dir.path().join("base.tar");
    fs::write(&base, &bytes).unwrap();
    let spec = spec(
        dir.path(),
        &format!(r#", "from_image": {:?}"#, base.display().to_string()),
        "[]",
    );
    let text = assert_clean(&run(&[spec.as_os_str()]), "random base image");
    assert!(text.contains("base image"), "{text}");
}

#[test]
fn a_base_image_whose_names_and_json_hold_escapes() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("store")).unwrap();
    // A docker-archive whose manifest names a config member holding
    // escapes, and a config that is not JSON because of them.
    let name = "cfg\u{1b}[31m.json";
    let manifest = format!(
        r#"[{{"Config": "{}", "Layers": []}}]"#,
        name.replace('\u{1b}', "\\u001b")
    );
    let mut ar = tar::Builder::new(Vec::new());
    for (member, data) in [
        ("manifest.json", manifest.as_bytes().to_vec()),
        (name, HOSTILE.to_vec()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, member, &data[..]).unwrap();
    }
    let base = dir.path().join("base.tar");
    fs::write(&base, ar.into_inner().unwrap()).unwrap();
    let spec = spec(
        dir.path(),
        &format!(r#", "from_image": {:?}"#, base.display().to_string()),
        "[]",
    );
    let text = assert_clean(&run(&[spec.as_os_str()]), "hostile config");
    assert!(text.contains("is not valid JSON"), "{text}");
}

#[test]
fn store_paths_with_escapes_in_errors_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let hostile = store.join("aaaa-\u{1b}[31mred\u{7}");
    fs::create_dir_all(&hostile).unwrap();
    fs::write(hostile.join("f"), b"x").unwrap();
    let layers = serde_json::json!([[hostile]]).to_string();
    let spec = spec(dir.path(), "", &layers);
    // Progress lines name the path while it succeeds...
    let ok = run(&[
        spec.as_os_str(),
        "-o".as_ref(),
        dir.path().join("o.tar").as_os_str(),
    ]);
    assert!(ok.status.success(), "{ok:?}");
    let progress = String::from_utf8(ok.stderr).unwrap();
    assert!(progress.contains("aaaa-\\x1b[31mred\\x07"), "{progress}");
    assert!(
        !progress.chars().any(|c| c.is_control() && c != '\n'),
        "{progress:?}"
    );
    // ...and the error names it when it is gone.
    fs::remove_dir_all(&hostile).unwrap();
    assert_clean(&run(&[spec.as_os_str()]), "missing hostile store path");
}

#[test]
fn arguments_with_escapes() {
    let text = assert_clean(&run(&["--\u{1b}[31mx".as_ref()]), "hostile flag");
    assert!(text.contains("unknown option"), "{text}");
    let text = assert_clean(
        &run(&[
            "spec.json".as_ref(),
            "--format".as_ref(),
            "\u{9b}2J".as_ref(),
        ]),
        "hostile format",
    );
    assert!(text.contains("--format"), "{text}");
}

/// A server on loopback that answers every request with `response`, but a
/// `HEAD` (which has no body to show) with "not found", so that the push
/// goes on to a request whose answer is read.
fn hostile_registry(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            if buf[..n].starts_with(b"HEAD ") {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            } else {
                let _ = stream.write_all(&response);
            }
        }
    });
    host
}

fn push_to(host: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fs::create_dir_all(store.join("aaaa-app")).unwrap();
    fs::write(store.join("aaaa-app/f"), b"x").unwrap();
    let spec = spec(
        dir.path(),
        "",
        &format!("[[{:?}]]", store.join("aaaa-app").display().to_string()),
    );
    run(&[
        spec.as_os_str(),
        "--insecure".as_ref(),
        "--push".as_ref(),
        format!("{host}/app:1").as_ref(),
    ])
}

#[test]
fn a_registry_error_body_with_escapes() {
    let mut response =
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            .to_vec();
    response.extend_from_slice(HOSTILE);
    response.extend_from_slice(b" denied ");
    response.extend_from_slice(HOSTILE);
    let text = assert_clean(&push_to(&hostile_registry(response)), "hostile body");
    assert!(text.contains("pushing to"), "{text}");
    assert!(text.contains("denied"), "{text}");
}

#[test]
fn a_registry_json_error_with_escapes() {
    let body = r#"{"errors":[{"code":"DENIED\u001b[2J","message":"no \u009b31m way\u0007"}]}"#;
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let text = assert_clean(
        &push_to(&hostile_registry(response.into_bytes())),
        "hostile JSON",
    );
    assert!(text.contains("DENIED"), "{text}");
}

#[test]
fn a_registry_challenge_header_with_escapes() {
    let mut response = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/\x1b]0;x\x07\",service=\"\x9b\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    response.shrink_to_fit();
    let text = assert_clean(&push_to(&hostile_registry(response)), "hostile challenge");
    assert!(text.contains("pushing to"), "{text}");
}
