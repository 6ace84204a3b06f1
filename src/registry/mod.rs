//! Pushing straight to a registry over the OCI distribution API.
//!
//! Input: a [`Target`] (`[docker://]HOST[:PORT]/REPO[:TAG]` and how to
//! reach it), each layer's diff_id and a way to produce its tar bytes again,
//! then the config and the manifest from [`crate::image`]. Output: blobs
//! and a tagged manifest in the registry.
//!
//! A blob whose digest is known beforehand (from the hashing pass, or from
//! the [`cache`]) is first checked with `HEAD` and skipped when the
//! registry has it, or mounted from another repository of the same
//! registry that the cache says holds it. Otherwise the layer is
//! compressed as it is produced and sent in chunks (`POST` opens an upload
//! session, one `PATCH` per chunk, the digest is given at the final `PUT`);
//! nothing is written to disk. The manifest goes up last, only once every
//! blob was accepted, so a failed push never leaves a tag pointing at
//! missing blobs.
//!
//! Auth answers the registry's `WWW-Authenticate` challenge: `Basic` with
//! the credentials, or `Bearer` with a token fetched from the named realm
//! (sending the credentials, if any, as basic auth). Credentials come from
//! `--creds` or the files and helpers [`auth`] knows. Requests are retried
//! with backoff on 5xx answers and dropped connections; a chunk whose
//! `PATCH` failed is resumed from the offset the registry reports.

pub mod auth;
pub mod cache;
mod tls;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;

use crate::compress::Compression;
use crate::digest::{HashingWriter, Sha256Digest};
use crate::error::{Error, Result};
use crate::image::oci::BlobRef;

/// Bytes sent per `PATCH`.
pub const CHUNK: usize = 16 << 20;

/// Pauses before the retries of a request: short, since the registry is
/// usually close, and about 3 s in all before giving up.
/// The most of a manifest read back (the referrers index under a fallback
/// tag); registries refuse manifests over 4 MiB.
const MAX_MANIFEST: u64 = 4 << 20;

const BACKOFF_MS: [u64; 4] = [200, 400, 800, 1600];

/// How often a blob whose upload session the registry lost is started
/// again from its first byte.
const BLOB_RESTARTS: usize = 2;

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
    /// `USER:PASS` from `--creds`; otherwise [`auth`] looks for them.
    pub creds: Option<(String, String)>,
    /// Extra CA roots (`*.crt`) and a client certificate (`*.cert` and
    /// `*.key`), like containers' `certs.d`.
    pub cert_dir: Option<PathBuf>,
    /// The layer cache (see [`cache`]).
    pub cache: Option<PathBuf>,
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
        let (repo, tag) = crate::image::oci::split_tag(name);
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
            cert_dir: None,
            cache: None,
        })
    }

    /// `HOST[:PORT]/REPO`, as the cache records where a blob went.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }
}

/// A connection to one repository of a registry, shared by the threads
/// that push layers.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    target: Target,
    /// Resolved on the first challenge that needs them.
    creds: OnceLock<Option<auth::Credentials>>,
    authorization: Mutex<Option<String>>,
    /// Blobs the registry is known to hold (by `HEAD`, mount or upload).
    present: Mutex<HashSet<Sha256Digest>>,
    cache: Option<cache::Cache>,
    uploads: AtomicUsize,
    mounts: AtomicUsize,
    /// Warnings for the caller to show (see [`Registry::take_warnings`]).
    warnings: Mutex<Vec<String>>,
}

/// What went wrong with one request: whether trying again may help.
enum Failure {
    /// A 5xx answer or a dropped connection.
    Transient(String),
    /// The registry answered with this status.
    Status(u16, String),
    /// Anything else (a bad URL, a TLS certificate the roots do not trust).
    Fatal(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Transient(t) | Failure::Status(_, t) | Failure::Fatal(t) => t,
        }
    }
}

/// Carried inside an `io::Error` through the compressor, so that the
/// caller gets the push error back whole.
#[derive(Debug)]
struct Carried {
    error: Error,
    /// The registry lost the upload session: starting the blob again may
    /// work.
    lost: bool,
}

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Carried {}

/// Whether an I/O error from a writer is a push error on its way out.
pub fn carries_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Carried>())
}

/// Takes a push error back out of an `io::Error` that went through
/// writers, or describes the error as a failure to produce the layer.
fn uncarry(error: Error) -> (Error, bool) {
    match error {
        Error::Output(e) if e.get_ref().is_some_and(|i| i.is::<Carried>()) => {
            let carried = e
                .into_inner()
                .and_then(|i| i.downcast::<Carried>().ok())
                .expect("checked above");
            (carried.error, carried.lost)
        }
        other => (other, false),
    }
}

impl Registry {
    /// Prepares to push to `target`: the TLS setup and the cache directory
    /// are checked; no request is made yet.
    pub fn new(target: Target) -> Result<Registry> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(300))
            .timeout_write(Duration::from_secs(300))
            .redirects(5);
        if let Some(dir) = &target.cert_dir {
            builder = builder.tls_config(tls::config(dir)?);
        }
        let cache = target
            .cache
            .as_deref()
            .map(cache::Cache::open)
            .transpose()?;
        let scheme = if target.insecure { "http" } else { "https" };
        Ok(Registry {
            agent: builder.build(),
            base: format!("{scheme}://{}", target.host),
            creds: OnceLock::new(),
            authorization: Mutex::new(None),
            present: Mutex::new(HashSet::new()),
            cache,
            uploads: AtomicUsize::new(0),
            mounts: AtomicUsize::new(0),
            warnings: Mutex::new(Vec::new()),
            target,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Upload sessions opened so far (mounts not counted).
    pub fn uploads(&self) -> usize {
        self.uploads.load(Ordering::Relaxed)
    }

    /// Blobs mounted from another repository so far.
    pub fn mounts(&self) -> usize {
        self.mounts.load(Ordering::Relaxed)
    }

    /// The warnings so far (a cache entry not trusted), each once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn warn(&self, text: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }

    /// Whether a cache directory is in use: then layers are compressed
    /// only when they must be uploaded.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    fn error(&self, problem: impl std::fmt::Display) -> Error {
        Error::Push {
            registry: self.target.host.clone(),
            problem: problem.to_string(),
        }
    }

    fn url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn credentials(&self) -> Result<Option<&auth::Credentials>> {
        if let Some(found) = self.creds.get() {
            return Ok(found.as_ref());
        }
        let found = match &self.target.creds {
            Some((user, pass)) => Some(auth::Credentials {
                username: user.clone(),
                secret: pass.clone(),
                source: "--creds".into(),
            }),
            None => auth::Sources::from_env().lookup(&self.target.host)?,
        };
        Ok(self.creds.get_or_init(|| found).as_ref())
    }

    /// One attempt at a request, answering one auth challenge.
    fn attempt(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::result::Result<ureq::Response, Failure> {
        let mut challenged = false;
        loop {
            let mut req = self.agent.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let authorization = self.authorization.lock().expect("not poisoned").clone();
            if let Some(a) = &authorization {
                req = req.set("Authorization", a);
            }
            let result = if method == "HEAD" || method == "GET" {
                req.call()
            } else {
                req.send_bytes(body)
            };
            return match result {
                Ok(resp) => Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_owned();
                    self.authorize(&challenge, authorization.as_deref())
                        .map_err(|e| Failure::Fatal(strip(e)))?;
                    continue;
                }
                Err(ureq::Error::Status(401, resp)) => {
                    let who = match self.creds.get() {
                        Some(Some(c)) => format!("the credentials from {}", c.source),
                        _ => "no credentials (give --creds USER:PASS, or log in with podman, skopeo or docker)".into(),
                    };
                    Err(Failure::Status(
                        401,
                        format!(
                            "{method} {}: HTTP 401{}; tried {who}",
                            show(url),
                            body_text(resp)
                        ),
                    ))
                }
                Err(ureq::Error::Status(code, resp)) if code >= 500 => Err(Failure::Transient(
                    format!("{method} {}: HTTP {code}{}", show(url), body_text(resp)),
                )),
                Err(ureq::Error::Status(code, resp)) => Err(Failure::Status(
                    code,
                    format!("{method} {}: HTTP {code}{}", show(url), body_text(resp)),
                )),
                Err(ureq::Error::Transport(t)) => Err(transport_failure(method, url, &t)),
            };
        }
    }

    /// A request, retried with backoff on 5xx answers and dropped
    /// connections.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::result::Result<ureq::Response, Failure> {
        let mut delays = BACKOFF_MS.iter();
        loop {
            match self.attempt(method, url, headers, body) {
                Err(Failure::Transient(text)) => match delays.next() {
                    Some(ms) => std::thread::sleep(Duration::from_millis(*ms)),
                    None => {
                        return Err(Failure::Transient(format!(
                            "{text} (gave up after {} attempts)",
                            BACKOFF_MS.len() + 1
                        )))
                    }
                },
                other => return other,
            }
        }
    }

    /// Answers a `WWW-Authenticate` challenge. `sent` is the authorization
    /// the refused request carried: another thread may have renewed it
    /// meanwhile.
    fn authorize(&self, challenge: &str, sent: Option<&str>) -> Result<()> {
        {
            let current = self.authorization.lock().expect("not poisoned");
            if current.is_some() && current.as_deref() != sent {
                return Ok(());
            }
        }
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let creds = self.credentials()?;
        let basic = creds.map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.secret))
            )
        });
        let value = match scheme.to_ascii_lowercase().as_str() {
            "basic" => basic.ok_or_else(|| {
                self.error(
                    "the registry wants credentials; give --creds USER:PASS, or log in with podman, skopeo or docker",
                )
            })?,
            "bearer" => {
                let params = parse_params(params);
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.as_str())
                };
                let realm =
                    get("realm").ok_or_else(|| self.error("a Bearer challenge without a realm"))?;
                // The challenge names what the refused request needed; ask
                // for push on the target too, so one token serves them all.
                let mut scopes: Vec<String> = get("scope")
                    .map(|s| s.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default();
                let ours = format!("repository:{}:pull,push", self.target.repo);
                if !scopes.contains(&ours) {
                    scopes.push(ours);
                }
                let mut req = self.agent.get(realm);
                for scope in &scopes {
                    req = req.query("scope", scope);
                }
                if let Some(service) = get("service") {
                    req = req.query("service", service);
                }
                if let Some(b) = &basic {
                    req = req.set("Authorization", b);
                }
                let token_error = |e: &dyn std::fmt::Display| {
                    self.error(format!("getting a token from {realm}: {e}"))
                };
                let resp = req.call().map_err(|e| match e {
                    ureq::Error::Status(code, resp) => {
                        token_error(&format!("HTTP {code}{}", body_text(resp)))
                    }
                    other => token_error(&other),
                })?;
                let text = resp.into_string().map_err(|e| token_error(&e))?;
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| token_error(&e))?;
                let token = json["token"]
                    .as_str()
                    .or(json["access_token"].as_str())
                    .ok_or_else(|| token_error(&"the answer holds no token"))?;
                format!("Bearer {token}")
            }
            _ => {
                return Err(self.error(format!(
                    "unsupported auth challenge {challenge:?} (expected Basic or Bearer)"
                )))
            }
        };
        *self.authorization.lock().expect("not poisoned") = Some(value);
        Ok(())
    }

    fn blob_url(&self, digest: &Sha256Digest) -> String {
        format!(
            "{}/v2/{}/blobs/sha256:{digest}",
            self.base, self.target.repo
        )
    }

    /// Whether the registry has the blob (asked once; uploads and mounts
    /// are remembered).
    pub fn has_blob(&self, digest: &Sha256Digest) -> Result<bool> {
        if self.present.lock().expect("not poisoned").contains(digest) {
            return Ok(true);
        }
        match self.send("HEAD", &self.blob_url(digest), &[], &[]) {
            Ok(_) => {
                self.present.lock().expect("not poisoned").insert(*digest);
                Ok(true)
            }
            Err(Failure::Status(404, _)) => Ok(false),
            Err(f) => Err(self.error(f.text())),
        }
    }

    /// Opens an upload session; returns its location.
    fn start_upload(&self) -> Result<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.target.repo);
        let resp = self
            .send("POST", &url, &[("Content-Length", "0")], &[])
            .map_err(|f| self.error(f.text()))?;
        self.uploads.fetch_add(1, Ordering::Relaxed);
        self.location(&resp)
    }

    /// Asks the registry to mount the blob from another of its
    /// repositories; true when it did.
    fn mount(&self, digest: &Sha256Digest, from: &str) -> Result<bool> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount=sha256:{digest}&from={from}",
            self.base, self.target.repo
        );
        let resp = self
            .send("POST", &url, &[("Content-Length", "0")], &[])
            .map_err(|f| self.error(f.text()))?;
        if resp.status() == 201 {
            self.mounts.fetch_add(1, Ordering::Relaxed);
            self.present.lock().expect("not poisoned").insert(*digest);
            return Ok(true);
        }
        // Not mounted: the registry opened an upload session instead,
        // which is dropped (it expires on the registry's side).
        if let Ok(location) = self.location(&resp) {
            let _ = self.agent.delete(&self.url(&location)).call();
        }
        Ok(false)
    }

    fn location(&self, resp: &ureq::Response) -> Result<String> {
        resp.header("Location")
            .map(str::to_owned)
            .ok_or_else(|| self.error("an upload answer without a Location header"))
    }

    /// How many bytes of an upload the registry holds, and the session's
    /// new location.
    fn upload_status(&self, location: &str) -> std::result::Result<(u64, String), Failure> {
        let resp = self.attempt("GET", &self.url(location), &[], &[])?;
        let held = resp
            .header("Range")
            .and_then(|r| r.split_once('-'))
            .and_then(|(_, end)| end.trim().parse::<u64>().ok())
            // "0-0" also stands for nothing held yet; a chunk is never one
            // byte, so resending from 0 is right.
            .map_or(0, |end| if end == 0 { 0 } else { end + 1 });
        let location = resp
            .header("Location")
            .map_or_else(|| location.to_owned(), str::to_owned);
        Ok((held, location))
    }

    /// Closes an upload session, naming the blob's digest.
    fn finish_upload(&self, location: &str, digest: &Sha256Digest) -> Result<(), Carried> {
        let mut url = self.url(location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest=sha256:{digest}"));
        match self.send(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            &[],
        ) {
            Ok(_) => {
                self.present.lock().expect("not poisoned").insert(*digest);
                Ok(())
            }
            // A PUT whose answer was lost may have gone through.
            Err(f @ Failure::Transient(_)) => match self.has_blob(digest) {
                Ok(true) => Ok(()),
                _ => Err(Carried {
                    error: self.error(format!("blob sha256:{digest}: {}", f.text())),
                    lost: false,
                }),
            },
            Err(f) => Err(Carried {
                error: self.error(format!("blob sha256:{digest}: {}", f.text())),
                lost: matches!(f, Failure::Status(404, _)),
            }),
        }
    }

    /// Makes sure the registry holds the layer whose tar has digest
    /// `diff_id`, compressed with `compression`, and returns the blob.
    ///
    /// `known` is the blob's digest when the hashing pass found it. A blob
    /// the registry has (by digest, from `known` or the cache) is skipped;
    /// one the cache says another repository of this registry holds is
    /// mounted from there; otherwise `produce` writes the layer's tar
    /// into the compressor as it is uploaded.
    pub fn push_layer(
        &self,
        label: &str,
        diff_id: &Sha256Digest,
        compression: Compression,
        known: Option<BlobRef>,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<LayerPush> {
        let cached = match self.cache.as_ref().map(|c| c.get(diff_id, compression)) {
            Some(cache::Lookup::Hit(entry)) => Some(entry),
            Some(cache::Lookup::Corrupt(problem)) => {
                self.warn(format!(
                    "{label}: cache entry {problem}; not trusted, ignored"
                ));
                None
            }
            Some(cache::Lookup::Miss) | None => None,
        };
        let expected = known.or(cached.as_ref().map(|c| c.blob));
        if let Some(blob) = expected {
            if self.has_blob(&blob.digest)? {
                self.remember(diff_id, compression, blob);
                return Ok(LayerPush {
                    blob,
                    how: How::Present,
                });
            }
            // The cache may know another repository of this registry that
            // holds the blob: a mount costs one request.
            let here = self.target.repository();
            let prefix = format!("{}/", self.target.host);
            if let Some(c) = cached.as_ref().filter(|c| c.blob.digest == blob.digest) {
                for repository in c.repositories.iter().filter(|r| **r != here) {
                    let Some(from) = repository.strip_prefix(&prefix) else {
                        continue;
                    };
                    if self.mount(&blob.digest, from)? {
                        self.remember(diff_id, compression, blob);
                        return Ok(LayerPush {
                            blob,
                            how: How::Mounted,
                        });
                    }
                }
            }
        }
        let mut restarts = 0;
        loop {
            match self.upload_layer(label, compression, known, produce) {
                Ok(blob) => {
                    self.remember(diff_id, compression, blob);
                    return Ok(LayerPush {
                        blob,
                        how: How::Uploaded,
                    });
                }
                Err(Carried { lost: true, .. }) if restarts < BLOB_RESTARTS => restarts += 1,
                Err(c) => return Err(c.error),
            }
        }
    }

    /// Uploads what `produce` writes, compressed; when the blob's digest
    /// is `known`, the upload is completed only if it is that blob, so the
    /// registry never holds a blob that differs from what was expected.
    fn upload_layer(
        &self,
        label: &str,
        compression: Compression,
        known: Option<BlobRef>,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> std::result::Result<BlobRef, Carried> {
        let fatal = |error| Carried { error, lost: false };
        let upload = Upload::start(self, label.to_owned()).map_err(fatal)?;
        let mut blob = HashingWriter::new(upload);
        let mut encoder = compression
            .encoder(&mut blob)
            .map_err(|e| fatal(Error::Output(e)))?;
        let produced = produce(&mut encoder).and_then(|()| {
            encoder.finish().map_err(Error::Output)?;
            Ok(())
        });
        if let Err(e) = produced {
            let (error, lost) = uncarry(e);
            return Err(Carried { error, lost });
        }
        let (digest, size, upload) = blob.finish();
        if let Some(k) = known.filter(|k| k.digest != digest) {
            return Err(fatal(self.error(format!(
                "{label}: compressed to sha256:{digest}, but sha256:{} was expected (found by the hashing pass, or recorded in store_layer_digests); a store file changed during the run, or the record was taken with another compressor",
                k.digest
            ))));
        }
        upload.finish_carried(&digest)?;
        Ok(BlobRef { digest, size })
    }

    fn remember(&self, diff_id: &Sha256Digest, compression: Compression, blob: BlobRef) {
        if let Some(cache) = &self.cache {
            // A cache that cannot be written costs the next push time, not
            // this one its result.
            let _ = cache.put(diff_id, compression, blob, &self.target.repository());
        }
    }

    /// Puts the manifest under the tag.
    pub fn put_manifest(&self, manifest: &[u8], media_type: &str) -> Result<()> {
        self.put_manifest_at(&self.target.tag, manifest, media_type)
            .map(drop)
    }

    /// Puts a manifest under `reference`: a tag, or `sha256:...` for a
    /// manifest that an index names. Returns the answer's `OCI-Subject`
    /// header: a registry with the referrers API sets it when the
    /// manifest has a `subject` (distribution spec v1.1), and then lists
    /// the manifest among the subject's referrers itself.
    pub fn put_manifest_at(
        &self,
        reference: &str,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<Option<String>> {
        let url = self.manifest_url(reference);
        let resp = self
            .send("PUT", &url, &[("Content-Type", media_type)], manifest)
            .map_err(|f| self.error(f.text()))?;
        Ok(resp.header("OCI-Subject").map(str::to_owned))
    }

    /// The manifest under `reference`, whatever its kind, or `None` when
    /// there is none. Every manifest media type is accepted: a registry
    /// answers 404 for a manifest whose type the request does not accept
    /// (distribution does so for OCI manifests), which would pass for a
    /// free tag.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<Vec<u8>>> {
        const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
            application/vnd.oci.image.manifest.v1+json, \
            application/vnd.docker.distribution.manifest.list.v2+json, \
            application/vnd.docker.distribution.manifest.v2+json";
        let url = self.manifest_url(reference);
        match self.send("GET", &url, &[("Accept", ACCEPT)], &[]) {
            Ok(resp) => {
                let mut bytes = Vec::new();
                resp.into_reader()
                    .take(MAX_MANIFEST)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.error(format!("GET {}: {e}", show(&url))))?;
                Ok(Some(bytes))
            }
            Err(Failure::Status(404, _)) => Ok(None),
            Err(f) => Err(self.error(f.text())),
        }
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{reference}",
            self.base, self.target.repo
        )
    }

    /// Uploads a blob held in memory (a config, an SBOM) unless the
    /// registry has it; returns its digest.
    pub fn put_small_blob(&self, bytes: &[u8]) -> Result<Sha256Digest> {
        let digest = Sha256Digest::of(bytes);
        if !self.has_blob(&digest)? {
            let mut upload = Upload::start(self, format!("blob sha256:{digest}"))?;
            upload.write_all(bytes).map_err(Error::Output)?;
            upload.finish(&digest)?;
            self.present.lock().expect("not poisoned").insert(digest);
        }
        Ok(digest)
    }
}

/// How a layer reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// It was there already.
    Present,
    /// Mounted from another repository.
    Mounted,
    /// Compressed and uploaded.
    Uploaded,
}

/// The result of [`Registry::push_layer`].
#[derive(Debug, Clone, Copy)]
pub struct LayerPush {
    /// The blob the manifest names.
    pub blob: BlobRef,
    /// How it got there.
    pub how: How,
}

fn transport_failure(method: &str, url: &str, t: &ureq::Transport) -> Failure {
    use ureq::ErrorKind as K;
    // ureq's text starts with the URL, which the message already names.
    let full = t.to_string();
    let detail = t
        .url()
        .and_then(|u| full.strip_prefix(&format!("{u}: ")))
        .unwrap_or(&full);
    let text = format!("{method} {}: {}", show(url), one_line(detail));
    let mut source = std::error::Error::source(t);
    let mut tls = false;
    while let Some(e) = source {
        let inner = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .map_or(e, |inner| inner as &(dyn std::error::Error + 'static));
        tls |= inner.is::<rustls::Error>();
        source = e.source();
    }
    tls |= ["BadCertificate", "CertificateRequired", "UnknownCA"]
        .iter()
        .any(|alert| full.contains(alert));
    if tls {
        let hint = if full.contains("alert") {
            "the registry refused our client certificate, or wants one: put NAME.cert and NAME.key in a --cert-dir"
        } else {
            "give --cert-dir with the registry's CA certificate, or --insecure for a plain-HTTP registry"
        };
        return Failure::Fatal(format!("{text} (TLS: {hint})"));
    }
    match t.kind() {
        K::ConnectionFailed | K::Io | K::BadStatus | K::BadHeader | K::Dns => {
            Failure::Transient(text)
        }
        _ => Failure::Fatal(text),
    }
}

/// A URL for messages: an upload location's query (signed session
/// state) is long and says nothing to the reader.
fn show(url: &str) -> &str {
    match url.split_once('?') {
        Some((path, query)) if query.contains("_state=") => path,
        _ => url,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The gist of an error answer: the codes and messages of the
/// distribution API's JSON, or the start of the text. Whatever the
/// registry sent, control characters and bytes that are not UTF-8 come out
/// escaped: the text ends up on the user's terminal.
fn body_text(resp: ureq::Response) -> String {
    let mut raw = Vec::new();
    let _ = resp.into_reader().take(4000).read_to_end(&mut raw);
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&raw) {
        if let Some(errors) = json["errors"].as_array() {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        crate::escape::text(e["code"].as_str().unwrap_or("?")),
                        crate::escape::text(e["message"].as_str().unwrap_or(""))
                    )
                })
                .collect();
            return format!(" ({})", parts.join("; "));
        }
    }
    let text = raw
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty())
        .map(crate::escape::bytes)
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        text
    } else {
        format!(" ({})", text.chars().take(300).collect::<String>())
    }
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

/// A blob being uploaded in chunks as it is written.
pub struct Upload<'r> {
    registry: &'r Registry,
    label: String,
    location: String,
    offset: u64,
    buf: Vec<u8>,
}

impl<'r> Upload<'r> {
    /// Opens an upload session; `label` names the blob in errors.
    pub fn start(registry: &'r Registry, label: String) -> Result<Upload<'r>> {
        Ok(Upload {
            location: registry
                .start_upload()
                .map_err(|e| registry.error(format!("{label}: {}", strip(e))))?,
            registry,
            label,
            offset: 0,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    /// Sends the buffered chunk. When the `PATCH` fails for a reason that
    /// may pass, the registry is asked how much it holds and the rest of
    /// the chunk is sent again; a session that lost bytes before this
    /// chunk cannot be resumed, since they are gone.
    fn send(&mut self) -> Result<(), Carried> {
        let registry = self.registry;
        let mut delays = BACKOFF_MS.iter();
        let mut start = 0usize;
        while start < self.buf.len() {
            let chunk = &self.buf[start..];
            let first = self.offset + start as u64;
            let range = format!("{first}-{}", first + chunk.len() as u64 - 1);
            let failure = match registry.attempt(
                "PATCH",
                &registry.url(&self.location),
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                chunk,
            ) {
                Ok(resp) => {
                    self.location = registry
                        .location(&resp)
                        .map_err(|error| Carried { error, lost: false })?;
                    start = self.buf.len();
                    continue;
                }
                Err(Failure::Transient(text)) => text,
                Err(Failure::Status(code @ (404 | 416), text)) => {
                    return Err(self.failed(&format!("{text} (HTTP {code})"), true))
                }
                Err(f) => return Err(self.failed(f.text(), false)),
            };
            // Ask where the session stands, until the registry answers or
            // the retries are spent.
            loop {
                let Some(ms) = delays.next() else {
                    return Err(self.failed(
                        &format!(
                            "{failure} (gave up after {} attempts)",
                            BACKOFF_MS.len() + 1
                        ),
                        false,
                    ));
                };
                std::thread::sleep(Duration::from_millis(*ms));
                match registry.upload_status(&self.location) {
                    Ok((held, location)) => {
                        self.location = location;
                        if held < self.offset || held > self.offset + self.buf.len() as u64 {
                            return Err(self.failed(
                                &format!(
                                    "{failure}; then the registry held {held} bytes, not {first}"
                                ),
                                true,
                            ));
                        }
                        start = (held - self.offset) as usize;
                        break;
                    }
                    Err(Failure::Transient(_)) => continue,
                    Err(f) => {
                        let lost = matches!(f, Failure::Status(404, _));
                        return Err(self.failed(&format!("{failure}; then {}", f.text()), lost));
                    }
                }
            }
        }
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn failed(&self, problem: &str, lost: bool) -> Carried {
        Carried {
            error: self
                .registry
                .error(format!("{} upload: {problem}", self.label)),
            lost,
        }
    }

    /// Sends what is left and closes the upload, naming the blob's digest.
    pub fn finish(self, digest: &Sha256Digest) -> Result<()> {
        self.finish_carried(digest).map_err(|c| c.error)
    }

    fn finish_carried(mut self, digest: &Sha256Digest) -> Result<(), Carried> {
        self.send()?;
        self.registry
            .finish_upload(&self.location, digest)
            .map_err(|c| Carried {
                error: self
                    .registry
                    .error(format!("{}: {}", self.label, strip(c.error))),
                lost: c.lost,
            })
    }
}

/// The problem of a push error, without the "pushing to HOST" prefix that
/// a wrapping error adds again.
fn strip(e: Error) -> String {
    match e {
        Error::Push { problem, .. } => problem,
        other => other.to_string(),
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
        assert_eq!(t.repository(), "localhost:5000/a/b");
        assert_eq!(Target::parse("h/x", false, None).unwrap().tag, "latest");
        assert!(Target::parse("h", false, None).is_err());
        assert!(Target::parse("h/Upper", false, None).is_err());
        assert!(Target::parse("h/x", false, Some("nocolon")).is_err());
    }

    #[test]
    fn parses_challenges() {
        let p =
            parse_params(r#"realm="http://a/token",service="reg", scope="repository:x:pull,push""#);
        assert_eq!(p[0], ("realm".into(), "http://a/token".into()));
        assert_eq!(p[1], ("service".into(), "reg".into()));
        assert_eq!(p[2], ("scope".into(), "repository:x:pull,push".into()));
        let p = parse_params(r#"realm=plain, error="insufficient_scope""#);
        assert_eq!(p[0], ("realm".into(), "plain".into()));
        assert_eq!(p[1], ("error".into(), "insufficient_scope".into()));
    }

    #[test]
    fn push_errors_survive_writers() {
        let carried = Carried {
            error: Error::Push {
                registry: "h:1".into(),
                problem: "x".into(),
            },
            lost: true,
        };
        let through = Error::Output(io::Error::other(carried));
        let (error, lost) = uncarry(through);
        assert!(lost);
        assert_eq!(error.to_string(), "pushing to h:1: x");
        let (error, lost) = uncarry(Error::Usage("u".into()));
        assert!(!lost);
        assert_eq!(error.to_string(), "u");
    }

    #[test]
    fn summarises_error_bodies() {
        assert_eq!(one_line(" a\n  b\tc "), "a b c");
    }
}
