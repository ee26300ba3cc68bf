//! A Redis Cluster of real servers with the module: masters with replicas
//! on loopback ports, created with `redis-cli --cluster create`, every
//! node killed when the [`Cluster`] is dropped.
//!
//! The cluster tool is `REDIS_CLI` (default `redis-cli` on `PATH`); it
//! creates Valkey clusters as well.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use crate::{server_binary, wait_for, Config, Server};

/// How long start-up and convergence may take before a test fails.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// The cluster tool.
pub fn cli_binary() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// One node as the cluster sees it (`CLUSTER NODES`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node's cluster id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// A replica's master id.
    pub master_id: Option<String>,
    /// Flagged `fail` (or `fail?`) by the node that was asked.
    pub failing: bool,
    /// Served slot ranges, inclusive (migration markers left out).
    pub slots: Vec<(u16, u16)>,
}

/// Parses `CLUSTER NODES` output.
pub fn parse_nodes(raw: &str) -> Vec<NodeView> {
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            // ip:port@cport[,hostname]
            let port = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("a node address");
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => {
                        let n = s.parse().unwrap();
                        (n, n)
                    }
                })
                .collect();
            NodeView {
                id: f[0].to_owned(),
                port,
                master: flags.contains(&"master"),
                master_id: (f[3] != "-").then(|| f[3].to_owned()),
                failing: flags.contains(&"fail") || flags.contains(&"fail?"),
                slots,
            }
        })
        .collect()
}

/// A node's place in the cluster: master, its master's id, its slots.
type Role = (bool, Option<String>, Vec<(u16, u16)>);

/// A running cluster; every node is killed on drop.
pub struct Cluster {
    nodes: Vec<Server>,
    ids: Vec<String>,
}

impl Cluster {
    /// Three masters with one replica each, every node with the module and
    /// `cluster-node-timeout node_timeout_ms`; returns once the cluster is
    /// converged (see [`Cluster::wait_converged`]).
    pub fn start(node_timeout_ms: u64) -> Cluster {
        Cluster::with(3, 1, node_timeout_ms, Config::default())
    }

    /// `masters` masters with `replicas` replicas each, every node started
    /// with `config` plus cluster mode.
    pub fn with(masters: usize, replicas: usize, node_timeout_ms: u64, config: Config) -> Cluster {
        let total = masters * (1 + replicas);
        let config = config
            .arg("cluster-enabled", "yes")
            .arg("cluster-config-file", "nodes.conf")
            .arg("cluster-node-timeout", &node_timeout_ms.to_string());
        let nodes: Vec<Server> = (0..total).map(|_| Server::with(config.clone())).collect();
        let mut create = Command::new(cli_binary());
        create.arg("--cluster").arg("create");
        create.args(nodes.iter().map(Server::addr));
        create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes");
        let out = create
            .output()
            .unwrap_or_else(|e| panic!("{} --cluster create: {e} (set REDIS_CLI?)", cli_binary()));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("All 16384 slots covered"),
            "{} --cluster create failed ({}):\n{said}\n{}",
            cli_binary(),
            server_binary(),
            String::from_utf8_lossy(&out.stderr)
        );
        let ids = nodes
            .iter()
            .map(|n| {
                let mut c = n.conn();
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query::<String>(&mut c)
                    .expect("CLUSTER MYID")
            })
            .collect();
        let cluster = Cluster { nodes, ids };
        cluster.wait_converged();
        cluster
    }

    /// Every node, by index (killed ones included).
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Server {
        &self.nodes[i]
    }

    /// Node `i`'s cluster id.
    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The node with cluster id `id`.
    pub fn index_of_id(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// `redis://` URLs of the running nodes, for cluster clients.
    pub fn urls(&self) -> Vec<String> {
        self.running().map(|i| self.nodes[i].url()).collect()
    }

    /// Indices of the nodes not killed.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// The cluster as running node `i` sees it.
    pub fn view_of(&self, i: usize) -> Vec<NodeView> {
        let mut c = self.nodes[i].conn();
        let raw: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut c)
            .expect("CLUSTER NODES");
        parse_nodes(&raw)
    }

    /// The masters (by index) as the first running node sees them, each
    /// with the indices of its replicas.
    pub fn masters(&self) -> Vec<(usize, Vec<usize>)> {
        let first = self.running().next().expect("a running node");
        let view = self.view_of(first);
        view.iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .map(|m| {
                let replicas = view
                    .iter()
                    .filter(|r| r.master_id.as_deref() == Some(m.id.as_str()) && !r.failing)
                    .map(|r| self.index_of_id(&r.id))
                    .collect();
                (self.index_of_id(&m.id), replicas)
            })
            .collect()
    }

    /// The node serving each of the 16384 slots (`usize::MAX` where none
    /// does), as the first running node sees it.
    pub fn slot_owners(&self) -> Vec<usize> {
        let first = self.running().next().expect("a running node");
        let mut owners = vec![usize::MAX; 16384];
        for n in self.view_of(first) {
            for &(a, b) in &n.slots {
                for slot in a..=b {
                    owners[usize::from(slot)] = self.index_of_id(&n.id);
                }
            }
        }
        owners
    }

    /// Waits until the cluster is whole again: every running node says
    /// `cluster_state:ok`; all of them see the same masters, replicas and
    /// slot owners among the running nodes (and every other node as
    /// failing); every running replica's link is up and its master's
    /// `WAIT` counts every running replica.
    pub fn wait_converged(&self) {
        let running: BTreeSet<String> = self.running().map(|i| self.ids[i].clone()).collect();
        wait_for(CLUSTER_WAIT, "the cluster to converge", || {
            // Not too eagerly: each look opens a dozen connections.
            std::thread::sleep(Duration::from_millis(40));
            let mut views = Vec::new();
            for i in self.running() {
                let mut c = self.nodes[i].conn();
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
                if !info.contains("cluster_state:ok") {
                    return None;
                }
                let view = self.view_of(i);
                let live: BTreeMap<String, Role> = view
                    .iter()
                    .filter(|n| !n.failing)
                    .map(|n| {
                        (
                            n.id.clone(),
                            (n.master, n.master_id.clone(), n.slots.clone()),
                        )
                    })
                    .collect();
                if live.keys().cloned().collect::<BTreeSet<_>>() != running {
                    return None;
                }
                views.push(live);
            }
            if views.windows(2).any(|w| w[0] != w[1]) {
                return None;
            }
            let view = views.pop()?;
            for (id, (master, _, _)) in &view {
                let i = self.index_of_id(id);
                let mut c = self.nodes[i].conn();
                let repl: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
                if *master {
                    if !repl.contains("role:master") {
                        return None;
                    }
                    let replicas = view
                        .values()
                        .filter(|(_, m, _)| m.as_deref() == Some(id.as_str()))
                        .count();
                    if replicas > 0 {
                        let acked: i64 = redis::cmd("WAIT")
                            .arg(replicas)
                            .arg(1000)
                            .query(&mut c)
                            .ok()?;
                        if acked < replicas as i64 {
                            return None;
                        }
                    }
                } else if !repl.contains("role:slave")
                    || !repl.contains("master_link_status:up")
                    || repl.contains("master_sync_in_progress:1")
                {
                    return None;
                }
            }
            Some(())
        });
    }
}

impl Drop for Cluster {
    /// A failed test shows the end of every node's log (the nodes and their
    /// directories go with the cluster).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let lines = n.log_lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- node {i} ({}, {}) log, last {} lines ---\n{}",
                n.addr(),
                self.ids[i],
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
