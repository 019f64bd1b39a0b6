//! The lines a build writes faster than its log may publish them (`log_stream`): held on disk,
//! in order, and published as the rate allows, so a burst is delayed, not dropped. The disk
//! holds a bounded amount; past it, lines in the middle give way and never the newest: the last
//! lines (`Bounds::tail_lines`) are always kept, behind a note of how many were dropped and
//! where. The same keeps a build's last lines past its byte cap.

use freeagent_shared::wire::{LogLevel, LogStream};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One line of an attempt's log from this worker, numbered from 1 in the order it was written
/// (the build's output and the worker's own lines about it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub level: LogLevel,
    pub message: String,
    pub n: u64,
    #[serde(default)]
    pub stream: Option<LogStream>,
}

/// Why lines were dropped: the rate (more than the spool could hold), or the byte cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    Rate,
    Bytes,
}

/// A run of dropped lines: `first..=last` of the attempt's log, `count` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub count: u64,
    pub first: u64,
    pub last: u64,
    pub why: Why,
}

/// What the log publishes next: a line, or a note where lines were dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Line(Line),
    Gap(Gap),
}

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Lines the disk spool holds (a rate's worth of seconds: the longest catch-up).
    pub spool_lines: u64,
    /// Bytes the spool file may reach.
    pub spool_bytes: u64,
    /// The newest lines always kept, and their bytes at most.
    pub tail_lines: usize,
    pub tail_bytes: usize,
}

/// A first-in first-out file of items, created on first use, unlinked (no other process can
/// open it) and emptied whenever it is drained. Reads and writes name their offsets.
struct Spool {
    file: Option<File>,
    read: u64,
    write: u64,
    lines: u64,
    failed: bool,
}

impl Spool {
    fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Appends `item`, or gives it back when the bounds (or the disk) leave no room.
    fn push(&mut self, item: Item, bounds: &Bounds) -> Result<(), Item> {
        if self.failed || self.lines >= bounds.spool_lines {
            return Err(item);
        }
        let Ok(body) = serde_json::to_vec(&item) else {
            return Err(item);
        };
        let len = body.len() as u64 + 4;
        if self.write + len > bounds.spool_bytes {
            return Err(item);
        }
        let mut record = (body.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&body);
        let written = match &self.file {
            Some(f) => f.write_all_at(&record, self.write),
            None => tempfile::tempfile().and_then(|f| {
                f.write_all_at(&record, self.write)?;
                self.file = Some(f);
                Ok(())
            }),
        };
        if let Err(e) = written {
            // Without a spool, a burst's middle gives way to its tail: nothing worse.
            tracing::warn!(error = %e, "cannot spool log lines to disk; lines over the rate will be dropped");
            self.failed = true;
            return Err(item);
        }
        self.write += len;
        self.lines += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<Item> {
        if self.lines == 0 {
            return None;
        }
        let f = self.file.as_ref()?;
        let mut len = [0u8; 4];
        let item = f.read_exact_at(&mut len, self.read).and_then(|_| {
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            f.read_exact_at(&mut body, self.read + 4)?;
            self.read += 4 + body.len() as u64;
            serde_json::from_slice::<Item>(&body).map_err(std::io::Error::other)
        });
        self.lines -= 1;
        if self.lines == 0 {
            (self.read, self.write) = (0, 0);
            let _ = f.set_len(0);
        }
        match item {
            Ok(item) => Some(item),
            Err(e) => {
                // Only this process wrote the file: unreadable means the disk failed.
                tracing::warn!(error = %e, "cannot read spooled log lines back; dropping the spool");
                (self.read, self.write, self.lines, self.failed) = (0, 0, 0, true);
                None
            }
        }
    }
}

/// Lines waiting to be published: the spool, then the newest lines that did not fit in it.
pub struct Backlog {
    bounds: Bounds,
    spool: Spool,
    /// Lines dropped just before `tail`'s first.
    gap: Option<Gap>,
    tail: VecDeque<Line>,
    tail_bytes: usize,
    /// Past the byte cap: only the tail is kept, and it goes out once the build has ended.
    sealed: bool,
}

impl Backlog {
    pub fn new(bounds: Bounds) -> Self {
        Backlog {
            bounds,
            spool: Spool {
                file: None,
                read: 0,
                write: 0,
                lines: 0,
                failed: false,
            },
            gap: None,
            tail: VecDeque::new(),
            tail_bytes: 0,
            sealed: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.spool.is_empty() && self.gap.is_none() && self.tail.is_empty()
    }

    /// Whether `pop` has something now (`ended`: the build's output is over).
    pub fn ready(&self, ended: bool) -> bool {
        !self.spool.is_empty() || ((ended || !self.sealed) && !self.is_empty())
    }

    /// Queues a line. `over_cap`: the build is past its byte cap, so from now on only its last
    /// lines are kept.
    pub fn push(&mut self, line: Line, over_cap: bool) {
        self.sealed |= over_cap;
        if !self.sealed {
            self.refill_spool();
            if self.tail.is_empty() && self.gap.is_none() {
                match self.spool.push(Item::Line(line), &self.bounds) {
                    Ok(()) => return,
                    Err(Item::Line(back)) => return self.keep_newest(back),
                    Err(Item::Gap(_)) => return,
                }
            }
        }
        self.keep_newest(line)
    }

    /// The next item to publish, oldest first.
    pub fn pop(&mut self, ended: bool) -> Option<Item> {
        if let Some(item) = self.spool.pop() {
            return Some(item);
        }
        if self.sealed && !ended {
            return None;
        }
        if let Some(gap) = self.gap.take() {
            return Some(Item::Gap(gap));
        }
        let line = self.tail.pop_front()?;
        self.tail_bytes -= line.message.len();
        Some(Item::Line(line))
    }

    /// Moves the tail (after its gap note) into the spool while it fits: what waits in the tail
    /// would otherwise give way to newer lines although the spool has room again.
    fn refill_spool(&mut self) {
        if let Some(gap) = self.gap.take()
            && let Err(Item::Gap(back)) = self.spool.push(Item::Gap(gap), &self.bounds)
        {
            self.gap = Some(back);
            return;
        }
        while let Some(line) = self.tail.pop_front() {
            let len = line.message.len();
            match self.spool.push(Item::Line(line), &self.bounds) {
                Ok(()) => self.tail_bytes -= len,
                Err(Item::Line(back)) => {
                    self.tail.push_front(back);
                    return;
                }
                Err(Item::Gap(_)) => return,
            }
        }
    }

    /// Keeps `line` among the newest; the oldest of those gives way past the tail's bounds.
    fn keep_newest(&mut self, line: Line) {
        self.tail_bytes += line.message.len();
        self.tail.push_back(line);
        let why = if self.sealed { Why::Bytes } else { Why::Rate };
        while self.tail.len() > self.bounds.tail_lines
            || (self.tail_bytes > self.bounds.tail_bytes && self.tail.len() > 1)
        {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.message.len();
            self.gap = Some(match self.gap {
                None => Gap {
                    count: 1,
                    first: old.n,
                    last: old.n,
                    why,
                },
                Some(g) => Gap {
                    count: g.count + 1,
                    first: g.first,
                    last: old.n,
                    why: if g.why == Why::Bytes { Why::Bytes } else { why },
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64) -> Line {
        Line {
            level: LogLevel::Info,
            message: format!("line {n}"),
            n,
            stream: None,
        }
    }

    fn bounds(spool_lines: u64, tail_lines: usize) -> Bounds {
        Bounds {
            spool_lines,
            spool_bytes: 1 << 20,
            tail_lines,
            tail_bytes: 1 << 20,
        }
    }

    fn drain(b: &mut Backlog, ended: bool) -> Vec<Item> {
        std::iter::from_fn(|| b.pop(ended)).collect()
    }

    #[test]
    fn a_burst_the_spool_holds_comes_out_whole_and_in_order() {
        let mut b = Backlog::new(bounds(1000, 10));
        for n in 1..=1000 {
            b.push(line(n), false);
        }
        let out = drain(&mut b, true);
        assert_eq!(
            out,
            (1..=1000).map(|n| Item::Line(line(n))).collect::<Vec<_>>()
        );
        assert!(b.is_empty());
    }

    #[test]
    fn past_the_spool_the_middle_gives_way_and_the_newest_are_kept() {
        let mut b = Backlog::new(bounds(100, 10));
        for n in 1..=1000 {
            b.push(line(n), false);
        }
        let out = drain(&mut b, true);
        let mut want: Vec<Item> = (1..=100).map(|n| Item::Line(line(n))).collect();
        want.push(Item::Gap(Gap {
            count: 890,
            first: 101,
            last: 990,
            why: Why::Rate,
        }));
        want.extend((991..=1000).map(|n| Item::Line(line(n))));
        assert_eq!(out, want);
    }

    #[test]
    fn the_tail_moves_into_the_spool_once_it_drains() {
        let mut b = Backlog::new(bounds(4, 2));
        for n in 1..=8 {
            b.push(line(n), false);
        }
        // Spool: 1-4; tail: 7, 8 after a gap of 5-6. Two lines are published.
        assert_eq!(b.pop(false), Some(Item::Line(line(1))));
        assert_eq!(b.pop(false), Some(Item::Line(line(2))));
        // The next line moves the gap note and 7 into the spool; 8 and 9 wait in the tail.
        b.push(line(9), false);
        let out = drain(&mut b, true);
        assert_eq!(
            out,
            vec![
                Item::Line(line(3)),
                Item::Line(line(4)),
                Item::Gap(Gap {
                    count: 2,
                    first: 5,
                    last: 6,
                    why: Why::Rate
                }),
                Item::Line(line(7)),
                Item::Line(line(8)),
                Item::Line(line(9)),
            ]
        );
    }

    #[test]
    fn past_the_byte_cap_only_the_last_lines_come_out_after_the_end() {
        let mut b = Backlog::new(bounds(1000, 3));
        b.push(line(1), false);
        for n in 2..=10 {
            b.push(line(n), true);
        }
        assert_eq!(b.pop(false), Some(Item::Line(line(1))));
        assert!(!b.ready(false), "the tail waits for the end");
        assert_eq!(b.pop(false), None);
        assert!(b.ready(true));
        let out = drain(&mut b, true);
        assert_eq!(
            out,
            vec![
                Item::Gap(Gap {
                    count: 6,
                    first: 2,
                    last: 7,
                    why: Why::Bytes
                }),
                Item::Line(line(8)),
                Item::Line(line(9)),
                Item::Line(line(10)),
            ]
        );
    }

    #[test]
    fn the_spool_file_is_reused_once_drained() {
        let mut b = Backlog::new(bounds(10, 10));
        for round in 0..5u64 {
            for n in 1..=10 {
                b.push(line(round * 10 + n), false);
            }
            assert_eq!(drain(&mut b, true).len(), 10);
            assert_eq!(b.spool.write, 0, "emptied after each drain");
        }
    }

    /// Pushes and pops interleaved in many ratios: every line comes out once, in order, or
    /// inside the one note that stands where it was dropped.
    #[test]
    fn interleaved_every_line_is_out_or_accounted_for() {
        for (pops_per_push, tail) in [(0.1, 10), (0.5, 10), (0.9, 50), (0.3, 1)] {
            let mut b = Backlog::new(bounds(100, tail));
            let (mut out, mut credit) = (Vec::new(), 0.0);
            for n in 1..=5000 {
                b.push(line(n), false);
                credit += pops_per_push;
                while credit >= 1.0 {
                    credit -= 1.0;
                    out.extend(b.pop(false));
                }
            }
            out.extend(drain(&mut b, true));
            let mut next = 1;
            for item in out {
                match item {
                    Item::Line(l) => {
                        assert_eq!(l.n, next, "ratio {pops_per_push}");
                        next += 1;
                    }
                    Item::Gap(g) => {
                        assert_eq!(g.first, next, "ratio {pops_per_push}");
                        assert_eq!(g.last - g.first + 1, g.count);
                        next = g.last + 1;
                    }
                }
            }
            assert_eq!(next, 5001);
        }
    }
}
