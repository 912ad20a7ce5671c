//! What a network fault does in a namespace, as command lines: the netem parameters, the
//! mechanism the kernel allows for each, and the exact `tc` / `iptables` commands that
//! apply and undo it. Pure (no Docker), so lint can show the plan and tests can pin it.
//!
//! # Which direction
//! With netem, the qdisc degrades the node's *egress*, as `tc` users expect. Without it,
//! loss, delay, jitter, duplicate and corrupt act on packets *arriving* at the node
//! (iptables INPUT), and only rate stays on egress (tbf). That is deliberate: a packet
//! the node itself sent and that iptables holds (NFQUEUE) or drops in OUTPUT is still
//! charged to the sending socket, so TCP Small Queues throttle the connection to a couple
//! of packets per delay (0.3 MB/s under a 20 ms delay, measured) and a DROP there is an
//! `EPERM` for the sender instead of a loss on the wire. Held on arrival, a packet has
//! already left its sender (crossing the veth orphans it): TCP sees a real long, lossy
//! link. A round trip through the node sees the same added delay and loss either way.
//! Partitions drop on arrival too, so peers see timeouts, as in a real partition.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::netd::schedule::Distribution;
use super::NetfaultError;

/// Path of `chaos-netd` inside the sidecar image.
pub const NETD: &str = "/usr/local/bin/chaos-netd";
/// Path of `tc` inside the sidecar image.
pub const TC: &str = "/usr/sbin/tc";
/// Path of `ip` inside the sidecar image.
pub const IP: &str = "/usr/sbin/ip";
/// The NFQUEUE number the delayer serves (queues are per network namespace, and a
/// namespace carries at most one netem fault at a time).
pub const QUEUE: u16 = 4242;
/// Firewall mark of the delayer's duplicates: the NFQUEUE rule lets them through.
pub const DUP_MARK: u32 = 0x00c4_a05d;
/// Packets netem or the delayer hold at most (netem's default of 1000 drops too early
/// once a 200 ms delay meets a busy data connection).
pub const LIMIT: u32 = 10_000;

/// Network degradation of a node (see the module header for the direction). Every field
/// is optional; at least one is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetemParams {
    /// Added one-way delay of each packet.
    #[serde(default, with = "opt_micros", skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Spread around `delay` (see [`Distribution`]).
    #[serde(default, with = "opt_micros", skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    #[serde(default)]
    pub distribution: Distribution,
    /// Fraction (0..=1) of packets dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Fraction (0..=1) of packets delivered twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<f64>,
    /// Fraction (0..=1) of packets with one bit flipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<f64>,
    /// Egress rate limit in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_bps: Option<u64>,
}

impl NetemParams {
    /// Rejects what no mechanism could apply: nothing set, fractions outside 0..=1, a
    /// zero rate.
    pub fn validate(&self) -> Result<(), NetfaultError> {
        let bad = |m: String| Err(NetfaultError::Usage(format!("netem: {m}")));
        if *self
            == (NetemParams {
                distribution: self.distribution,
                ..NetemParams::default()
            })
        {
            return bad(
                "nothing to do: set delay, jitter, loss, duplicate, corrupt or rate".into(),
            );
        }
        for (name, v) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return bad(format!(
                        "{name} must be a fraction between 0 and 1, got {v}"
                    ));
                }
            }
        }
        if self.rate_bps == Some(0) {
            return bad("rate must be above 0 bit/s".into());
        }
        Ok(())
    }

    fn delays(&self) -> bool {
        self.delay.is_some_and(|d| !d.is_zero()) || self.jitter.is_some_and(|j| !j.is_zero())
    }
    fn some(v: Option<f64>) -> bool {
        v.is_some_and(|v| v > 0.0)
    }
}

impl fmt::Display for NetemParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(d) = self.delay {
            parts.push(format!("delay {d:?}"));
        }
        if let Some(j) = self.jitter {
            parts.push(format!("jitter {j:?} ({})", self.distribution.as_str()));
        }
        for (name, v) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name} {}%", trim(v * 100.0)));
            }
        }
        if let Some(r) = self.rate_bps {
            parts.push(format!("rate {r} bit/s"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Which iptables the sidecar drives (both are in the image; the probe picks one that works).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Iptables {
    Nft,
    Legacy,
}

impl Iptables {
    /// The command prefix: the multi-call binary with the applet as first argument.
    pub fn argv(self) -> [&'static str; 2] {
        match self {
            Iptables::Nft => ["/usr/sbin/xtables-nft-multi", "iptables"],
            Iptables::Legacy => ["/usr/sbin/xtables-legacy-multi", "iptables"],
        }
    }
}

/// What the kernel offers, probed once per run in a throwaway namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// `sch_netem` exists: every netem parameter goes through one `tc qdisc ... netem`.
    pub netem: bool,
    /// A working iptables flavour (needed for partitions and the fallbacks).
    pub iptables: Option<Iptables>,
    /// The NFQUEUE target works (delay, jitter, duplicate, corrupt without netem).
    pub nfqueue: bool,
    /// The `statistic` match works (loss without netem).
    pub statistic: bool,
    /// `sch_tbf` exists (rate without netem).
    pub tbf: bool,
}

/// How one netem parameter is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// tc qdisc netem (egress).
    Netem,
    /// iptables NFQUEUE rule (INPUT) served by the `chaos-netd delay` process in a sidecar.
    Delayer,
    /// iptables `-m statistic --mode random ... -j DROP` (INPUT).
    Statistic,
    /// tc qdisc tbf (egress).
    Tbf,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Netem => "tc netem on egress",
            Via::Delayer => "iptables NFQUEUE + userspace delayer (chaos-netd) on arrival",
            Via::Statistic => "iptables statistic DROP on arrival",
            Via::Tbf => "tc tbf on egress",
        })
    }
}

/// For each parameter set in `params` (`delay`, `jitter`, `loss`, `duplicate`, `corrupt`,
/// `rate`), the mechanism that will carry it out on a kernel offering `mech`.
pub fn plan(
    params: &NetemParams,
    mech: &Mechanism,
) -> Result<Vec<(&'static str, Via)>, NetfaultError> {
    params.validate()?;
    let wanted = [
        ("delay", params.delay.is_some_and(|d| !d.is_zero())),
        ("jitter", params.jitter.is_some_and(|j| !j.is_zero())),
        ("loss", NetemParams::some(params.loss)),
        ("duplicate", NetemParams::some(params.duplicate)),
        ("corrupt", NetemParams::some(params.corrupt)),
        ("rate", params.rate_bps.is_some()),
    ];
    let mut out = Vec::new();
    for (name, set) in wanted {
        if !set {
            continue;
        }
        let via = if mech.netem {
            Via::Netem
        } else {
            match name {
                "loss" => Via::Statistic,
                "rate" => Via::Tbf,
                _ => Via::Delayer,
            }
        };
        let missing = match via {
            Via::Netem => None,
            Via::Delayer if mech.iptables.is_none() || !mech.nfqueue => {
                Some("the iptables NFQUEUE target")
            }
            Via::Statistic if mech.iptables.is_none() || !mech.statistic => {
                Some("the iptables statistic match")
            }
            Via::Tbf if !mech.tbf => Some("the tbf qdisc"),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(NetfaultError::Unsupported(format!(
                "netem {name}: this kernel has neither sch_netem nor {missing}"
            )));
        }
        out.push((name, via));
    }
    Ok(out)
}

/// For `chaos lint`: how each parameter of `params` will be carried out, one line each
/// (`delay 200ms: iptables NFQUEUE + ...`). With `mech` unknown (no probe yet), names what
/// happens with netem and without it.
pub fn describe(
    params: &NetemParams,
    mech: Option<&Mechanism>,
) -> Result<Vec<String>, NetfaultError> {
    if let Some(mech) = mech {
        return Ok(plan(params, mech)?
            .into_iter()
            .map(|(name, via)| format!("{name}: {via}"))
            .collect());
    }
    let fallback = Mechanism {
        netem: false,
        iptables: Some(Iptables::Nft),
        nfqueue: true,
        statistic: true,
        tbf: true,
    };
    let without = plan(params, &fallback)?;
    Ok(without
        .into_iter()
        .map(|(name, via)| {
            format!(
                "{name}: {} where the kernel has sch_netem, else {via}",
                Via::Netem
            )
        })
        .collect())
}

/// The commands of one fault in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    /// Run in order to apply.
    pub apply: Vec<Vec<String>>,
    /// Run in order to undo; each is idempotent as the undo runner treats it (an absent
    /// rule or qdisc counts as removed).
    pub undo: Vec<Vec<String>>,
    /// The delayer's arguments to `chaos-netd` (the sidecar's command), when the fault needs one.
    pub delayer: Option<Vec<String>>,
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Arguments of `chaos-netd` (the sidecar's entrypoint) for the delayer of `params`.
pub fn delayer_args(params: &NetemParams) -> Vec<String> {
    let mut d = argv(&["delay", "--queue"]);
    d.push(QUEUE.to_string());
    d.extend([
        "--delay-us".into(),
        params.delay.unwrap_or_default().as_micros().to_string(),
    ]);
    d.extend([
        "--jitter-us".into(),
        params.jitter.unwrap_or_default().as_micros().to_string(),
    ]);
    d.extend(["--distribution".into(), params.distribution.as_str().into()]);
    d.extend([
        "--duplicate".into(),
        params.duplicate.unwrap_or(0.0).to_string(),
    ]);
    d.extend([
        "--corrupt".into(),
        params.corrupt.unwrap_or(0.0).to_string(),
    ]);
    d.extend([
        "--limit".into(),
        LIMIT.to_string(),
        "--mark".into(),
        DUP_MARK.to_string(),
    ]);
    d
}

/// An iptables rule: `-I`/`-A` to apply, `-D` with the same specification to undo.
fn rule(ipt: Iptables, insert: bool, chain: &str, spec: &[String], out: &mut Commands) {
    let prefix = ipt.argv();
    let mut add = argv(&prefix);
    add.push(if insert { "-I" } else { "-A" }.into());
    add.push(chain.into());
    add.extend(spec.iter().cloned());
    let mut del = argv(&prefix);
    del.push("-D".into());
    del.push(chain.into());
    del.extend(spec.iter().cloned());
    out.apply.push(add);
    out.undo.push(del);
}

fn comment(tag: &str) -> [String; 4] {
    [
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        format!("chaos:{tag}"),
    ]
}

/// Commands for `params` on interface `iface`; `tag` identifies the rules (comment).
pub fn netem_commands(
    params: &NetemParams,
    mech: &Mechanism,
    iface: &str,
    tag: &str,
) -> Result<Commands, NetfaultError> {
    let plan = plan(params, mech)?;
    let mut out = Commands::default();
    if mech.netem {
        let mut tc = argv(&[TC, "qdisc", "add", "dev", iface, "root", "netem", "limit"]);
        tc.push(LIMIT.to_string());
        if params.delays() {
            tc.push("delay".into());
            tc.push(format!(
                "{}us",
                params.delay.unwrap_or_default().as_micros()
            ));
            if let Some(j) = params.jitter.filter(|j| !j.is_zero()) {
                tc.push(format!("{}us", j.as_micros()));
                if params.distribution == Distribution::Normal {
                    tc.extend(argv(&["distribution", "normal"]));
                }
            }
        }
        for (name, v) in [
            ("loss", params.loss),
            ("duplicate", params.duplicate),
            ("corrupt", params.corrupt),
        ] {
            if let Some(v) = v.filter(|v| *v > 0.0) {
                tc.push(name.into());
                tc.push(format!("{}%", trim(v * 100.0)));
            }
        }
        if let Some(r) = params.rate_bps {
            tc.push("rate".into());
            tc.push(format!("{r}bit"));
        }
        out.apply.push(tc);
        out.undo
            .push(argv(&[TC, "qdisc", "del", "dev", iface, "root"]));
        return Ok(out);
    }

    let ipt = mech
        .iptables
        .ok_or_else(|| NetfaultError::Unsupported("no working iptables".into()))?;
    let via = |v: Via| plan.iter().any(|(_, p)| *p == v);
    // Drops come first (-I): a packet the NFQUEUE verdict accepts leaves the chain.
    if let Some(p) = params.loss.filter(|_| via(Via::Statistic)) {
        let mut spec = argv(&[
            "-i",
            iface,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
        ]);
        spec.push(format!("{p:.6}"));
        spec.extend(comment(tag));
        spec.extend(argv(&["-j", "DROP"]));
        rule(ipt, true, "INPUT", &spec, &mut out);
    }
    if via(Via::Delayer) {
        // Duplicates come in through `lo` (sent to the node's own address), and carry the
        // mark besides: neither is queued again.
        let mut spec = argv(&["-i", iface, "-m", "mark", "!", "--mark"]);
        spec.push(format!("{DUP_MARK:#x}"));
        spec.extend(comment(tag));
        spec.extend(argv(&["-j", "NFQUEUE", "--queue-num"]));
        spec.push(QUEUE.to_string());
        // Without a listener (delayer gone), packets pass instead of being dropped.
        spec.push("--queue-bypass".into());
        rule(ipt, false, "INPUT", &spec, &mut out);
        out.delayer = Some(delayer_args(params));
    }
    if let Some(rate) = params.rate_bps.filter(|_| via(Via::Tbf)) {
        // Bucket: 20 ms worth of the rate, at least a few full-size frames.
        let burst = (rate / 8 / 50).max(16 * 1514);
        let mut tc = argv(&[TC, "qdisc", "add", "dev", iface, "root", "tbf", "rate"]);
        tc.push(format!("{rate}bit"));
        tc.extend([
            "burst".into(),
            burst.to_string(),
            "latency".into(),
            "200ms".into(),
        ]);
        out.apply.push(tc);
        out.undo
            .push(argv(&[TC, "qdisc", "del", "dev", iface, "root"]));
    }
    // Undo in reverse order of apply.
    out.undo.reverse();
    Ok(out)
}

/// DROP rules, on `iface`, for packets arriving from `peer_ips` (one member's share of a
/// partition).
pub fn block_commands(ipt: Iptables, iface: &str, peer_ips: &[String], tag: &str) -> Commands {
    let mut out = Commands::default();
    for ip in peer_ips {
        let mut spec = argv(&["-i", iface, "-s", ip]);
        spec.extend(comment(tag));
        spec.extend(argv(&["-j", "DROP"]));
        rule(ipt, true, "INPUT", &spec, &mut out);
    }
    out.undo.reverse();
    out
}

/// A number without trailing zeros: `30`, `0.5`.
fn trim(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// `Option<Duration>` as integer microseconds (readable in the journal).
mod opt_micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_netem() -> Mechanism {
        Mechanism {
            netem: false,
            iptables: Some(Iptables::Nft),
            nfqueue: true,
            statistic: true,
            tbf: true,
        }
    }
    fn with_netem() -> Mechanism {
        Mechanism {
            netem: true,
            ..no_netem()
        }
    }
    fn delay_loss() -> NetemParams {
        NetemParams {
            delay: Some(Duration::from_millis(200)),
            jitter: Some(Duration::from_millis(50)),
            loss: Some(0.3),
            ..NetemParams::default()
        }
    }
    fn joined(c: &[Vec<String>]) -> Vec<String> {
        c.iter().map(|a| a.join(" ")).collect()
    }

    #[test]
    fn with_netem_everything_is_one_qdisc() {
        let mut p = delay_loss();
        p.distribution = Distribution::Normal;
        p.rate_bps = Some(1_000_000);
        p.duplicate = Some(0.01);
        let c = netem_commands(&p, &with_netem(), "eth1", "f1").unwrap();
        assert_eq!(
            joined(&c.apply),
            [
                "/usr/sbin/tc qdisc add dev eth1 root netem limit 10000 delay 200000us 50000us \
              distribution normal loss 30% duplicate 1% rate 1000000bit"
            ]
        );
        assert_eq!(joined(&c.undo), ["/usr/sbin/tc qdisc del dev eth1 root"]);
        assert!(c.delayer.is_none());
    }

    #[test]
    fn without_netem_loss_is_a_statistic_drop_on_arrival_before_the_nfqueue_rule() {
        let c = netem_commands(&delay_loss(), &no_netem(), "eth0", "f1").unwrap();
        let ipt = "/usr/sbin/xtables-nft-multi iptables";
        assert_eq!(
            joined(&c.apply),
            [
                format!("{ipt} -I INPUT -i eth0 -m statistic --mode random --probability 0.300000 -m comment --comment chaos:f1 -j DROP"),
                format!("{ipt} -A INPUT -i eth0 -m mark ! --mark 0xc4a05d -m comment --comment chaos:f1 -j NFQUEUE --queue-num 4242 --queue-bypass"),
            ]
        );
        // Undo deletes the very same rules, last applied first.
        assert_eq!(
            joined(&c.undo),
            [
                format!("{ipt} -D INPUT -i eth0 -m mark ! --mark 0xc4a05d -m comment --comment chaos:f1 -j NFQUEUE --queue-num 4242 --queue-bypass"),
                format!("{ipt} -D INPUT -i eth0 -m statistic --mode random --probability 0.300000 -m comment --comment chaos:f1 -j DROP"),
            ]
        );
        let d = c.delayer.unwrap().join(" ");
        assert!(
            d.starts_with("delay --queue 4242 --delay-us 200000 --jitter-us 50000"),
            "{d}"
        );
    }

    #[test]
    fn loss_alone_needs_no_delayer_and_rate_is_tbf() {
        let p = NetemParams {
            loss: Some(0.3),
            rate_bps: Some(8_000_000),
            ..NetemParams::default()
        };
        let c = netem_commands(&p, &no_netem(), "eth0", "x").unwrap();
        assert!(c.delayer.is_none());
        assert_eq!(c.apply.len(), 2);
        assert_eq!(
            c.apply[1].join(" "),
            "/usr/sbin/tc qdisc add dev eth0 root tbf rate 8000000bit burst 24224 latency 200ms"
        );
        assert_eq!(c.undo[0].join(" "), "/usr/sbin/tc qdisc del dev eth0 root");
    }

    #[test]
    fn plan_names_the_mechanism_of_each_parameter() {
        let p = NetemParams {
            duplicate: Some(0.1),
            rate_bps: Some(1000),
            ..delay_loss()
        };
        let plan = plan(&p, &no_netem()).unwrap();
        assert_eq!(
            plan,
            [
                ("delay", Via::Delayer),
                ("jitter", Via::Delayer),
                ("loss", Via::Statistic),
                ("duplicate", Via::Delayer),
                ("rate", Via::Tbf)
            ]
        );
        assert!(super::plan(&p, &with_netem())
            .unwrap()
            .iter()
            .all(|(_, v)| *v == Via::Netem));
    }

    #[test]
    fn a_kernel_without_the_fallbacks_is_refused_clearly() {
        let m = Mechanism {
            nfqueue: false,
            ..no_netem()
        };
        let err = plan(&delay_loss(), &m).unwrap_err().to_string();
        assert!(
            err.contains("neither sch_netem nor the iptables NFQUEUE target"),
            "{err}"
        );
        let m = Mechanism {
            tbf: false,
            ..no_netem()
        };
        let p = NetemParams {
            rate_bps: Some(1),
            ..NetemParams::default()
        };
        assert!(plan(&p, &m).is_err());
    }

    #[test]
    fn describe_says_what_lint_prints() {
        let p = NetemParams {
            loss: Some(0.05),
            ..NetemParams::default()
        };
        assert_eq!(
            describe(&p, Some(&no_netem())).unwrap(),
            ["loss: iptables statistic DROP on arrival"]
        );
        assert_eq!(
            describe(&p, Some(&with_netem())).unwrap(),
            ["loss: tc netem on egress"]
        );
        assert_eq!(
            describe(&p, None).unwrap(),
            ["loss: tc netem on egress where the kernel has sch_netem, else iptables statistic DROP on arrival"]
        );
    }

    #[test]
    fn validation_rejects_empty_and_out_of_range() {
        assert!(NetemParams::default().validate().is_err());
        let p = NetemParams {
            distribution: Distribution::Normal,
            ..NetemParams::default()
        };
        assert!(p.validate().is_err());
        assert!(NetemParams {
            loss: Some(30.0),
            ..NetemParams::default()
        }
        .validate()
        .is_err());
        assert!(NetemParams {
            rate_bps: Some(0),
            ..NetemParams::default()
        }
        .validate()
        .is_err());
        assert!(delay_loss().validate().is_ok());
    }

    #[test]
    fn partition_rules_drop_what_arrives_from_each_peer() {
        let peers = ["10.0.0.2".to_string(), "10.0.0.3".to_string()];
        let c = block_commands(Iptables::Legacy, "eth0", &peers, "p1");
        let ipt = "/usr/sbin/xtables-legacy-multi iptables";
        assert_eq!(
            joined(&c.apply),
            [
                format!("{ipt} -I INPUT -i eth0 -s 10.0.0.2 -m comment --comment chaos:p1 -j DROP"),
                format!("{ipt} -I INPUT -i eth0 -s 10.0.0.3 -m comment --comment chaos:p1 -j DROP"),
            ]
        );
        assert_eq!(
            joined(&c.undo),
            [
                format!("{ipt} -D INPUT -i eth0 -s 10.0.0.3 -m comment --comment chaos:p1 -j DROP"),
                format!("{ipt} -D INPUT -i eth0 -s 10.0.0.2 -m comment --comment chaos:p1 -j DROP"),
            ]
        );
    }

    #[test]
    fn params_round_trip_through_json_in_microseconds() {
        let p = delay_loss();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"delay\":200000"), "{json}");
        assert_eq!(serde_json::from_str::<NetemParams>(&json).unwrap(), p);
    }
}
