//! Every query on `teams`. A team exists once a key names it; teams are never renamed or
//! deleted (builds carry the name), so there is nothing else to do to one.

use super::Error;
use crate::team::TeamName;
use sqlx::PgExecutor;

/// Makes the team if it does not exist yet.
pub async fn team_ensure(db: impl PgExecutor<'_>, team: &TeamName) -> Result<(), Error> {
    sqlx::query(crate::db::sql!("sql/teams/ensure.sql"))
        .bind(team)
        .execute(db)
        .await?;
    Ok(())
}
