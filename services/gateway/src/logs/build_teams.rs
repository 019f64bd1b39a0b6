//! Which team each build belongs to, for the event stream's readers that see one team only: an
//! event names its build, not its team, and a build never changes team, so each build costs one
//! lookup per gateway however many streams filter its events.

use freeagent_shared::db::{self, Pool};
use freeagent_shared::ids::BuildId;
use freeagent_shared::team::TeamName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bounds memory; the cache simply starts over when full.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Default)]
pub struct BuildTeams {
    inner: Arc<Mutex<HashMap<BuildId, TeamName>>>,
}

impl BuildTeams {
    /// The build's team; `None` for an unknown build or when the database cannot say (the
    /// caller then shows nothing rather than something of another team).
    pub async fn team_of(&self, pool: &Pool, id: BuildId) -> Option<TeamName> {
        if let Some(t) = self.inner.lock().ok()?.get(&id) {
            return Some(t.clone());
        }
        let team = match db::builds::build_team(pool, id).await {
            Ok(t) => t?,
            Err(e) => {
                tracing::warn!(build_id = %id, error = %e, "cannot read a build's team; its event is not shown to team-scoped streams");
                return None;
            }
        };
        if let Ok(mut map) = self.inner.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(id, team.clone());
        }
        Some(team)
    }
}
