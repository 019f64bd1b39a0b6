//! Hosts of their own on one machine: each a Linux network namespace with its own address on a
//! private /24, joined to the test's own namespace by a veth pair on a bridge that holds the
//! subnet's first address. The test makes them and removes them (as root, with `ip`). Loss is
//! nftables in a host's namespace, and a partition is its link set down. Latency is a delay the
//! farm's proxies add on the way from the hosts (`Hosts::delay`), because this kernel has no
//! `tc netem`. No traffic leaves the machine: the subnet is routed nowhere.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Hosts {
    /// Short and unique per set: interface names may not pass 15 characters.
    tag: String,
    net: [u8; 3],
    count: usize,
    /// One-way delay on the hosts' connections to the farm.
    pub delay: std::time::Duration,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    /// `count` hosts, `10.<a>.<b>.2` and up; the test's own namespace is `10.<a>.<b>.1`.
    pub fn new(count: usize) -> Hosts {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{n:x}", pid % 0xffff);
        let net = [10, 100 + (pid % 100) as u8, (n % 250) as u8];
        let hosts = Hosts {
            tag,
            net,
            count,
            delay: std::time::Duration::ZERO,
        };
        // A set left behind by a killed run of this process id: start clean.
        hosts.remove();
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.own_addr()),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..count {
            let (ns, outside) = (hosts.namespace(i), hosts.link(i));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            let addr = format!("{}/24", hosts.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// The same hosts, `delay` away from the farm each way (as `Hosts::delay` says how).
    pub fn with_delay(mut self, delay: std::time::Duration) -> Hosts {
        self.delay = delay;
        self
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The address of the test's own namespace on the hosts' subnet (the bridge's).
    pub fn own_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 1)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 2 + i as u8)
    }

    /// Host `i`'s network namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("fa-{}-{i}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("fab{}", self.tag)
    }

    /// Host `i`'s end of its link on the test's side.
    fn link(&self, i: usize) -> String {
        format!("fav{}x{i}", self.tag)
    }

    /// `program` to run on host `i` (`ip netns exec` replaces itself with it: the child's id
    /// is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace(i)]).arg(program);
        c
    }

    /// Drops `percent` of the packets host `i` sends or receives, at random (nftables in the
    /// host's namespace). This kernel has no `tc netem`: latency is added where the hosts reach
    /// the farm instead (`Hosts::delay`, applied by the farm's proxies on the test's address).
    pub fn loss(&self, i: usize, percent: u8) {
        let ns = self.namespace(i);
        let nft = |args: &[&str]| {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "nft"])
                .args(args)
                .output()
                .expect("run nft");
            assert!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let drop = format!("numgen random mod 100 < {percent} drop");
        nft(&["add", "table", "inet", "loss"]);
        for (chain, hook, dir) in [("in", "input", "iifname"), ("out", "output", "oifname")] {
            nft(&[
                "add",
                "chain",
                "inet",
                "loss",
                chain,
                &format!("{{ type filter hook {hook} priority 0; policy accept; }}"),
            ]);
            nft(&["add", "rule", "inet", "loss", chain, dir, "eth0", &drop]);
        }
    }

    /// Cuts host `i` off: its link goes down (its connections stay open, unanswered).
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "down"]);
    }

    /// Joins host `i` again.
    pub fn mend(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "up"]);
    }

    fn remove(&self) {
        for i in 0..self.count {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The namespaces take their veth ends with them.
        self.remove();
    }
}
