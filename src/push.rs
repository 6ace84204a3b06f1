//! Pushing straight to a registry over the OCI distribution API.
//!
//! Input: a target `[docker://]HOST[:PORT]/REPO[:TAG]`, optional
//! `USER:PASS` credentials, and the blobs [`crate::image`] streams in order
//! (layers, then the config) followed by the manifest. Each blob is first
//! checked with `HEAD` and skipped when the registry has it; otherwise it is
//! uploaded as it is produced, in chunks (`POST` to open an upload session,
//! one `PATCH` per chunk, the digest given at the final `PUT`), so nothing
//! is written to disk. The manifest goes up last, only after every blob was
//! accepted, so a failed push never leaves a tag pointing at missing blobs.
//!
//! Auth follows the registry's `WWW-Authenticate` challenge: `Basic` with
//! the credentials, or `Bearer` with a token fetched from the named realm
//! (with the credentials, if any, as basic auth). Requests that can be
//! repeated safely (`HEAD`, `POST`, the manifest `PUT`) are retried with
//! backoff on 5xx answers and dropped connections; a chunk that fails stops
//! the push with an error naming the registry.

use std::collections::HashSet;
use std::io::{self, Read};
use std::time::Duration;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Bytes sent per `PATCH`.
pub const CHUNK: usize = 16 << 20;
const ATTEMPTS: u32 = 4;

/// Where and how to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `HOST[:PORT]`.
    pub host: String,
    /// The repository, e.g. `library/app`.
    pub repo: String,
    /// The tag.
    pub tag: String,
    /// Plain HTTP instead of TLS.
    pub insecure: bool,
    /// `USER:PASS`, if given.
    pub creds: Option<(String, String)>,
}

impl Target {
    /// Parses `[docker://]HOST[:PORT]/REPO[:TAG]` (the tag defaults to
    /// `latest`).
    pub fn parse(text: &str, insecure: bool, creds: Option<&str>) -> Result<Target> {
        let bad = |problem: &str| Error::Usage(format!("--push {text:?}: {problem}"));
        let rest = text.strip_prefix("docker://").unwrap_or(text);
        let (host, name) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected HOST[:PORT]/REPO[:TAG]"))?;
        if host.is_empty() || name.is_empty() {
            return Err(bad("expected HOST[:PORT]/REPO[:TAG]"));
        }
        let (repo, tag) = crate::oci::split_tag(name);
        let valid_repo = repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
        if !valid_repo {
            return Err(bad("the repository must be lower-case path components"));
        }
        let creds = creds
            .map(|c| {
                c.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    .ok_or_else(|| Error::Usage("--creds must be USER:PASS".into()))
            })
            .transpose()?;
        Ok(Target {
            host: host.to_owned(),
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            insecure,
            creds,
        })
    }
}

/// A connection to one repository of a registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    target: Target,
    authorization: Option<String>,
    /// Blobs known to be missing (checked with `HEAD`).
    missing: HashSet<Sha256Digest>,
    /// Uploads started.
    pub uploads: usize,
}

fn failed(target: &Target, what: impl std::fmt::Display) -> Error {
    Error::Push {
        registry: target.host.clone(),
        problem: what.to_string(),
    }
}

impl Registry {
    /// Prepares to push to `target` (no request is made yet).
    pub fn new(target: Target) -> Registry {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(300))
            .redirects(5)
            .build();
        let scheme = if target.insecure { "http" } else { "https" };
        Registry {
            agent,
            base: format!("{scheme}://{}", target.host),
            target,
            authorization: None,
            missing: HashSet::new(),
            uploads: 0,
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// One request, answering an auth challenge once and retrying
    /// repeatable requests with backoff.
    fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        repeatable: bool,
    ) -> Result<ureq::Response> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            attempt += 1;
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = &self.authorization {
                req = req.set("Authorization", a);
            }
            let result = if method == "HEAD" || method == "GET" {
                req.call()
            } else {
                req.send_bytes(body)
            };
            let retry = match result {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_owned();
                    self.authorize(&challenge)?;
                    attempt -= 1;
                    continue;
                }
                Err(ureq::Error::Status(code, resp)) if code >= 500 => {
                    format!("{method} {url}: HTTP {code} {}", body_text(resp))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(failed(
                        &self.target,
                        format!("{method} {url}: HTTP {code} {}", body_text(resp)),
                    ))
                }
                Err(ureq::Error::Transport(t)) => format!("{method} {url}: {t}"),
            };
            if !repeatable || attempt >= ATTEMPTS {
                return Err(failed(&self.target, retry));
            }
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
    }

    /// Answers a `WWW-Authenticate` challenge.
    fn authorize(&mut self, challenge: &str) -> Result<()> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self
            .target
            .creds
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                self.authorization = Some(basic.ok_or_else(|| {
                    failed(&self.target, "the registry wants credentials; give --creds")
                })?);
                Ok(())
            }
            "bearer" => {
                let params = parse_params(params);
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.as_str())
                };
                let realm = get("realm")
                    .ok_or_else(|| failed(&self.target, "a Bearer challenge without a realm"))?;
                let scope = get("scope")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("repository:{}:pull,push", self.target.repo));
                let mut req = self.agent.get(realm).query("scope", &scope);
                if let Some(service) = get("service") {
                    req = req.query("service", service);
                }
                if let Some(b) = &basic {
                    req = req.set("Authorization", b);
                }
                let resp = req
                    .call()
                    .map_err(|e| failed(&self.target, format!("token from {realm}: {e}")))?;
                let json: serde_json::Value = serde_json::from_str(
                    &resp
                        .into_string()
                        .map_err(|e| failed(&self.target, format!("token from {realm}: {e}")))?,
                )
                .map_err(|e| failed(&self.target, format!("token from {realm}: {e}")))?;
                let token = json["token"]
                    .as_str()
                    .or(json["access_token"].as_str())
                    .ok_or_else(|| failed(&self.target, format!("no token from {realm}")))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(failed(
                &self.target,
                format!("unsupported auth challenge {challenge:?}"),
            )),
        }
    }

    /// Whether the registry has the blob (recorded, so that a missing blob
    /// is asked about once).
    pub fn has_blob(&mut self, digest: &Sha256Digest) -> Result<bool> {
        if self.missing.contains(digest) {
            return Ok(false);
        }
        let url = format!(
            "{}/v2/{}/blobs/sha256:{digest}",
            self.base, self.target.repo
        );
        // A 404 is an answer, not a failure.
        match self.send("HEAD", &url, &[], &[], true) {
            Ok(_) => Ok(true),
            Err(Error::Push { problem, .. }) if problem.contains("HTTP 404") => {
                self.missing.insert(*digest);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an upload session; returns its location.
    pub fn start_upload(&mut self) -> Result<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.target.repo);
        let resp = self.send("POST", &url, &[("Content-Length", "0")], &[], true)?;
        self.uploads += 1;
        location(&self.target, &resp)
    }

    /// Sends one chunk starting at `offset`; returns the next location.
    pub fn patch(&mut self, location_url: &str, offset: u64, chunk: &[u8]) -> Result<String> {
        let url = self.url(location_url);
        let range = format!("{offset}-{}", offset + chunk.len() as u64 - 1);
        let resp = self.send(
            "PATCH",
            &url,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            chunk,
            false,
        )?;
        location(&self.target, &resp)
    }

    /// Closes an upload session, naming the blob's digest.
    pub fn finish_upload(&mut self, location_url: &str, digest: &Sha256Digest) -> Result<()> {
        let mut url = self.url(location_url);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest=sha256:{digest}"));
        self.send(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            &[],
            false,
        )?;
        self.missing.remove(digest);
        Ok(())
    }

    /// Puts the manifest under the tag.
    pub fn put_manifest(&mut self, manifest: &[u8], media_type: &str) -> Result<()> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base, self.target.repo, self.target.tag
        );
        self.send("PUT", &url, &[("Content-Type", media_type)], manifest, true)?;
        Ok(())
    }
}

fn location(target: &Target, resp: &ureq::Response) -> Result<String> {
    resp.header("Location")
        .map(str::to_owned)
        .ok_or_else(|| failed(target, "an upload answer without a Location"))
}

fn body_text(resp: ureq::Response) -> String {
    let mut text = String::new();
    let _ = resp.into_reader().take(400).read_to_string(&mut text);
    text.trim().to_owned()
}

/// `key="value", key2=value2` pairs of a challenge.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_owned()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A blob being uploaded in chunks as it is written.
pub struct Upload {
    location: String,
    offset: u64,
    buf: Vec<u8>,
}

impl Upload {
    /// Starts uploading a blob.
    pub fn start(registry: &mut Registry) -> Result<Upload> {
        Ok(Upload {
            location: registry.start_upload()?,
            offset: 0,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    /// Adds bytes, sending a chunk whenever one is full.
    pub fn write(&mut self, registry: &mut Registry, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.send(registry).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, registry: &mut Registry) -> Result<()> {
        if !self.buf.is_empty() {
            self.location = registry.patch(&self.location, self.offset, &self.buf)?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is left and closes the upload.
    pub fn finish(mut self, registry: &mut Registry, digest: &Sha256Digest) -> Result<()> {
        self.send(registry)?;
        registry.finish_upload(&self.location, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("docker://localhost:5000/a/b:1", true, Some("u:p:q")).unwrap();
        assert_eq!(t.host, "localhost:5000");
        assert_eq!(t.repo, "a/b");
        assert_eq!(t.tag, "1");
        assert_eq!(t.creds, Some(("u".into(), "p:q".into())));
        assert_eq!(Target::parse("h/x", false, None).unwrap().tag, "latest");
        assert!(Target::parse("h", false, None).is_err());
        assert!(Target::parse("h/Upper", false, None).is_err());
    }

    #[test]
    fn parses_challenges() {
        let p =
            parse_params(r#"realm="http://a/token",service="reg", scope="repository:x:pull,push""#);
        assert_eq!(p[0], ("realm".into(), "http://a/token".into()));
        assert_eq!(p[1], ("service".into(), "reg".into()));
        assert_eq!(p[2], ("scope".into(), "repository:x:pull,push".into()));
    }

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
