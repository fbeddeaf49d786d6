//! The appservice registration file handed to the homeserver. It is the one
//! place the `as_token` / `hs_token` live: the running bridge reads them back
//! from it, and regeneration keeps them so the homeserver need not be re-told.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, USERID_PLACEHOLDER};
pub use crate::matrix::Secret;

/// Length of freshly generated appservice tokens.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default)]
    pub users: Vec<Namespace>,
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    #[serde(default)]
    pub rooms: Vec<Namespace>,
}

/// An appservice registration (`registration.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub url: String,
    pub as_token: Secret,
    pub hs_token: Secret,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    #[serde(default)]
    pub rate_limited: bool,
    #[serde(default)]
    pub receive_ephemeral: bool,
    #[serde(rename = "de.sorunome.msc2409.push_ephemeral", default)]
    pub push_ephemeral: bool,
}

impl Registration {
    /// Reads a registration file.
    pub fn load(path: impl AsRef<Path>) -> Result<Registration, ConfigError> {
        let path = path.as_ref();
        Self::parse(&super::read_file(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Registration, ConfigError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            key: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }

    /// Writes the registration as YAML, readable by its owner only, replacing
    /// any previous file atomically so a crash never leaves half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let yaml =
            serde_saphyr::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))?;
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let tmp = temp_path(path);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = options
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(yaml.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Builds the registration for `config`. If the file named by
/// `appservice.registration` already exists its tokens are kept; otherwise
/// fresh ones are generated. Nothing is written: call [`Registration::save`].
pub fn generate_registration(config: &Config) -> Result<Registration, ConfigError> {
    let path = &config.appservice.registration;
    let (as_token, hs_token) = match std::fs::read_to_string(path) {
        Ok(text) => {
            let existing = Registration::parse(&text, path)?;
            (existing.as_token, existing.hs_token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (Secret::generate(), Secret::generate())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.clone(),
                source,
            });
        }
    };
    Ok(Registration {
        id: config.appservice.id.clone(),
        // Homeservers append `/_matrix/...` verbatim; a trailing slash would double it.
        url: config
            .appservice
            .address
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        as_token,
        hs_token,
        sender_localpart: config.appservice.bot.username.clone(),
        namespaces: namespaces(config),
        rate_limited: false,
        receive_ephemeral: true,
        push_ephemeral: true,
    })
}

fn namespaces(config: &Config) -> Namespaces {
    let domain = regex_escape(&config.homeserver.domain);
    let template = &config.bridge.username_template;
    // Validation guarantees the placeholder; fall back to the whole template.
    let (prefix, suffix) = template
        .split_once(USERID_PLACEHOLDER)
        .unwrap_or((template.as_str(), ""));
    let ghosts = format!(
        "@{}.*{}:{domain}",
        regex_escape(prefix),
        regex_escape(suffix)
    );
    let bot = format!(
        "@{}:{domain}",
        regex_escape(&config.appservice.bot.username)
    );
    let aliases = format!(
        "#{}.*{}:{domain}",
        regex_escape(prefix),
        regex_escape(suffix)
    );
    Namespaces {
        users: vec![
            Namespace {
                exclusive: true,
                regex: ghosts,
            },
            Namespace {
                exclusive: true,
                regex: bot,
            },
        ],
        aliases: vec![Namespace {
            exclusive: true,
            regex: aliases,
        }],
        rooms: Vec::new(),
    }
}

/// Escapes regex metacharacters, in the subset understood alike by Python's
/// `re` (Synapse) and other homeservers' engines.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
