//! Profiles: the gateway, API key and default platform a user works with, kept in a file so
//! that daily commands need no flags. Precedence: a flag, then the environment
//! (`FREEAGENT_GATEWAY_URL`, `FREEAGENT_API_KEY`), then the profile (`--profile`,
//! `FREEAGENT_PROFILE`, or the file's current one), then the built-in default. The file is
//! JSON, 0600 (it may hold keys): `$FREEAGENT_CONFIG`, else
//! `$XDG_CONFIG_HOME/freeagent/config.json`, else `~/.config/freeagent/config.json`.

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";
/// The profile used when none is named and the file names no current one.
pub const DEFAULT_PROFILE: &str = "default";

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// The settings a profile may hold, as `freeagent config set` names them.
pub const KEYS: [&str; 3] = ["gateway", "api-key", "platform"];

pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FREEAGENT_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| anyhow!("HOME is not set: set FREEAGENT_CONFIG to a file path"))?,
        )
        .join(".config"),
    };
    Ok(base.join("freeagent").join("config.json"))
}

impl ConfigFile {
    /// The file, or an empty one when there is none yet.
    pub fn load() -> anyhow::Result<Self> {
        // No home directory (a service account, a container): no file, flags and environment
        // only.
        let Ok(p) = path() else {
            return Ok(Self::default());
        };
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a freeagent config file", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Writes the file, private to this user (it may hold API keys).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let p = path()?;
        if let Some(dir) = p.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = p.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// The profile's name: the one asked for, else the current one, else `default`.
    pub fn profile_name(&self, asked: Option<&str>) -> String {
        asked
            .map(str::to_owned)
            .or_else(|| self.current.clone())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned())
    }

    /// The profile asked for (an unknown name is an error; the implicit one may be missing).
    pub fn profile(&self, asked: Option<&str>) -> anyhow::Result<Profile> {
        let name = self.profile_name(asked);
        match self.profiles.get(&name) {
            Some(p) => Ok(p.clone()),
            None if asked.is_none() => Ok(Profile::default()),
            None => Err(crate::exit::Usage(format!(
                "no profile '{name}' in {}: create it with `freeagent config set gateway <url> --profile {name}`",
                path().map(|p| p.display().to_string()).unwrap_or_default()
            ))
            .into()),
        }
    }
}

impl Profile {
    pub fn set(&mut self, key: &str, value: Option<String>) -> anyhow::Result<()> {
        let slot = match key {
            "gateway" => &mut self.gateway,
            "api-key" => &mut self.api_key,
            "platform" => &mut self.platform,
            other => {
                return Err(crate::exit::Usage(format!(
                    "no setting '{other}': the settings are {}",
                    KEYS.join(", ")
                ))
                .into());
            }
        };
        *slot = value;
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "gateway" => self.gateway.as_deref(),
            "api-key" => self.api_key.as_deref(),
            "platform" => self.platform.as_deref(),
            _ => None,
        }
    }
}

/// A key shown without its secret part.
pub fn masked(key: &str) -> String {
    let shown: String = key.chars().take(8).collect();
    format!("{shown}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_named_wins_then_the_current_then_default() {
        let mut f = ConfigFile::default();
        f.profiles.insert(
            "prod".into(),
            Profile {
                gateway: Some("https://farm".into()),
                ..Default::default()
            },
        );
        assert_eq!(f.profile(None).unwrap(), Profile::default());
        f.current = Some("prod".into());
        assert_eq!(
            f.profile(None).unwrap().gateway.as_deref(),
            Some("https://farm")
        );
        assert!(f.profile(Some("staging")).is_err());
    }

    #[test]
    fn settings_have_names_and_keys_are_masked() {
        let mut p = Profile::default();
        p.set("api-key", Some("fak_0123456789abcdef".into()))
            .unwrap();
        assert_eq!(p.get("api-key"), Some("fak_0123456789abcdef"));
        assert!(p.set("colour", Some("blue".into())).is_err());
        assert_eq!(masked("fak_0123456789abcdef"), "fak_0123…");
    }
}
