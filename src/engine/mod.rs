//! Local container engines, for `--load`: the Docker Engine API over its
//! Unix socket ([`Docker`]), through the small client in [`http`].
//!
//! A docker-archive names each layer's diff ID, and moby's `docker load`
//! looks a layer up in its layer store by chain ID (the layer with all the
//! layers under it) before it opens the layer's file; so an archive may
//! leave out the `layer.tar` of every layer whose chain the engine holds.
//! [`Docker::layer_chains`] asks which chains those are.

pub mod http;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use http::ChunkedWriter;

/// The socket of a Docker engine that `DOCKER_HOST` does not name.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A Docker engine, reached at a Unix socket.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    /// The engine `DOCKER_HOST` names (`unix:///path`), or the one at
    /// [`DEFAULT_SOCKET`] when it is unset or empty. Other schemes (`tcp://`,
    /// `ssh://`, ...) are refused: the calls are plain HTTP on a local
    /// socket.
    pub fn from_env() -> Result<Docker> {
        Docker::from_host(std::env::var_os("DOCKER_HOST").as_deref())
    }

    /// The engine `host` names, in `DOCKER_HOST`'s syntax.
    pub fn from_host(host: Option<&OsStr>) -> Result<Docker> {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return Ok(Docker::at(DEFAULT_SOCKET));
        };
        let refuse = |problem: &str| Error::Engine {
            engine: "docker",
            call: format!("DOCKER_HOST={host:?}"),
            problem: problem.to_owned(),
        };
        let text = host.to_str().ok_or_else(|| refuse("not UTF-8"))?;
        match text.split_once("://") {
            Some(("unix", path)) if path.starts_with('/') => Ok(Docker::at(path)),
            Some(("unix", _)) => Err(refuse("expected unix:///absolute/path/to/socket")),
            Some((scheme, _)) => Err(refuse(&format!(
                "{scheme}:// is not supported; --load talks to a local engine at a unix:// socket"
            ))),
            None => Err(refuse("expected unix:///path/to/socket")),
        }
    }

    /// The engine at the socket `path`.
    pub fn at(path: impl Into<PathBuf>) -> Docker {
        Docker {
            socket: path.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// An error of the call `call` (`GET /info`), naming the socket.
    fn error(&self, call: &str, problem: impl std::fmt::Display) -> Error {
        Error::Engine {
            engine: "docker",
            call: format!("{call} on {}", self.socket.display()),
            problem: problem.to_string(),
        }
    }

    fn connect_error(&self, call: &str, e: io::Error) -> Error {
        let hint = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                "; is the Docker engine running? (DOCKER_HOST=unix:///path names another socket)"
            }
            io::ErrorKind::PermissionDenied => {
                "; the socket needs root or membership of its group (usually docker)"
            }
            _ => "",
        };
        self.error(call, format!("{e}{hint}"))
    }

    /// `GET target`, its JSON answer; an engine's error status is an error
    /// with the engine's message.
    fn get_json(&self, target: &str) -> Result<Value> {
        let call = format!("GET {target}");
        let response = http::get(&self.socket, target).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::PermissionDenied => self.connect_error(&call, e),
            _ => self.error(&call, e),
        })?;
        if !(200..300).contains(&response.status) {
            return Err(self.error(&call, status_problem(&response)));
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| self.error(&call, format!("the answer is not JSON: {e}")))
    }

    /// Whether the engine keeps images in containerd's image store (Docker
    /// 25+ with the containerd snapshotter), which loads only whole
    /// archives: `GET /info` shows a `driver-type` of
    /// `io.containerd.snapshotter.v1` in its `DriverStatus`.
    pub fn containerd_store(&self) -> Result<bool> {
        Ok(containerd_store(&self.get_json("/info")?))
    }

    /// The chain IDs (`sha256:...`) of every layer of every image the
    /// engine holds: each prefix of each image's `RootFS.Layers`.
    pub fn layer_chains(&self) -> Result<HashSet<String>> {
        let images = self.get_json("/images/json")?;
        let images = images
            .as_array()
            .ok_or_else(|| self.error("GET /images/json", "the answer is not a list"))?;
        let mut chains = HashSet::new();
        for image in images {
            let Some(id) = image["Id"].as_str() else {
                continue;
            };
            let target = format!("/images/{id}/json");
            let info = match self.get_json(&target) {
                Ok(info) => info,
                // Deleted since the list was made: it holds nothing now.
                Err(Error::Engine { problem, .. }) if problem.starts_with("404 ") => continue,
                Err(e) => return Err(e),
            };
            let layers: Vec<&str> = info["RootFS"]["Layers"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            chains.extend(chain_ids(&layers));
        }
        Ok(chains)
    }

    /// Starts `POST /images/load` with a chunked body: write the archive
    /// into the [`Upload`], then [`Upload::finish`].
    pub fn start_load(&self) -> Result<Upload> {
        let call = "POST /images/load";
        let mut stream = http::connect(&self.socket).map_err(|e| self.connect_error(call, e))?;
        stream
            .write_all(http::request_head("POST", "/images/load?quiet=1", Some(None)).as_bytes())
            .map_err(|e| self.error(call, e))?;
        Ok(Upload {
            docker: self.clone(),
            body: Some(ChunkedWriter::new(stream)),
        })
    }
}

/// The body of a `POST /images/load` under way.
pub struct Upload {
    docker: Docker,
    body: Option<ChunkedWriter<UnixStream>>,
}

/// What the engine said of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// It loaded the image; its messages (`Loaded image: app:1`).
    Image(Vec<String>),
    /// It refused the archive, with this message.
    Refused(String),
}

impl Upload {
    /// Ends the body and reads the engine's answer. An engine that fails
    /// after it has begun to answer says so in the answer's stream (with
    /// status 200), which comes back as [`Loaded::Refused`].
    pub fn finish(mut self) -> Result<Loaded> {
        let call = "POST /images/load";
        let body = self.body.take().expect("finished once");
        let stream = match body.finish() {
            Ok(stream) => stream,
            Err(e) => return Err(self.failed(e)),
        };
        let response = http::read_response(&mut BufReader::new(stream))
            .map_err(|e| self.docker.error(call, e))?;
        if !(200..300).contains(&response.status) {
            return Ok(Loaded::Refused(status_problem(&response)));
        }
        Ok(load_messages(&response.body))
    }

    /// The error for a write that failed with `e`: the engine's own answer
    /// when it closed the connection with one (it refused the request
    /// early), else `e`.
    pub fn failed(&mut self, e: io::Error) -> Error {
        let call = "POST /images/load";
        let answer = self.body.take().and_then(|body| {
            let stream = body.into_stream();
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            http::read_response(&mut BufReader::new(stream)).ok()
        });
        match answer {
            Some(r) if !(200..300).contains(&r.status) => {
                self.docker.error(call, status_problem(&r))
            }
            Some(r) => match load_messages(&r.body) {
                Loaded::Refused(message) => self.docker.error(call, message),
                Loaded::Image(_) => self.docker.error(call, e),
            },
            None => self.docker.error(call, e),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.body {
            Some(body) => body.write(data),
            None => Err(io::Error::other("the upload has ended")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.body {
            Some(body) => body.flush(),
            None => Ok(()),
        }
    }
}

/// The messages of a load's answer: a stream of JSON objects, each a
/// `{"stream": text}` or an `{"error": text, "errorDetail": {...}}`.
pub fn load_messages(body: &[u8]) -> Loaded {
    let mut said = Vec::new();
    for value in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let Ok(value) = value else {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            return Loaded::Refused(format!("an answer that is not JSON: {text:?}"));
        };
        if let Some(error) = value["errorDetail"]["message"]
            .as_str()
            .or(value["error"].as_str())
        {
            return Loaded::Refused(error.trim().to_owned());
        }
        if let Some(text) = value["stream"].as_str() {
            said.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        }
    }
    Loaded::Image(said)
}

/// An error status as one line: `404 Not Found: No such image: x`.
fn status_problem(response: &http::Response) -> String {
    let message = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&response.body).trim().to_owned());
    let head = format!("{} {}", response.status, response.reason);
    if message.is_empty() {
        head
    } else {
        format!("{head}: {}", message.replace(['\r', '\n'], " "))
    }
}

/// Whether `/info`'s answer shows the containerd image store.
pub fn containerd_store(info: &Value) -> bool {
    info["DriverStatus"].as_array().is_some_and(|pairs| {
        pairs.iter().any(|pair| {
            pair[0].as_str() == Some("driver-type")
                && pair[1]
                    .as_str()
                    .is_some_and(|t| t.starts_with("io.containerd.snapshotter"))
        })
    })
}

/// The chain ID of each prefix of `diff_ids` (`sha256:...` each): the
/// first layer's is its diff ID, each next one the sha256 of `"PARENT
/// DIFF_ID"`, as the OCI image spec and moby define it.
pub fn chain_ids<S: AsRef<str>>(diff_ids: &[S]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chains.last() {
            None => diff_id.as_ref().to_owned(),
            Some(parent) => next_chain(parent, diff_id.as_ref()),
        };
        chains.push(next);
    }
    chains
}

/// The chain ID of `diff_id` on top of the chain `parent`.
pub fn next_chain(parent: &str, diff_id: &str) -> String {
    format!(
        "sha256:{}",
        Sha256Digest::of(format!("{parent} {diff_id}").as_bytes()).hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        let socket = |h: Option<&str>| Docker::from_host(h.map(OsStr::new)).map(|d| d.socket);
        assert_eq!(socket(None).unwrap(), Path::new(DEFAULT_SOCKET));
        assert_eq!(socket(Some("")).unwrap(), Path::new(DEFAULT_SOCKET));
        assert_eq!(
            socket(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            Path::new("/run/user/1000/docker.sock")
        );
        for (host, says) in [
            ("tcp://127.0.0.1:2375", "tcp:// is not supported"),
            ("ssh://me@host", "ssh:// is not supported"),
            ("unix://relative.sock", "expected unix:///absolute"),
            ("/var/run/docker.sock", "expected unix:///path"),
        ] {
            let e = socket(Some(host)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--load docker: DOCKER_HOST=\"{host}\": ")),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[&a, &b]);
        assert_eq!(chains[0], a);
        let expected = Sha256Digest::of(format!("{a} {b}").as_bytes()).hex();
        assert_eq!(chains[1], format!("sha256:{expected}"));
        assert_eq!(next_chain(&chains[0], &b), chains[1]);
        assert!(chain_ids::<&str>(&[]).is_empty());
    }

    #[test]
    fn containerd_store_from_info() {
        let info = |status: Value| serde_json::json!({ "DriverStatus": status });
        assert!(containerd_store(&info(serde_json::json!([[
            "driver-type",
            "io.containerd.snapshotter.v1"
        ]]))));
        assert!(!containerd_store(&info(serde_json::json!([
            ["Backing Filesystem", "extfs"],
            ["Supports d_type", "true"]
        ]))));
        assert!(!containerd_store(&info(Value::Null)));
    }

    /// An engine that answers before it has read the body, and closes:
    /// the write fails, and the error is the engine's answer.
    #[test]
    fn an_early_refusal_is_the_engines_message() {
        use std::io::Read;
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).unwrap();
            let body = r#"{"message":"not a tarball"}"#;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
        });
        let mut upload = Docker::at(&path).start_load().unwrap();
        server.join().unwrap();
        let chunk = vec![0u8; 1 << 20];
        let e = loop {
            if let Err(e) = upload.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(
            upload.failed(e).to_string(),
            format!(
                "--load docker: POST /images/load on {}: 400 Bad Request: not a tarball",
                path.display()
            )
        );
    }

    #[test]
    fn load_answers() {
        assert_eq!(
            load_messages(b"{\"stream\":\"Loaded image: app:1\\n\"}\r\n"),
            Loaded::Image(vec!["Loaded image: app:1".into()])
        );
        assert_eq!(
            load_messages(
                b"{\"errorDetail\":{\"message\":\"open /x/layer.tar: no such file or directory\"},\"error\":\"open /x/layer.tar: no such file or directory\"}\n"
            ),
            Loaded::Refused("open /x/layer.tar: no such file or directory".into())
        );
        assert!(matches!(load_messages(b"<html>"), Loaded::Refused(m) if m.contains("not JSON")));
    }
}
