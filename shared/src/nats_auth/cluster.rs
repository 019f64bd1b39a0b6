//! A NATS cluster's configuration: the same operator-mode set-up as one server (`setup`), once
//! per node, with the routes between nodes authenticated by a generated password and JetStream
//! clustered (each node named, so it can hold stream replicas). `freeagent nats-config
//! --cluster 3` and the cluster tests write it.

use super::AuthError;
use super::setup::{FarmFiles, Generated, mkdir, write_secret};
use std::path::{Path, PathBuf};

/// The name every node gives its cluster.
pub const CLUSTER_NAME: &str = "freeagent";
/// The user the nodes authenticate their routes as.
const ROUTE_USER: &str = "route";
/// How often a node pings its routes and clients (NATS' default is 2 minutes: a frozen node
/// then kept the services' subscriptions alive on the others, black-holing their requests).
const ROUTE_PING: &str = "2s";

/// One node of the cluster, as written into every node's configuration.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The server's name (unique in the cluster; JetStream places replicas by it).
    pub name: String,
    /// Where it listens for clients, `host:port`.
    pub listen: String,
    /// Where it listens for the other nodes, `host:port`.
    pub cluster_listen: String,
    /// How the other nodes reach that listener, `host:port`.
    pub route_address: String,
    /// Its JetStream store.
    pub store_dir: PathBuf,
}

impl ClusterNode {
    /// The node's configuration file under the set-up's directory.
    pub fn config_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.conf", self.name))
    }
}

impl Generated {
    /// Writes `<node>.conf` for every node and the credentials and keys as `write` does.
    pub fn write_cluster(
        &self,
        dir: &Path,
        nodes: &[ClusterNode],
    ) -> Result<Vec<FarmFiles>, AuthError> {
        mkdir(dir)?;
        let password = route_password();
        for node in nodes {
            let resolver_dir = dir.join(format!("resolver-{}", node.name));
            mkdir(&resolver_dir)?;
            let mut text = self.server_config(&node.listen, &node.store_dir, &resolver_dir)?;
            text.push_str(&cluster_block(node, nodes, &password));
            write_secret(&node.config_path(dir), &text)?;
        }
        self.write_credentials(dir)
    }
}

/// The node's name and `cluster {}` block: routes to every other node, each authenticated.
fn cluster_block(node: &ClusterNode, nodes: &[ClusterNode], password: &str) -> String {
    let routes: Vec<String> = nodes
        .iter()
        .filter(|n| n.name != node.name)
        .map(|n| {
            format!(
                "    \"nats-route://{ROUTE_USER}:{password}@{}\"",
                n.route_address
            )
        })
        .collect();
    format!(
        "server_name: {name:?}\n\
         # A frozen or cut-off node keeps its routes open; pinged every {ROUTE_PING} with 2\n\
         # unanswered allowed, it is dropped within 3 intervals and the others stop sending it\n\
         # requests meant for the services connected there (they have moved to another node).\n\
         ping_interval: {ROUTE_PING:?}\n\
         cluster {{\n  name: {CLUSTER_NAME:?}\n  listen: {listen:?}\n  \
         authorization {{ user: {ROUTE_USER:?}, password: {password:?} }}\n  \
         routes: [\n{routes}\n  ]\n}}\n",
        name = node.name,
        listen = node.cluster_listen,
        routes = routes.join("\n"),
    )
}

/// A fresh secret for the routes: a node that does not know it cannot join the cluster.
fn route_password() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_routes_to_the_others_with_the_shared_password() {
        let dir = std::env::temp_dir().join(format!("fa-nats-cluster-{}", uuid::Uuid::new_v4()));
        let nodes: Vec<ClusterNode> = (1..=3)
            .map(|i| ClusterNode {
                name: format!("nats-{i}"),
                listen: "0.0.0.0:4222".into(),
                cluster_listen: "0.0.0.0:6222".into(),
                route_address: format!("nats-{i}:6222"),
                store_dir: "/data".into(),
            })
            .collect();
        let g = Generated::new(&["farm"]);
        let files = g.write_cluster(&dir, &nodes).unwrap();
        assert_eq!(files.len(), 1);
        let confs: Vec<String> = nodes
            .iter()
            .map(|n| std::fs::read_to_string(n.config_path(&dir)).unwrap())
            .collect();
        let password = confs[0]
            .split("password: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        assert_eq!(password.len(), 48);
        for (i, conf) in confs.iter().enumerate() {
            assert!(conf.contains(&format!("server_name: \"nats-{}\"", i + 1)));
            assert!(conf.contains(&g.farms[0].account.public_key()));
            for (j, other) in nodes.iter().enumerate() {
                let route = format!("route:{password}@{}", other.route_address);
                assert_eq!(conf.contains(&route), i != j, "node {i} route to {j}");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
