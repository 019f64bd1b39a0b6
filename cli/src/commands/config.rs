//! `freeagent config`: profiles in the config file (`crate::config`): set, get, list, use,
//! path. Keys are shown masked.

use crate::config::{self, ConfigFile, KEYS};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set a setting of a profile: gateway, api-key or platform (the default of `submit`).
    Set { key: String, value: String },
    /// Remove a setting from a profile.
    Unset { key: String },
    /// Print a setting of a profile (an API key in full: it is yours).
    Get { key: String },
    /// List the profiles and their settings (keys masked); `*` marks the current one.
    List,
    /// Make a profile the current one.
    Use { profile: String },
    /// Print where the file is.
    Path,
}

/// `profile`: the `--profile` flag (or `FREEAGENT_PROFILE`).
pub fn run(command: ConfigCommand, profile: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut file = ConfigFile::load()?;
    let name = file.profile_name(profile);
    match command {
        ConfigCommand::Set { key, value } => {
            file.profiles
                .entry(name.clone())
                .or_default()
                .set(&key, Some(value))?;
            let path = file.save()?;
            eprintln!("{key} set in profile '{name}' ({})", path.display());
        }
        ConfigCommand::Unset { key } => {
            if let Some(p) = file.profiles.get_mut(&name) {
                p.set(&key, None)?;
            }
            file.save()?;
        }
        ConfigCommand::Get { key } => {
            if !KEYS.contains(&key.as_str()) {
                return Err(crate::exit::Usage(format!(
                    "no setting '{key}': the settings are {}",
                    KEYS.join(", ")
                ))
                .into());
            }
            match file.profile(profile)?.get(&key) {
                Some(v) => println!("{v}"),
                None => return Ok(ExitCode::from(crate::exit::FAILED)),
            }
        }
        ConfigCommand::List => {
            let current = file.profile_name(None);
            for (n, p) in &file.profiles {
                println!("{} {n}", if *n == current { "*" } else { " " });
                for key in KEYS {
                    if let Some(v) = p.get(key) {
                        let shown = if key == "api-key" {
                            config::masked(v)
                        } else {
                            v.to_owned()
                        };
                        println!("    {key:<9} {shown}");
                    }
                }
            }
        }
        ConfigCommand::Use { profile } => {
            if !file.profiles.contains_key(&profile) {
                return Err(crate::exit::Usage(format!(
                    "no profile '{profile}': create it with `freeagent config set gateway <url> --profile {profile}`"
                ))
                .into());
            }
            file.current = Some(profile.clone());
            file.save()?;
            eprintln!("profile '{profile}' is now the current one");
        }
        ConfigCommand::Path => println!("{}", config::path()?.display()),
    }
    Ok(ExitCode::SUCCESS)
}
