//! [`NamespaceNetwork`]: each node in its own Linux network namespace, so a test can cut the
//! network between nodes (a partition) while the test itself still reaches every one of them.
//!
//! Loopback cannot be partitioned without rules in the host's own firewall; namespaces keep
//! every rule inside what the test made and removed on drop. The layout:
//!
//! ```text
//!  test process (host namespace)             hub namespace           node namespaces
//!  mu<tag> 10.a.b.254/24  ── veth ──  client ─┐
//!                                              br0 ── n1 ── veth ── eth0 10.a.b.1/24
//!                                                 ── n2 ── veth ── eth0 10.a.b.2/24 ...
//! ```
//!
//! The only thing added to the host namespace is one veth end with an address in a /24 that
//! no host route uses. A partition is an nftables `drop` of the peer's address on the input
//! hook of both nodes' namespaces: packets vanish, as on a real cut (connections hang until
//! their timeouts, nothing is refused), and healing flushes the rules. Needs root and the
//! `ip` and `nft` commands (iproute2, nftables).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, ensure};

/// A private network of node namespaces behind one bridge, reachable from the test.
pub struct NamespaceNetwork {
    tag: String,
    /// The first two octets' last two: nodes are `10.<subnet.0>.<subnet.1>.<id>`.
    subnet: (u8, u8),
    nodes: BTreeSet<u64>,
    /// Node pairs (lower id first) whose traffic is dropped.
    cuts: BTreeSet<(u64, u64)>,
}

/// Runs `program args…`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Whether some host route already covers `10.a.b.0/24` (then another subnet is picked).
fn subnet_in_use(a: u8, b: u8) -> bool {
    let routes = Command::new("ip").args(["-4", "route", "show", "table", "all"]).output();
    let text = routes.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default();
    text.contains(&format!("10.{a}.{b}."))
}

impl NamespaceNetwork {
    /// Whether this machine can build one: root, with `ip` and `nft` installed.
    pub fn available() -> bool {
        let works =
            |program: &str, args: &[&str]| Command::new(program).args(args).output().is_ok_and(|o| o.status.success());
        rustix::process::geteuid().is_root() && works("ip", &["-V"]) && works("nft", &["--version"])
    }

    /// The hub namespace, its bridge and the test's veth into it; nodes are added with
    /// [`add_node`](Self::add_node).
    pub fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{count:x}", std::process::id());
        ensure!(tag.len() <= 13, "namespace tag {tag} too long for an interface name");
        let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(count.wrapping_mul(40_503));
        let subnet = (0..64)
            .map(|i| {
                let n = seed.wrapping_add(i * 7919);
                (100 + (n % 100) as u8, ((n >> 8) % 256) as u8)
            })
            .find(|&(a, b)| !subnet_in_use(a, b))
            .context("no free 10.x.y.0/24 subnet for the test network")?;
        let network = Self { tag, subnet, nodes: BTreeSet::new(), cuts: BTreeSet::new() };
        network.build_hub().inspect_err(|_| network.remove())?;
        Ok(network)
    }

    fn hub(&self) -> String {
        format!("muster-{}-hub", self.tag)
    }

    /// The namespace node `id` runs in.
    pub fn namespace(&self, id: u64) -> String {
        format!("muster-{}-n{id}", self.tag)
    }

    fn host_link(&self) -> String {
        format!("mu{}", self.tag)
    }

    /// Node `id`'s address (nodes are numbered 1..=253).
    pub fn ip(&self, id: u64) -> String {
        let (a, b) = self.subnet;
        format!("10.{a}.{b}.{id}")
    }

    fn build_hub(&self) -> anyhow::Result<()> {
        let (hub, host) = (self.hub(), self.host_link());
        let (a, b) = self.subnet;
        run("ip", &["netns", "add", &hub])?;
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        run("ip", &["link", "add", &host, "type", "veth", "peer", "name", "client", "netns", &hub])?;
        run("ip", &["-n", &hub, "link", "set", "client", "master", "br0", "up"])?;
        run("ip", &["addr", "add", &format!("10.{a}.{b}.254/24"), "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])
    }

    /// A namespace for node `id` on the bridge, with its address and an empty input chain.
    pub fn add_node(&mut self, id: u64) -> anyhow::Result<()> {
        ensure!((1..=253).contains(&id), "node id {id} does not fit the test subnet (1..=253)");
        ensure!(self.nodes.insert(id), "node {id} already has a namespace");
        let (hub, ns, port) = (self.hub(), self.namespace(id), format!("n{id}"));
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        run("ip", &["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", self.ip(id)), "dev", "eth0"])?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        self.nft(id, "add table inet muster")?;
        self.nft(id, "add chain inet muster input { type filter hook input priority 0 ; policy accept ; }")
    }

    fn nft(&self, id: u64, command: &str) -> anyhow::Result<()> {
        let ns = self.namespace(id);
        let mut args = vec!["netns", "exec", &ns, "nft"];
        args.extend(command.split(' '));
        run("ip", &args)
    }

    /// The command prefix that runs a program inside node `id`'s namespace.
    pub fn exec_prefix(&self, id: u64) -> Vec<String> {
        ["ip", "netns", "exec"].into_iter().map(String::from).chain([self.namespace(id)]).collect()
    }

    /// Drops all traffic between nodes `a` and `b`, both ways.
    pub fn cut(&mut self, a: u64, b: u64) -> anyhow::Result<()> {
        ensure!(a != b, "cannot cut node {a} from itself");
        for id in [a, b] {
            ensure!(self.nodes.contains(&id), "no node {id} in the test network");
        }
        if self.cuts.insert((a.min(b), a.max(b))) {
            self.nft(a, &format!("add rule inet muster input ip saddr {} drop", self.ip(b)))?;
            self.nft(b, &format!("add rule inet muster input ip saddr {} drop", self.ip(a)))?;
        }
        Ok(())
    }

    /// Cuts every pair of nodes that lie in different `groups`; nodes in no group keep their
    /// links. The cuts add to any already made.
    pub fn partition(&mut self, groups: &[Vec<u64>]) -> anyhow::Result<()> {
        for (i, left) in groups.iter().enumerate() {
            for right in &groups[i + 1..] {
                for &a in left {
                    for &b in right {
                        self.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The pairs cut now.
    pub fn cuts(&self) -> Vec<(u64, u64)> {
        self.cuts.iter().copied().collect()
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let nodes: Vec<u64> = self.nodes.iter().copied().collect();
        for id in nodes {
            self.nft(id, "flush chain inet muster input")?;
        }
        self.cuts.clear();
        Ok(())
    }

    /// Deletes every namespace (their veths go with them) and the host's veth end.
    fn remove(&self) {
        let namespaces = self.nodes.iter().map(|id| self.namespace(*id)).chain([self.hub()]);
        let results = namespaces
            .map(|ns| run("ip", &["netns", "del", &ns]))
            .chain([run("ip", &["link", "del", &self.host_link()])]);
        for err in results.filter_map(Result::err) {
            eprintln!("e2e: removing the test network: {err:#}");
        }
    }
}

impl Drop for NamespaceNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}
