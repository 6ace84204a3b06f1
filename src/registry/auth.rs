//! Registry credentials, found where podman, skopeo and docker keep them.
//!
//! Input: a registry host and the environment. Output: a user name and
//! secret, or none. The files are read in the order containers/image uses:
//! `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `~/.config/containers/auth.json`, then `$DOCKER_CONFIG/config.json` (or
//! `~/.docker/config.json`). In each, `credHelpers[host]` names a helper
//! first; then an `auths` entry for the host (keyed `host`, `https://host`
//! or `http://host/v1/`) holding base64 `user:pass` in `auth`; then
//! `credsStore`, a helper for every host. A helper is the program
//! `docker-credential-NAME` on `PATH`, run as `get` with the host on stdin;
//! it prints `{"Username": ..., "Secret": ...}`.
//!
//! The first file that yields credentials wins; files that do not exist
//! are skipped, and one that cannot be read or parsed is an error naming it.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, Result};

/// A user name and secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub secret: String,
    /// Where they were found, for messages (never the secret itself).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"…")
            .field("source", &self.source)
            .finish()
    }
}

/// Where to look: the parts of the environment that matter, so that tests
/// can point them elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `$REGISTRY_AUTH_FILE`.
    pub registry_auth_file: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$DOCKER_CONFIG`.
    pub docker_config: Option<PathBuf>,
    /// `$PATH`, searched for credential helpers.
    pub path: Option<OsString>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Sources {
    /// The process environment.
    pub fn from_env() -> Sources {
        Sources {
            registry_auth_file: env_path("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: env_path("XDG_RUNTIME_DIR"),
            home: env_path("HOME"),
            docker_config: env_path("DOCKER_CONFIG"),
            path: std::env::var_os("PATH"),
        }
    }

    /// The files to read, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        files.extend(self.registry_auth_file.clone());
        if let Some(dir) = &self.xdg_runtime_dir {
            files.push(dir.join("containers/auth.json"));
        }
        if let Some(home) = &self.home {
            files.push(home.join(".config/containers/auth.json"));
        }
        match (&self.docker_config, &self.home) {
            (Some(dir), _) => files.push(dir.join("config.json")),
            (None, Some(home)) => files.push(home.join(".docker/config.json")),
            (None, None) => {}
        }
        files
    }

    /// The credentials for `host`, from the first file that has some.
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
        for file in self.files() {
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&file, "reading credentials", e)),
            };
            if let Some(found) = self.lookup_in(&file, &text, host)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn lookup_in(&self, file: &Path, text: &str, host: &str) -> Result<Option<Credentials>> {
        let bad = |problem: String| Error::AuthFile {
            path: file.to_owned(),
            problem,
        };
        let json: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if let Some(helper) = json["credHelpers"]
            .as_object()
            .and_then(|helpers| helpers.iter().find(|(k, _)| normalise(k) == host))
            .and_then(|(_, v)| v.as_str())
        {
            return self.run_helper(file, helper, host);
        }
        if let Some(auths) = json["auths"].as_object() {
            for (key, entry) in auths {
                if normalise(key) != host {
                    continue;
                }
                if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| bad(format!("auths[{key:?}].auth is not base64 text")))?;
                    let (username, secret) = decoded.split_once(':').ok_or_else(|| {
                        bad(format!("auths[{key:?}].auth does not decode to USER:PASS"))
                    })?;
                    return Ok(Some(Credentials {
                        username: username.to_owned(),
                        secret: secret.to_owned(),
                        source: format!("{file:?}"),
                    }));
                }
            }
        }
        if let Some(store) = json["credsStore"].as_str().filter(|s| !s.is_empty()) {
            return self.run_helper(file, store, host);
        }
        Ok(None)
    }

    fn helper_path(&self, program: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .map(|dir| dir.join(program))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }

    /// Runs `docker-credential-NAME get`; "not found" is no credentials.
    fn run_helper(&self, file: &Path, name: &str, host: &str) -> Result<Option<Credentials>> {
        let program = format!("docker-credential-{name}");
        let bad = |problem: String| Error::AuthFile {
            path: file.to_owned(),
            problem: format!("credential helper {program}: {problem}"),
        };
        let found = self
            .helper_path(&program)
            .ok_or_else(|| bad("not found on PATH".into()))?;
        let mut child = Command::new(&found)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| bad(format!("cannot run it: {e}")))?;
        // A helper that exits without reading stdin is judged by its
        // output, not by the broken pipe.
        let _ = child
            .stdin
            .take()
            .expect("piped")
            .write_all(host.as_bytes());
        let out = child
            .wait_with_output()
            .map_err(|e| bad(format!("cannot run it: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let said = format!(
                "{} {}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            if said.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(bad(format!(
                "get {host} failed ({}): {}",
                out.status,
                said.split_whitespace().collect::<Vec<_>>().join(" ")
            )));
        }
        let json: Value = serde_json::from_str(&stdout)
            .map_err(|e| bad(format!("get {host}: not the expected JSON: {e}")))?;
        let field = |k: &str| json[k].as_str().map(str::to_owned);
        match (field("Username"), field("Secret")) {
            (Some(username), Some(secret)) if !secret.is_empty() => Ok(Some(Credentials {
                username,
                secret,
                source: format!("{program} (named in {file:?})"),
            })),
            _ => Err(bad(format!(
                "get {host}: no Username and Secret in its answer"
            ))),
        }
    }
}

/// The registry host an `auths` or `credHelpers` key stands for:
/// `https://host/v1/` and `http://host` mean `host`, and Docker Hub's
/// index stands for `docker.io`.
pub fn normalise(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn sources(dir: &Path) -> Sources {
        Sources {
            home: Some(dir.join("home")),
            path: Some(dir.join("bin").into_os_string()),
            ..Sources::default()
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn normalises_keys() {
        assert_eq!(normalise("https://reg.example:5000"), "reg.example:5000");
        assert_eq!(normalise("http://reg.example/v1/"), "reg.example");
        assert_eq!(normalise("reg.example:5000"), "reg.example:5000");
        assert_eq!(normalise("https://index.docker.io/v1/"), "docker.io");
    }

    #[test]
    fn files_follow_containers_order() {
        let s = Sources {
            registry_auth_file: Some("/a/auth.json".into()),
            xdg_runtime_dir: Some("/run/user/1".into()),
            home: Some("/h".into()),
            docker_config: None,
            path: None,
        };
        assert_eq!(
            s.files(),
            [
                PathBuf::from("/a/auth.json"),
                "/run/user/1/containers/auth.json".into(),
                "/h/.config/containers/auth.json".into(),
                "/h/.docker/config.json".into(),
            ]
        );
        let s = Sources {
            docker_config: Some("/d".into()),
            ..s
        };
        assert_eq!(s.files()[3], PathBuf::from("/d/config.json"));
    }

    #[test]
    fn reads_auths_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sources(dir.path());
        assert_eq!(s.lookup("reg:5000").unwrap(), None);
        write(
            &dir.path().join("home/.docker/config.json"),
            &format!(
                r#"{{"auths": {{"http://reg:5000/v1/": {{"auth": "{}"}}}}}}"#,
                b64("docker:one")
            ),
        );
        let c = s.lookup("reg:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("docker", "one"));
        assert!(c.source.contains(".docker/config.json"));
        write(
            &dir.path().join("home/.config/containers/auth.json"),
            &format!(
                r#"{{"auths": {{"other": {{"auth": "{}"}}, "https://reg:5000": {{"auth": "{}"}}}}}}"#,
                b64("x:y"),
                b64("podman:two:with:colons")
            ),
        );
        let c = s.lookup("reg:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.secret.as_str()),
            ("podman", "two:with:colons")
        );
        let first = dir.path().join("first.json");
        write(
            &first,
            &format!(
                r#"{{"auths": {{"reg:5000": {{"auth": "{}"}}}}}}"#,
                b64("env:three")
            ),
        );
        s.registry_auth_file = Some(first.clone());
        assert_eq!(s.lookup("reg:5000").unwrap().unwrap().username, "env");
        // A host that only the later files know falls through the earlier.
        assert_eq!(s.lookup("other").unwrap().unwrap().username, "x");
        assert_eq!(s.lookup("nowhere").unwrap(), None);

        write(&first, "{not json");
        let e = s.lookup("reg:5000").unwrap_err().to_string();
        assert!(
            e.contains("first.json") && e.contains("invalid JSON"),
            "{e}"
        );
        write(&first, r#"{"auths": {"reg:5000": {"auth": "!!"}}}"#);
        let e = s.lookup("reg:5000").unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
    }

    fn helper(dir: &Path, name: &str, script: &str) {
        let path = dir.join("bin").join(format!("docker-credential-{name}"));
        write(&path, script);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn runs_credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let s = sources(dir.path());
        // The helper answers only for the host it is given on stdin.
        helper(
            dir.path(),
            "test",
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread host\n\
             if [ \"$host\" = reg:5000 ]; then\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"helped\",\"Secret\":\"s3\"}' \"$host\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
        );
        helper(
            dir.path(),
            "broken",
            "#!/bin/sh\necho 'the keyring is locked' >&2\nexit 3\n",
        );
        write(
            &dir.path().join("home/.docker/config.json"),
            &format!(
                r#"{{"credHelpers": {{"reg:5000": "test", "bad:1": "broken", "gone:1": "missing"}},
                    "credsStore": "test",
                    "auths": {{"reg:5000": {{"auth": "{}"}}}}}}"#,
                b64("not:used")
            ),
        );
        let c = s.lookup("reg:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("helped", "s3"));
        assert!(c.source.contains("docker-credential-test"), "{}", c.source);
        // credsStore covers the other hosts; its "not found" is no answer.
        assert_eq!(s.lookup("elsewhere").unwrap(), None);
        let e = s.lookup("bad:1").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken") && e.contains("the keyring is locked"),
            "{e}"
        );
        let e = s.lookup("gone:1").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-missing: not found on PATH"),
            "{e}"
        );
    }
}
