//! A TCP proxy in front of a service's replicas, as an operator's load balancer would stand:
//! each new connection goes to the next replica that accepts it (round robin, skipping one
//! that refuses), and dies with the replica it went to. Clients see one address, so what they
//! do when a replica is killed (reconnect, resume with `Last-Event-ID`, retry an upload) is what
//! they would do in production.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and spreads connections over `backends` (loopback
    /// ports).
    pub async fn start(backends: Vec<u16>) -> Proxy {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST, backends).await
    }

    /// The same, listening on `ip` (the test's address on its hosts' subnet, for processes on
    /// hosts of their own, `hosts::Hosts`).
    pub async fn start_on(ip: std::net::Ipv4Addr, backends: Vec<u16>) -> Proxy {
        Self::start_delayed(ip, backends, Duration::ZERO).await
    }

    /// The same, each byte passed on `delay` after it arrived, both ways: the latency of a
    /// network path, without limiting its throughput.
    pub async fn start_delayed(
        ip: std::net::Ipv4Addr,
        backends: Vec<u16>,
        delay: Duration,
    ) -> Proxy {
        let backends = backends
            .into_iter()
            .map(|port| (std::net::Ipv4Addr::LOCALHOST, port).into())
            .collect();
        Self::start_full(ip, backends, delay).await
    }

    /// Listening on `ip`, in front of `backends` anywhere (replicas on hosts of their own).
    pub async fn to(ip: std::net::Ipv4Addr, backends: Vec<SocketAddr>) -> Proxy {
        Self::start_full(ip, backends, Duration::ZERO).await
    }

    async fn start_full(
        ip: std::net::Ipv4Addr,
        backends: Vec<SocketAddr>,
        delay: Duration,
    ) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (next, backends) = (next.clone(), backends.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let backend = backends[(first + i) % backends.len()];
                        if let Ok(server) = TcpStream::connect(backend).await {
                            if delay.is_zero() {
                                let (mut client, mut server) = (client, server);
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            } else {
                                let (cr, cw) = client.into_split();
                                let (sr, sw) = server.into_split();
                                tokio::join!(delayed(cr, sw, delay), delayed(sr, cw, delay));
                            }
                            return;
                        }
                    }
                    // No replica accepts: the client sees its connection closed.
                });
            }
        });
        Proxy { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; reading goes on
/// meanwhile, so the path keeps its throughput. Ends (closing `to`) when `from` ends.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at + delay).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
