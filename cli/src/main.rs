//! `freeagent`: submit builds and follow them, and run the whole farm on one machine.

mod archive;
mod client;
mod commands;
mod config;
mod exit;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "freeagent",
    version,
    about = "Free Agent build farm: submit builds, follow them, run the farm locally"
)]
struct Cli {
    /// Gateway URL [default: the profile's, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "FREEAGENT_GATEWAY_URL")]
    gateway: Option<String>,
    /// API key (X-API-Key).
    #[arg(long, global = true, env = "FREEAGENT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Build token, instead of an API key, for commands about one build.
    #[arg(
        long,
        global = true,
        env = "FREEAGENT_BUILD_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The profile of the config file to use (`freeagent config`) [default: its current one].
    #[arg(long, global = true, env = "FREEAGENT_PROFILE")]
    profile: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole farm on this machine: storage, scheduler, gateway and workers.
    Dev(commands::dev::DevArgs),
    /// Write a NATS server configuration with auth, and the farm's credentials and keys.
    NatsConfig(commands::nats::NatsConfigArgs),
    /// Submit a project directory or archive.
    Submit {
        /// A directory (packed as tar.gz) or a .zip / .tar.gz archive.
        path: PathBuf,
        /// ios or android [default: the profile's platform].
        #[arg(long, short)]
        platform: Option<String>,
        /// Signing credentials file.
        #[arg(long)]
        certs: Option<PathBuf>,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// One metadata entry, key=value (repeatable; over --metadata's). In a git repository
        /// the branch and commit are added as git_branch and git_commit unless given.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Leave out the git branch and commit.
        #[arg(long)]
        no_git_meta: bool,
        /// Print the build's token on standard output too (it opens the build for whoever
        /// holds it).
        #[arg(long)]
        show_token: bool,
        /// Higher runs first among the builds waiting in its queue [default: 0].
        #[arg(long)]
        priority: Option<i32>,
        /// The queue to wait in ([a-z0-9_-], up to 64) [default: the platform].
        #[arg(long)]
        queue: Option<String>,
        /// Wait until the build ends; exit non-zero unless it completed.
        #[arg(long)]
        wait: bool,
        /// Show the build's log live with its status changes, until it ends; exit non-zero
        /// unless it completed.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a build.
    Status {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Print a build's log; with --follow, as it grows, until the build ends (exit status: the
    /// build's outcome), reconnecting and resuming after a dropped connection.
    Logs {
        id: String,
        /// Follow the log as it grows until the build ends.
        #[arg(short, long)]
        follow: bool,
        /// With --follow: stop following after this long (30s, 10m, 2h) and exit 124; the
        /// build goes on.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// One JSON object per line (seq, timestamp, level, message, attempt, writer).
        #[arg(long)]
        json: bool,
    },
    /// Show a build's log live with its status changes until it ends (exit status: the
    /// build's outcome).
    Watch {
        id: String,
        /// Stop watching after this long (30s, 10m, 2h) and exit 124; the build goes on.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// The log as one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Download a build's artifact and check its SHA-256.
    Download {
        id: String,
        /// Where to save it [default: the name the gateway gives, in this directory].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// result (default), source or logs.
        #[arg(long, default_value = "result")]
        kind: String,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// List builds, newest first (paging: the cursor printed on stderr).
    List {
        /// pending, assigned, building, completed, failed or cancelled
        #[arg(long)]
        status: Option<String>,
        /// ios or android
        #[arg(long)]
        platform: Option<String>,
        /// Only builds of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// A worker id: the builds it holds or ran last.
        #[arg(long)]
        worker: Option<String>,
        /// A team's builds (admin keys; any other key lists its own team's).
        #[arg(long)]
        team: Option<String>,
        /// Only the builds this key submitted (or retried).
        #[arg(long)]
        mine: bool,
        /// 1 to 500.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The next page's cursor, as the previous page printed it.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a build (its running processes are stopped).
    Cancel {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Run a build again with the same source, certs and settings; prints the new build's id
    /// (and, with --json, its token).
    Retry {
        id: String,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Create, list and revoke API keys (needs an admin key).
    Keys {
        #[command(subcommand)]
        command: commands::keys::KeysCommand,
    },
    /// List workers; approve, drain and undrain them (an admin key for the changes).
    Workers {
        #[command(subcommand)]
        command: commands::workers::WorkersCommand,
    },
    /// Profiles in the config file: the gateway, API key and default platform to use.
    Config {
        #[command(subcommand)]
        command: commands::config::ConfigCommand,
    },
    /// Each queue's pending builds and live workers (`freeagent status <id>` says where a
    /// pending build waits and why).
    Queue {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Check this machine against the farm: the gateway answers, the farm is ready, the clock
    /// agrees, the credential works, the releases match; each failure says what to do.
    Doctor {
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `freeagent completions bash > /etc/bash_completion.d/freeagent`.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config { command } = cli.command {
        return commands::config::run(command, cli.profile.as_deref()).unwrap_or_else(exit::report);
    }
    // Flags and the environment first, then the profile, then the defaults.
    let profile = match config::ConfigFile::load().and_then(|f| f.profile(cli.profile.as_deref())) {
        Ok(p) => p,
        Err(e) => return exit::report(e),
    };
    let gateway = cli
        .gateway
        .clone()
        .or(profile.gateway.clone())
        .unwrap_or_else(|| config::DEFAULT_GATEWAY.to_owned());
    let api_key = cli.api_key.clone().or(profile.api_key.clone());
    let client = client::Client::new(&gateway, api_key.clone(), cli.token.clone());
    let result = match cli.command {
        Command::Config { .. } => Ok(ExitCode::SUCCESS),
        Command::Dev(args) => commands::dev::run(args).await,
        Command::NatsConfig(args) => commands::nats::config(args),
        Command::Submit {
            path,
            platform,
            certs,
            metadata,
            meta,
            no_git_meta,
            show_token,
            priority,
            queue,
            wait,
            follow,
            json,
        } => {
            let Some(platform) = platform.or(profile.platform.clone()) else {
                return exit::report(
                    exit::Usage(
                        "no platform: pass --platform ios|android, or set a default with `freeagent config set platform android`".into(),
                    )
                    .into(),
                );
            };
            let opts = commands::submit::SubmitOpts {
                path,
                platform,
                certs,
                metadata,
                meta,
                git_meta: !no_git_meta,
                show_token,
                priority,
                queue,
                wait,
                follow,
                json,
            };
            commands::submit::run(&client, opts).await
        }
        Command::Status { id, json } => commands::status::run(&client, &id, json).await,
        Command::Logs {
            id,
            follow: false,
            json,
            ..
        } => commands::status::logs(&client, &id, json).await,
        Command::Logs {
            id,
            follow: true,
            timeout,
            json,
        } => commands::follow::run(&client, &id, false, timeout, json).await,
        Command::Watch { id, timeout, json } => {
            commands::follow::run(&client, &id, true, timeout, json).await
        }
        Command::Download {
            id,
            output,
            kind,
            force,
            json,
        } => {
            let opts = commands::download::DownloadOpts {
                kind,
                output,
                force,
                json,
            };
            commands::download::run(&client, &id, opts).await
        }
        Command::List {
            status,
            platform,
            queue,
            worker,
            team,
            mine,
            limit,
            cursor,
            json,
        } => {
            let args = commands::builds::ListArgs {
                mine,
                status,
                platform,
                queue,
                worker,
                team,
                limit,
                cursor,
                json,
            };
            commands::builds::list(&client, args).await
        }
        Command::Cancel { id, json } => commands::builds::cancel(&client, &id, json).await,
        Command::Retry { id, json } => commands::builds::retry(&client, &id, json).await,
        Command::Keys { command } => commands::keys::run(&client, command).await,
        Command::Workers { command } => commands::workers::run(&client, command).await,
        Command::Queue { json } => commands::status::queues(&client, json).await,
        Command::Doctor { json } => {
            commands::doctor::run(&client, api_key.is_some(), cli.token.is_some(), json).await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Generated in memory: a closed pipe is then a write error to handle, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "freeagent", &mut script);
            std::io::stdout()
                .write_all(&script)
                .map(|()| ExitCode::SUCCESS)
                .or_else(client::closed_pipe_is_the_end)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => exit::report(e),
    }
}
