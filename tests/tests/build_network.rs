//! A build's network, with the real binaries and a host of the test's own standing for "the
//! internet" (a network namespace joined to this machine by a veth pair: nothing leaves the
//! machine). The attack it replays: a build connected to Postgres on 127.0.0.1:5432, to NATS
//! and to the services' ports. Now a build reaches the outside world, the hosts an operator
//! allows, and nothing else: not this machine's loopback or addresses, not private ranges, not
//! the cloud metadata address. `none` reaches nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use freeagent_tests::{Farm, FarmOpts, is_root, project};
use std::process::Command;
use std::time::Duration;

/// A host outside the farm: a network namespace with three addresses on one veth pair (a
/// public one, a private one the test allows, a private one it does not) and a TCP server on
/// each that answers "hello". Each test run takes a free /30 of each range (a lock file per
/// index), so suites side by side never collide. Removed on drop.
struct OutsideHost {
    ns: String,
    host_if: String,
    public: String,
    allowed: String,
    private: String,
    _lock: std::fs::File,
    server: std::process::Child,
}

const PORT: u16 = 8080;

impl OutsideHost {
    fn start() -> OutsideHost {
        let (index, lock) = (0..60u32)
            .find_map(|i| {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(format!("/run/freeagent-test-outside-{i}.lock"))
                    .ok()?;
                f.try_lock().ok().map(|()| (i, f))
            })
            .expect("a free outside-host slot");
        let ns = format!("fa-test-outside-{index}");
        let host_if = format!("fa-test-o{index}");
        let addr = |net: &str, n: u32| format!("{net}.{}", index * 4 + n);
        let nets = ["198.51.100", "192.168.77", "192.168.78"];
        // A leftover of a killed run goes first.
        let _ = Command::new("ip").args(["link", "del", &host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        for net in nets {
            ip(&[
                "addr",
                "add",
                &format!("{}/30", addr(net, 1)),
                "dev",
                &host_if,
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/30", addr(net, 2)),
                "dev",
                "eth0",
            ]);
        }
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c"])
            .arg(format!(
                "import socketserver\n\
                 class H(socketserver.BaseRequestHandler):\n\
                 \x20   def handle(self): self.request.sendall(b'hello')\n\
                 socketserver.ThreadingTCPServer.allow_reuse_address = True\n\
                 socketserver.ThreadingTCPServer(('0.0.0.0', {PORT}), H).serve_forever()\n"
            ))
            .spawn()
            .unwrap();
        let host = OutsideHost {
            public: addr(nets[0], 2),
            allowed: addr(nets[1], 2),
            private: addr(nets[2], 2),
            ns,
            host_if,
            _lock: lock,
            server,
        };
        // The server listens once a connection from this machine gets its hello.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((host.public.as_str(), PORT)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the outside host never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        host
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// This machine's own address on its default route, if it has one.
fn own_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "route", "get", "1.1.1.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "src")?;
    words.next().map(str::to_owned)
}

/// A build that tries every target at once (2 s each) and prints `reach <target> yes|no`.
fn probe_build(targets: &[String]) -> tempfile::TempDir {
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    project(&format!(
        "cat > \"$TMPDIR/probe.py\" <<'EOF'\n\
         import socket, threading\n\
         def probe(t):\n\
         \x20   host, port = t.rsplit(':', 1)\n\
         \x20   if host == 'gateway':\n\
         \x20       route = [l.split() for l in open('/proc/net/route')][1:]\n\
         \x20       gw = next(f[2] for f in route if f[1] == '00000000')\n\
         \x20       host = socket.inet_ntoa(bytes.fromhex(gw)[::-1])\n\
         \x20   try:\n\
         \x20       s = socket.create_connection((host, int(port)), timeout=2)\n\
         \x20       s.close()\n\
         \x20       print('reach', t, 'yes', flush=True)\n\
         \x20   except Exception:\n\
         \x20       print('reach', t, 'no', flush=True)\n\
         threads = [threading.Thread(target=probe, args=(t,)) for t in [{list}]]\n\
         [t.start() for t in threads]\n\
         [t.join() for t in threads]\n\
         EOF\n\
         python3 \"$TMPDIR/probe.py\"\n\
         echo ok > \"$FREEAGENT_OUTPUT_DIR/a.apk\"\n"
    ))
}

async fn reached(farm: &Farm, targets: &[String]) -> Vec<(String, bool)> {
    let dir = probe_build(targets);
    let b = farm.submit_dir(dir.path(), "android").await;
    let id = b["id"].as_str().unwrap().to_owned();
    let b = farm.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(b["status"], "completed", "{b}");
    let logs = farm.logs(&id).await;
    targets
        .iter()
        .map(|t| {
            let yes = logs.iter().any(|l| l.ends_with(&format!("reach {t} yes")));
            let no = logs.iter().any(|l| l.ends_with(&format!("reach {t} no")));
            assert!(yes != no, "no answer for {t}: {logs:?}");
            (t.clone(), yes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_build_reaches_the_outside_and_allowed_hosts_and_nothing_of_the_farm() {
    if !is_root() {
        eprintln!("not root: this test makes network namespaces");
        return;
    }
    let outside = OutsideHost::start();
    let farm = Farm::start(FarmOpts {
        extra_env: vec![(
            "FREEAGENT_BUILD_NETWORK_ALLOW".into(),
            outside.allowed.clone(),
        )],
        ..Default::default()
    })
    .await;
    let port_of = |url: &str| {
        url.trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let gateway_port = port_of(&farm.gateway);
    let mut targets = vec![
        format!("{}:{PORT}", outside.public),
        format!("{}:{PORT}", outside.allowed),
        // Private, not allowed.
        format!("{}:{PORT}", outside.private),
        // The machine's loopback services: Postgres, the gateway, storage, the scheduler's
        // metrics, NATS.
        "127.0.0.1:5432".to_owned(),
        format!("127.0.0.1:{gateway_port}"),
        format!("127.0.0.1:{}", port_of(&farm.storage)),
        format!("127.0.0.1:{}", port_of(&farm.scheduler)),
        format!("127.0.0.1:{}", farm.nats.port),
        // The cloud metadata address.
        "169.254.169.254:80".to_owned(),
        // The build's own way out: the host's end of its link.
        "gateway:5432".to_owned(),
        format!("gateway:{gateway_port}"),
    ];
    if let Some(own) = own_address() {
        targets.push(format!("{own}:5432"));
        targets.push(format!("{own}:{gateway_port}"));
    }
    let got = reached(&farm, &targets).await;
    let expect: Vec<(String, bool)> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i < 2))
        .collect();
    assert_eq!(got, expect);
    let worker_log = farm.log_of("worker-0");
    assert!(
        worker_log.contains("network: the outside world only"),
        "{worker_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_with_network_none_reaches_nothing() {
    if !is_root() {
        eprintln!("not root: this test makes network namespaces");
        return;
    }
    let outside = OutsideHost::start();
    let farm = Farm::start(FarmOpts {
        extra_env: vec![("FREEAGENT_BUILD_NETWORK".into(), "none".into())],
        ..Default::default()
    })
    .await;
    let targets = vec![
        format!("{}:{PORT}", outside.public),
        "127.0.0.1:5432".to_owned(),
    ];
    let got = reached(&farm, &targets).await;
    assert!(got.iter().all(|(_, yes)| !yes), "{got:?}");
}
