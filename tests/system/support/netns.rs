//! Network namespaces for partition tests: one per node, each with a veth into a bridge of
//! the test's own (a private /24 with no route anywhere else), so a node can be cut off at
//! the network as a real partition would: its packets to the others, and theirs to it, are
//! dropped by blackhole routes while its TCP sessions stay open. The test itself, on the
//! bridge, still reaches every node. Needs root and `ip` (iproute2).

use std::process::Command;

use anyhow::{ensure, Context, Result};

pub struct Net {
    id: String,
    subnet: u8,
    nodes: usize,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Net {
    /// A bridge and `nodes` namespaces, each node at `10.231.<subnet>.<i + 1>`.
    pub fn new(nodes: usize) -> Result<Self> {
        let seed = std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos());
        let net = Net {
            id: format!("{:04x}", seed & 0xffff),
            subnet: (seed % 200) as u8 + 20,
            nodes,
        };
        ip(&["link", "add", &net.bridge(), "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.231.{}.254/24", net.subnet),
            "dev",
            &net.bridge(),
        ])?;
        ip(&["link", "set", &net.bridge(), "up"])?;
        for i in 0..nodes {
            let (ns, outside) = (net.ns(i), format!("trv{}{i}", net.id));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &outside, "master", &net.bridge()])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("trb{}", self.id)
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("troupe-{}-{i}", self.id)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.231.{}.{}", self.subnet, i + 1)
    }

    /// Cuts node `i` off from every other node, both ways (or heals the cut).
    pub fn cut(&self, i: usize, on: bool) -> Result<()> {
        let verb = if on { "add" } else { "del" };
        for other in (0..self.nodes).filter(|o| *o != i) {
            ip(&[
                "-n",
                &self.ns(i),
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.ip(other)),
            ])?;
            ip(&[
                "-n",
                &self.ns(other),
                "route",
                verb,
                "blackhole",
                &format!("{}/32", self.ip(i)),
            ])?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
