//! The build's network. By default (`FREEAGENT_BUILD_NETWORK=isolated`) a build runs in a
//! network namespace of its own, joined to the host by a veth pair and NATed out, behind a
//! firewall table of its own that lets it reach the outside world and nothing of the farm's:
//! no address of the worker's machine (so none of its loopback or other services), no private,
//! link-local, shared or multicast range (so not the farm's other hosts nor a cloud metadata
//! endpoint), no other build; only the machine's DNS resolvers and an operator's allow-list
//! (`FREEAGENT_BUILD_NETWORK_ALLOW`) are let through. `none` gives the build loopback only;
//! `host` shares the worker's network (an operator's explicit choice, with a warning).
//! iproute2's `ip` and nftables' `nft` do the work, as util-linux's tools do the rest of the
//! sandbox: every Linux distribution ships them.

use freeagent_shared::config::{self, ConfigError};
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const MODE_VAR: &str = "FREEAGENT_BUILD_NETWORK";
pub const ALLOW_VAR: &str = "FREEAGENT_BUILD_NETWORK_ALLOW";
pub const SUBNET_VAR: &str = "FREEAGENT_BUILD_SUBNET";
/// Resolvers builds use instead of the machine's (comma-separated IPv4 addresses): for a
/// machine whose own resolver is a loopback stub builds cannot reach (Docker's `127.0.0.11`).
pub const DNS_VAR: &str = "FREEAGENT_BUILD_DNS";
/// Room for a /30 per sandbox uid (128): a /23. Rarely used by anyone's LAN; configurable.
pub const DEFAULT_SUBNET: &str = "10.254.254.0/23";
/// Ranges a build never reaches unless allowed: "this network", RFC 1918, shared address space,
/// loopback, link-local (the cloud metadata address 169.254.169.254), multicast and reserved.
const BLOCKED: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3";
/// Where systemd-resolved keeps the real upstream resolvers when `/etc/resolv.conf` names its
/// loopback stub (which a build's own namespace cannot reach).
const SYSTEMD_RESOLV: &str = "/run/systemd/resolve/resolv.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Isolated,
    Host,
    None,
}

/// How this worker's builds reach the network, checked at start.
#[derive(Debug, Clone)]
pub struct Network {
    pub mode: Mode,
    ip: PathBuf,
    nft: PathBuf,
    nsenter: PathBuf,
    /// The builds' subnet: its first address and prefix length.
    subnet: (Ipv4Addr, u32),
    allow: Vec<String>,
    resolvers: Vec<Ipv4Addr>,
    /// A resolv.conf to mount over the build's `/etc/resolv.conf` (systemd-resolved's real one).
    pub resolv_conf: Option<PathBuf>,
    mtu: u32,
}

/// One build's namespace and firewall table; removed when dropped.
#[derive(Debug)]
pub struct BuildNet {
    name: String,
    host_if: String,
    ip: PathBuf,
    nft: PathBuf,
}

impl Network {
    /// Reads the settings. `isolated` needs a root worker (it makes interfaces and firewall
    /// rules) and the tools; without them the worker refuses to start unless the operator
    /// chose `host` or `none`.
    pub fn from_env(can_isolate: bool) -> Result<Self, ConfigError> {
        let raw = config::string(MODE_VAR, "isolated");
        let mode = match raw.trim().to_ascii_lowercase().as_str() {
            "isolated" => Mode::Isolated,
            "host" => Mode::Host,
            "none" => Mode::None,
            _ => return Err(ConfigError::new(MODE_VAR, &raw, "isolated, host or none")),
        };
        let subnet_raw = config::string(SUBNET_VAR, DEFAULT_SUBNET);
        let subnet = parse_subnet(&subnet_raw).ok_or_else(|| {
            ConfigError::new(
                SUBNET_VAR,
                &subnet_raw,
                "an IPv4 /23 (or wider) no network of this machine uses, such as 10.254.254.0/23",
            )
        })?;
        let allow_raw = config::string(ALLOW_VAR, "");
        let allow = parse_allow(&allow_raw)?;
        let tool = |name: &str| super::find_tool(name).unwrap_or_else(|| name.into());
        let dns_raw = config::string(DNS_VAR, "");
        let (resolvers, resolv_conf) = match parse_dns(&dns_raw)? {
            Some(chosen) => {
                let file = std::env::temp_dir().join(format!(
                    "freeagent-build-resolv-{}.conf",
                    std::process::id()
                ));
                // Readable by the builds' uids, whatever the worker's umask.
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(&file, resolv_conf_of(&chosen))
                    .and_then(|()| {
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                    })
                    .map_err(|e| {
                        ConfigError::new(
                            DNS_VAR,
                            &dns_raw,
                            format!("a resolv.conf for builds could not be written ({e})"),
                        )
                    })?;
                (chosen, Some(file))
            }
            None => resolvers(),
        };
        let network = Network {
            mode,
            ip: tool("ip"),
            nft: tool("nft"),
            nsenter: tool("nsenter"),
            subnet,
            allow,
            resolvers,
            resolv_conf,
            mtu: uplink_mtu().unwrap_or(1500),
        };
        match mode {
            Mode::Host => tracing::warn!(
                "FREEAGENT_BUILD_NETWORK=host: builds share the worker's network and can reach every service it can (the farm's Postgres, NATS, the services' ports, the cloud metadata address)"
            ),
            Mode::Isolated if !can_isolate => {
                return Err(ConfigError::new(
                    MODE_VAR,
                    &raw,
                    "host (builds then reach whatever the worker can) or none: an isolated build network needs a worker running as root, with iproute2 and nftables installed (docs/sandbox.md)",
                ));
            }
            Mode::Isolated => {
                for (tool, package) in [
                    (&network.ip, "iproute2"),
                    (&network.nft, "nftables"),
                    (&network.nsenter, "util-linux"),
                ] {
                    if !tool.is_file() {
                        return Err(ConfigError::new(
                            MODE_VAR,
                            &raw,
                            format!(
                                "host or none, or install {package}: an isolated build network needs `{}`",
                                tool.display()
                            ),
                        ));
                    }
                }
                if network.resolvers.is_empty() {
                    tracing::warn!(
                        "no DNS resolver outside this machine found in /etc/resolv.conf: builds cannot resolve names (set FREEAGENT_BUILD_DNS to resolvers they may use, such as your network's or 1.1.1.1)"
                    );
                }
                enable_forwarding().map_err(|e| {
                    ConfigError::new(
                        MODE_VAR,
                        &raw,
                        format!(
                            "host or none: cannot turn on IPv4 forwarding for builds' traffic ({e})"
                        ),
                    )
                })?;
            }
            Mode::None => {}
        }
        Ok(network)
    }

    /// One line for the worker's log.
    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Isolated if self.allow.is_empty() => "network: the outside world only".into(),
            Mode::Isolated => format!(
                "network: the outside world only, and {}",
                self.allow.join(", ")
            ),
            Mode::Host => "network: the worker's (not isolated)".into(),
            Mode::None => "network: loopback only".into(),
        }
    }

    /// The program that enters a build's network namespace, with its arguments.
    pub fn enter(&self, net: &BuildNet) -> [String; 2] {
        [
            self.nsenter.display().to_string(),
            format!("--net=/run/netns/{}", net.name),
        ]
    }

    /// Makes the namespace, link, addresses and firewall table of the build running as sandbox
    /// `uid` (one build per uid at a time, machine-wide; its /30 is the uid's slot among 128).
    /// Whatever a dead worker left for that uid is removed first.
    pub fn attach(&self, uid: u32) -> std::io::Result<BuildNet> {
        let base = u32::from(self.subnet.0) + (uid % super::UID_SPAN) * 4;
        let (host, build) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let net = BuildNet {
            name: format!("freeagent-build-{uid}"),
            host_if: format!("fa-{uid}"),
            ip: self.ip.clone(),
            nft: self.nft.clone(),
        };
        // Only a dead worker leaves anything for this uid (the table is replaced atomically
        // below): no process runs for the common case.
        if Path::new(&format!("/sys/class/net/{}", net.host_if)).exists()
            || Path::new(&format!("/run/netns/{}", net.name)).exists()
        {
            net.remove();
        }
        // Workers starting side by side on a fresh machine race to set up /run/netns itself;
        // the loser's first try fails.
        let mut tries = 0;
        while let Err(e) = run(&self.ip, &["netns", "add", &net.name], None) {
            tries += 1;
            if tries == 3 {
                return Err(e);
            }
            let _ = std::fs::remove_file(format!("/run/netns/{}", net.name));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mtu = self.mtu.to_string();
        let host_side = format!(
            "link add {h} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {n}\n\
             addr add {host}/30 dev {h}\n\
             link set {h} up\n",
            h = net.host_if,
            n = net.name,
        );
        run(&self.ip, &["-batch", "-"], Some(&host_side))?;
        let build_side = format!(
            "link set lo up\n\
             addr add {build}/30 dev eth0\n\
             link set eth0 up\n\
             route add default via {host}\n"
        );
        run(
            &self.ip,
            &["-n", &net.name, "-batch", "-"],
            Some(&build_side),
        )?;
        let rules = self.rules(&net, Ipv4Addr::from(base));
        run(&self.nft, &["-f", "-"], Some(&rules))?;
        Ok(net)
    }

    /// The build's firewall table: in the host's `input` path nothing from the build is
    /// accepted but replies; forwarded, it reaches the resolvers (port 53), the allow-list, and
    /// any address outside the blocked ranges; nothing reaches the build unasked; its traffic
    /// leaves with the host's address.
    fn rules(&self, net: &BuildNet, slot_net: Ipv4Addr) -> String {
        let table = net.table();
        let h = &net.host_if;
        let (subnet, bits) = self.subnet;
        // One rule per entry: an operator's entries may overlap, and nft refuses overlapping
        // intervals in one set.
        let mut dns = String::new();
        for r in &self.resolvers {
            for proto in ["udp", "tcp"] {
                dns.push_str(&format!(
                    "    iifname \"{h}\" ip daddr {r} {proto} dport 53 accept\n"
                ));
            }
        }
        let mut allowed = String::new();
        for a in &self.allow {
            allowed.push_str(&format!("    iifname \"{h}\" ip daddr {a} accept\n"));
        }
        format!(
            "table inet {table}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority -10; policy accept;\n\
             \x20   iifname \"{h}\" ct state established,related accept\n\
             {dns}\
             \x20   iifname \"{h}\" drop\n\
             \x20 }}\n\
             \x20 chain forward {{\n\
             \x20   type filter hook forward priority -10; policy accept;\n\
             \x20   oifname \"{h}\" ct state established,related accept\n\
             \x20   oifname \"{h}\" drop\n\
             \x20   iifname \"{h}\" meta nfproto ipv6 drop\n\
             {dns}\
             {allowed}\
             \x20   iifname \"{h}\" ip daddr {{ {BLOCKED} }} drop\n\
             \x20   iifname \"{h}\" ip daddr {subnet}/{bits} drop\n\
             \x20   iifname \"{h}\" accept\n\
             \x20 }}\n\
             \x20 chain nat {{\n\
             \x20   type nat hook postrouting priority 100; policy accept;\n\
             \x20   ip saddr {slot_net}/30 oifname != \"{h}\" masquerade\n\
             \x20 }}\n\
             }}\n"
        )
    }
}

impl BuildNet {
    fn table(&self) -> String {
        self.name.replace('-', "_")
    }

    /// Deleting the host's end of the link deletes the pair at once (a namespace's devices go
    /// only some time after the namespace).
    fn remove(&self) {
        let quiet = |cmd: &Path, args: &[&str]| {
            let _ = Command::new(cmd)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&self.ip, &["link", "del", &self.host_if]);
        quiet(&self.ip, &["netns", "del", &self.name]);
        quiet(&self.nft, &["delete", "table", "inet", &self.table()]);
    }
}

impl Drop for BuildNet {
    fn drop(&mut self) {
        self.remove();
    }
}

fn run(cmd: &Path, args: &[&str], stdin: Option<&str>) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", cmd.display())))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} {} failed: {}",
            cmd.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The subnet's first address and prefix, if it is an IPv4 network of /23 or wider on its
/// boundary.
pub(super) fn parse_subnet(raw: &str) -> Option<(Ipv4Addr, u32)> {
    let (addr, bits) = raw.trim().split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let host_bits = 32u32.checked_sub(bits)?;
    let on_boundary = (u32::from(addr) & ((1u64 << host_bits) - 1) as u32) == 0;
    ((9..=23).contains(&bits) && on_boundary).then_some((addr, bits))
}

/// `FREEAGENT_BUILD_NETWORK_ALLOW`: IPv4 addresses, networks (`10.1.2.0/24`) and host names
/// (resolved once, at start), separated by commas.
pub(super) fn parse_allow(raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ConfigError::new(ALLOW_VAR, raw, format!("{why}: `{item}`"));
        if let Some((addr, bits)) = item.split_once('/') {
            let ok = addr.parse::<Ipv4Addr>().is_ok()
                && bits.parse::<u8>().is_ok_and(|b| (1..=32).contains(&b));
            if !ok {
                return Err(bad("not an IPv4 network such as 10.1.2.0/24"));
            }
            out.push(item.to_owned());
        } else if let Ok(a) = item.parse::<Ipv4Addr>() {
            out.push(a.to_string());
        } else if item
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            let addrs: Vec<String> = (item, 0)
                .to_socket_addrs()
                .map_err(|e| bad(&format!("cannot resolve ({e})")))?
                .filter(|a| a.is_ipv4())
                .map(|a| a.ip().to_string())
                .collect();
            if addrs.is_empty() {
                return Err(bad("has no IPv4 address"));
            }
            out.extend(addrs);
        } else {
            return Err(bad("not an IPv4 address, network or host name"));
        }
    }
    Ok(out)
}

/// The machine's DNS resolvers a build may use, and a resolv.conf to show it instead of the
/// machine's when that names only a loopback stub.
fn resolvers() -> (Vec<Ipv4Addr>, Option<PathBuf>) {
    let read = |p: &str| nameservers(&std::fs::read_to_string(p).unwrap_or_default());
    let own = read("/etc/resolv.conf");
    let outside: Vec<Ipv4Addr> = own.iter().copied().filter(|a| !a.is_loopback()).collect();
    if !outside.is_empty() || own.is_empty() {
        return (outside, None);
    }
    let upstream: Vec<Ipv4Addr> = read(SYSTEMD_RESOLV)
        .into_iter()
        .filter(|a| !a.is_loopback())
        .collect();
    if upstream.is_empty() {
        (vec![], None)
    } else {
        (upstream, Some(SYSTEMD_RESOLV.into()))
    }
}

/// `FREEAGENT_BUILD_DNS`: none, or IPv4 addresses outside loopback.
fn parse_dns(raw: &str) -> Result<Option<Vec<Ipv4Addr>>, ConfigError> {
    let parts: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(None);
    }
    parts
        .iter()
        .map(|p| p.parse::<Ipv4Addr>().ok().filter(|a| !a.is_loopback() && !a.is_unspecified()))
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(|| {
            ConfigError::new(
                DNS_VAR,
                raw,
                "IPv4 addresses of DNS resolvers outside this machine, separated by commas (1.1.1.1,8.8.8.8)",
            )
        })
}

fn resolv_conf_of(resolvers: &[Ipv4Addr]) -> String {
    resolvers
        .iter()
        .map(|a| format!("nameserver {a}\n"))
        .collect()
}

pub(super) fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

/// The MTU of the interface the default route leaves by: a build's link must not be larger,
/// or big downloads stall where the path is narrower.
fn uplink_mtu() -> Option<u32> {
    let route = std::fs::read_to_string("/proc/net/route").ok()?;
    let dev = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000")).then(|| f[0].to_owned())
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn enable_forwarding() -> std::io::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() != "1" {
        tracing::info!("turning on IPv4 forwarding (net.ipv4.ip_forward=1) for builds' traffic");
        std::fs::write(path, "1")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_must_hold_a_slot_for_every_sandbox_uid() {
        assert_eq!(
            parse_subnet("10.254.254.0/23"),
            Some((Ipv4Addr::new(10, 254, 254, 0), 23))
        );
        assert_eq!(
            parse_subnet("172.20.0.0/16"),
            Some((Ipv4Addr::new(172, 20, 0, 0), 16))
        );
        assert_eq!(parse_subnet("10.254.254.0/24"), None);
        assert_eq!(parse_subnet("10.254.254.4/23"), None);
        assert_eq!(parse_subnet("banana"), None);
    }

    #[test]
    fn the_allow_list_takes_addresses_networks_and_names() {
        assert_eq!(
            parse_allow("10.1.2.3, 192.168.7.0/24,localhost").unwrap(),
            ["10.1.2.3", "192.168.7.0/24", "127.0.0.1"]
        );
        assert!(parse_allow("10.1.2.0/40").is_err());
        assert!(parse_allow("a b").is_err());
        assert!(parse_allow("").unwrap().is_empty());
    }

    #[test]
    fn chosen_resolvers_replace_the_machines() {
        assert_eq!(parse_dns("").unwrap(), None);
        let chosen = parse_dns(" 1.1.1.1, 10.0.0.53 ").unwrap().unwrap();
        assert_eq!(
            chosen,
            [Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(10, 0, 0, 53)]
        );
        assert_eq!(nameservers(&resolv_conf_of(&chosen)), chosen);
        for bad in ["127.0.0.11", "resolver", "1.1.1.1,::1", "0.0.0.0"] {
            assert!(parse_dns(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolvers_come_from_resolv_conf() {
        let conf = "# generated\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\nnameserver 127.0.0.53\n";
        assert_eq!(
            nameservers(conf),
            [
                Ipv4Addr::new(10, 255, 255, 53),
                Ipv4Addr::new(127, 0, 0, 53)
            ]
        );
    }
}
