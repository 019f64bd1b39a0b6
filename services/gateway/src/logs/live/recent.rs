//! The recent lines of each build, kept by the feed as they pass, so a follower joining a
//! running build reads its past from memory instead of opening a consumer on `LOGS` (at a
//! thousand followers connecting at once, those consumers were what NATS spent its time on).
//!
//! A build's buffer holds every line the feed handed on for it from its first line held
//! (`first_seq`) on: lines leave only from the front (the build's cap) or with the whole
//! buffer (the gateway's cap, least recently written first; once its log is archived; and
//! `KEEP_ENDED` after the build ended). A follower checks with one stream lookup that nothing
//! older than `first_seq` is missing; the archiver, that and each writer's last line.

use super::LiveLine;
use crate::config::RecentLimits;
use freeagent_shared::ids::BuildId;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an ended build's lines stay for the log archiver to write from memory (it runs a
/// second after the end, more under a backlog; past this it reads the stream). Gateways that do
/// not archive the build drop them then, at the next build's end.
const KEEP_ENDED: Duration = Duration::from_secs(60);

/// Bytes a line costs besides its text (the struct, its JSON's fields).
const LINE_OVERHEAD: usize = 256;

#[derive(Default)]
struct Lines {
    lines: VecDeque<Arc<LiveLine>>,
    bytes: usize,
    /// The sequence of the last line added (for evicting the least recently written).
    last_seq: u64,
}

#[derive(Default)]
pub struct Recent {
    limits: RecentLimits,
    builds: HashMap<BuildId, Lines>,
    bytes: usize,
    /// Ended builds, oldest end first.
    ended: VecDeque<(Instant, BuildId)>,
}

fn cost(l: &LiveLine) -> usize {
    l.sse.len() + l.line.message.len() + LINE_OVERHEAD
}

impl Recent {
    pub fn new(limits: RecentLimits) -> Self {
        Recent {
            limits,
            ..Default::default()
        }
    }

    pub fn push(&mut self, line: Arc<LiveLine>) {
        let c = cost(&line);
        let b = self.builds.entry(line.line.build_id).or_default();
        b.last_seq = line.seq;
        b.bytes += c;
        self.bytes += c;
        b.lines.push_back(line);
        while b.bytes > self.limits.build_bytes {
            let Some(old) = b.lines.pop_front() else {
                break;
            };
            let c = cost(&old);
            b.bytes -= c;
            self.bytes -= c;
        }
        if self.bytes > self.limits.total_bytes {
            self.evict();
        }
    }

    /// Drops whole buffers, least recently written first, to 90% of the cap (so the scan is
    /// not paid at every line).
    fn evict(&mut self) {
        let goal = self.limits.total_bytes / 10 * 9;
        let mut by_age: Vec<(u64, BuildId)> = self
            .builds
            .iter()
            .map(|(id, b)| (b.last_seq, *id))
            .collect();
        by_age.sort_unstable();
        for (_, id) in by_age {
            if self.bytes <= goal {
                break;
            }
            self.forget(id);
        }
    }

    /// The build ended: its lines stay `KEEP_ENDED` for the archiver; builds ended longer ago
    /// are dropped.
    pub fn ended(&mut self, build: BuildId, now: Instant) {
        while let Some(&(at, old)) = self.ended.front() {
            if now.duration_since(at) < KEEP_ENDED {
                break;
            }
            self.ended.pop_front();
            self.forget(old);
        }
        if self.builds.contains_key(&build) {
            self.ended.push_back((now, build));
        }
    }

    /// The build's log is archived (or its lines are not wanted any more).
    pub fn forget(&mut self, build: BuildId) {
        if let Some(b) = self.builds.remove(&build) {
            self.bytes -= b.bytes;
        }
    }

    /// The build's lines held, oldest first.
    pub fn lines(&self, build: BuildId) -> Vec<Arc<LiveLine>> {
        self.builds
            .get(&build)
            .map(|b| b.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freeagent_shared::subjects::LogWriter;
    use freeagent_shared::testing::factory::farm_line;

    fn line(build: BuildId, seq: u64, text: &str) -> Arc<LiveLine> {
        Arc::new(LiveLine {
            seq,
            writer: LogWriter::Farm,
            line: farm_line(build, seq, text.into()),
            sse: bytes::Bytes::copy_from_slice(text.as_bytes()),
            received: std::time::Instant::now(),
        })
    }

    #[test]
    fn a_build_keeps_its_newest_lines_in_order_within_its_cap() {
        let mut r = Recent::new(RecentLimits {
            total_bytes: 1 << 20,
            build_bytes: 3 * (LINE_OVERHEAD + 2),
        });
        let b = BuildId::new();
        for seq in 1..=5 {
            r.push(line(b, seq, "x"));
        }
        let seqs: Vec<u64> = r.lines(b).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(r.bytes(), 3 * (LINE_OVERHEAD + 2));
    }

    #[test]
    fn an_ended_builds_lines_stay_until_archived_or_for_keep_ended() {
        let mut r = Recent::new(RecentLimits {
            total_bytes: 1 << 20,
            build_bytes: 1 << 20,
        });
        let (archived, kept, later) = (BuildId::new(), BuildId::new(), BuildId::new());
        let t0 = Instant::now();
        r.push(line(archived, 1, "x"));
        r.push(line(kept, 2, "x"));
        r.push(line(later, 3, "x"));
        r.ended(archived, t0);
        r.ended(kept, t0);
        assert_eq!(r.lines(kept).len(), 1, "an ended build's lines stay");
        r.forget(archived);
        assert!(r.lines(archived).is_empty());
        r.ended(later, t0 + KEEP_ENDED);
        assert!(r.lines(kept).is_empty(), "dropped KEEP_ENDED after its end");
        assert_eq!(r.lines(later).len(), 1);
        assert_eq!(r.bytes(), LINE_OVERHEAD + 2);
    }

    #[test]
    fn past_the_gateways_cap_the_least_recently_written_build_goes_whole() {
        let mut r = Recent::new(RecentLimits {
            total_bytes: 4 * (LINE_OVERHEAD + 2),
            build_bytes: 1 << 20,
        });
        let (old, new) = (BuildId::new(), BuildId::new());
        r.push(line(old, 1, "x"));
        r.push(line(old, 2, "x"));
        r.push(line(new, 3, "x"));
        r.push(line(new, 4, "x"));
        r.push(line(new, 5, "x"));
        assert!(r.lines(old).is_empty());
        assert_eq!(r.lines(new).len(), 3);
        r.forget(new);
        assert_eq!(r.bytes(), 0);
    }
}
