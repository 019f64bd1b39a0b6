//! The host list of `FREEAGENT_DATABASE_URL`, written as libpq takes it
//! (`postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`): sqlx reads one host
//! per URL, so the list is split here into one set of connection options per host, each with
//! everything else the URL says.

use crate::db::{Error, connect_options};
use sqlx::postgres::PgConnectOptions;

/// What to write, for error messages.
const URL_FORM: &str =
    "postgres://user:password@host1:5432,host2:5432/database?target_session_attrs=read-write";

/// Each host's connection options when `url` lists several; `None` when it names one, which is
/// then connected to exactly as before (the whole URL to sqlx).
pub fn host_list(url: &str) -> Result<Option<Vec<PgConnectOptions>>, Error> {
    let bad =
        |what: String| Error::BadUrl(format!("FREEAGENT_DATABASE_URL {what}; write {URL_FORM}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    // The authority ends where the path, query or fragment starts (as the `url` crate reads it).
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    if !hosts.contains(',') {
        return Ok(None);
    }
    let tail = without_session_attrs(tail).map_err(bad)?;
    hosts
        .split(',')
        .map(|host| {
            if host.trim().is_empty() {
                return Err(bad(
                    "lists an empty host (two commas, or one at an end)".into()
                ));
            }
            let one = match userinfo {
                Some(userinfo) => format!("{scheme}://{userinfo}@{host}{tail}"),
                None => format!("{scheme}://{host}{tail}"),
            };
            // The message names the host, never the URL: the URL may hold a password.
            connect_options(&one).map_err(|e| {
                let why = match e {
                    Error::BadUrl(why) => why,
                    e => e.to_string(),
                };
                bad(format!("has a host `{host}` that cannot be read ({why})"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The path and query without `target_session_attrs`, which sqlx does not know. With several
/// hosts the services always want the one that accepts writes, so only that may be asked for.
fn without_session_attrs(tail: &str) -> Result<String, String> {
    let Some((path, query)) = tail.split_once('?') else {
        return Ok(tail.to_owned());
    };
    let mut kept = vec![];
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("target_session_attrs", "read-write" | "primary")) => {}
            Some(("target_session_attrs", other)) => {
                return Err(format!(
                    "asks for target_session_attrs={other}, but the services write: with several \
                     hosts they use the one that accepts writes (read-write, or leave it out)"
                ));
            }
            _ => kept.push(pair),
        }
    }
    Ok(if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// `host:port`, for logs and messages (no user, no password).
pub fn name(opts: &PgConnectOptions) -> String {
    format!("{}:{}", opts.get_host(), opts.get_port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hosts(url: &str) -> Vec<PgConnectOptions> {
        host_list(url).unwrap().expect("a host list")
    }

    #[test]
    fn one_host_is_left_to_sqlx_as_before() {
        for url in [
            "postgres://u:pw@h1:5432/db",
            "postgres://u@h1/db?sslmode=disable",
            "postgres://h1",
            "postgres:///db?host=/run/postgresql",
            "not a url",
        ] {
            assert!(host_list(url).unwrap().is_none(), "{url}");
        }
    }

    #[test]
    fn a_host_list_gives_each_host_everything_else() {
        let list = hosts(
            "postgres://u:p%40ss@h1:5432,10.0.0.2:5433,[::1]:5434/farm?sslmode=disable&target_session_attrs=read-write",
        );
        let found: Vec<String> = list.iter().map(name).collect();
        assert_eq!(found, ["h1:5432", "10.0.0.2:5433", "[::1]:5434"]);
        for opts in &list {
            assert_eq!(opts.get_username(), "u");
            assert_eq!(opts.get_database(), Some("farm"));
            // The settings every connection gets (`connect_options`).
            assert!(
                opts.get_options()
                    .unwrap_or("")
                    .contains("statement_timeout")
            );
        }
    }

    #[test]
    fn a_host_without_a_port_gets_the_same_default_as_a_single_host() {
        let list = hosts("postgres://u@h1,h2:5433/db");
        let single = connect_options("postgres://u@h1/db").unwrap();
        assert_eq!(list[0].get_port(), single.get_port());
        assert_eq!(list[1].get_port(), 5433);
        // Without a user or a path the list is still read.
        assert_eq!(hosts("postgres://h1:1,h2:2").len(), 2);
    }

    #[test]
    fn bad_lists_say_what_to_write_and_never_show_the_password() {
        for (url, says) in [
            ("postgres://u:secret@h1:5432,,h2/db", "empty host"),
            ("postgres://u:secret@h1:5432,/db", "empty host"),
            ("postgres://u:secret@h1:port,h2/db", "`h1:port`"),
            (
                "postgres://u:secret@h1,h2/db?target_session_attrs=read-only",
                "target_session_attrs=read-only",
            ),
        ] {
            let e = host_list(url).expect_err(url).to_string();
            assert!(e.contains("FREEAGENT_DATABASE_URL"), "{e}");
            assert!(e.contains(says), "{e}");
            assert!(e.contains(URL_FORM), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn redact_hides_the_password_of_a_host_list() {
        assert_eq!(
            crate::db::redact("postgres://u:secret@h1:5432,h2:5433/db"),
            "postgres://u@h1:5432,h2:5433/db"
        );
    }
}
