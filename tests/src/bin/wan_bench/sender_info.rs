//! What a kernel sender says about its connection during a run (its
//! `tcp_info`, read with `ss -ti` every quarter second, the last reading
//! printed): whether the receiver's window held it back, how much it sent
//! again and how much of that the receiver reported as needless (D-SACK),
//! and whether BBR ever left Startup.
//! Next to the same figures for the reference, this says whether a slow
//! download is the path's doing or the receiving end's.

use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

/// The fields printed, in this order.
const FIELDS: [&str; 10] = [
    "cwnd:",
    "minrtt:",
    "rtt:",
    "snd_wnd:",
    "rwnd_limited:",
    "bytes_retrans:",
    "dsack_dups:",
    "reord_seen:",
    "reordering:",
    "delivery_rate",
];

/// Readings taken in the background while iperf3 runs.
pub struct Probe(JoinHandle<Reading>);

/// What the probe saw.
pub struct Reading {
    /// The last reading, as the fields worth comparing, or why there is none.
    pub line: String,
    /// Whether a BBR sender left Startup, and when.
    pub startup: Startup,
}

/// BBR v1 leaves Startup only on rate samples that are not
/// application-limited; a sender whose send buffer is smaller than
/// Startup's window may never get one, and a run where it stays pays for
/// it in drops. Ratios are only comparable between runs whose senders did
/// the same, so each run says which.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Startup {
    /// Not BBR, or no reading.
    Unknown,
    /// Left it this long into the run.
    Left(Duration),
    /// Still in it at every reading (`n` of them).
    Stayed(usize),
}

/// How often the sender is read (each reading is an `ss` process).
const EVERY: Duration = Duration::from_millis(250);

impl Probe {
    /// Reads, every [`EVERY`] until `until` from now, the busiest
    /// connection with local port `port` (`local`: the sender is the
    /// iperf3 server; else the remote port is) in network namespace
    /// `netns` (`None`: this one).
    pub fn start(netns: Option<String>, port: u16, local: bool, until: Duration) -> Probe {
        Probe(std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut startup = Startup::Unknown;
            let mut last = None;
            loop {
                let now = start.elapsed();
                if let Some(line) = read(netns.as_deref(), port, local) {
                    startup = startup.after(&line, now);
                    last = Some(line);
                }
                if now >= until {
                    break;
                }
                std::thread::sleep(EVERY.min(until - now));
            }
            Reading {
                line: last
                    .as_deref()
                    .and_then(fields)
                    .unwrap_or_else(|| "no reading (the connection had closed?)".into()),
                startup,
            }
        }))
    }

    pub fn finish(self) -> Reading {
        self.0.join().unwrap_or(Reading {
            line: "no reading (the probe panicked)".into(),
            startup: Startup::Unknown,
        })
    }
}

impl Startup {
    /// Taking one more reading, `at` into the run.
    fn after(self, line: &str, at: Duration) -> Startup {
        let Some(gain) = bbr_pacing_gain(line) else {
            return self;
        };
        // ProbeRTT (a window of 4 packets, gain 1) interrupts Startup
        // without ending it.
        let probe_rtt = value(line, "cwnd:")
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c <= 4);
        match self {
            Startup::Left(_) => self,
            _ if gain < 2.0 && !probe_rtt => Startup::Left(at),
            Startup::Stayed(n) => Startup::Stayed(n + 1),
            Startup::Unknown => Startup::Stayed(1),
        }
    }
}

impl std::fmt::Display for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Startup::Unknown => Ok(()),
            Startup::Left(at) => write!(f, "BBR left Startup {:.1} s in", at.as_secs_f64()),
            Startup::Stayed(n) => write!(f, "BBR never left Startup ({n} readings)"),
        }
    }
}

/// The busiest matching connection's `ss -i` line.
fn read(netns: Option<&str>, port: u16, local: bool) -> Option<String> {
    let side = if local { "sport" } else { "dport" };
    let filter = format!("( {side} = :{port} )");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ss"]);
            c
        }
        None => Command::new("ss"),
    };
    let out = cmd
        .args(["-tinH", "state", "established", &filter])
        .output()
        .ok()?;
    busiest(&String::from_utf8_lossy(&out.stdout)).map(String::from)
}

/// Of `ss -tinH` output, the connection that moved most bytes.
fn busiest(ss: &str) -> Option<&str> {
    // Each connection is an address line followed by an indented
    // line of `key:value` words.
    let acked = |line: &str| -> u64 {
        value(line, "bytes_acked:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    ss.lines()
        .filter(|l| l.contains("bytes_"))
        .max_by_key(|l| acked(l))
}

/// The fields worth comparing, of one connection's `ss -i` line.
fn fields(line: &str) -> Option<String> {
    let mut shown = Vec::new();
    for key in FIELDS {
        if let Some(v) = value(line, key) {
            let key = key.trim_end_matches(':');
            shown.push(format!("{key} {v}"));
        }
    }
    if let Some(gain) = bbr_pacing_gain(line) {
        shown.push(format!("bbr pacing_gain {gain}"));
    }
    let sent: f64 = value(line, "bytes_sent:")?.parse().ok()?;
    let again: f64 = value(line, "bytes_retrans:").map_or(Some(0.0), |v| v.parse().ok())?;
    shown.push(format!("sent again {:.2}%", 100.0 * again / sent.max(1.0)));
    Some(shown.join(", "))
}

/// The value after `key` in an `ss -i` line (`delivery_rate` is followed
/// by a space, the others by a colon).
fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix(key) {
            return Some(if v.is_empty() { words.next()? } else { v });
        }
    }
    None
}

/// BBR's pacing gain, from the `bbr:(bw:..,mrtt:..,pacing_gain:..,..)`
/// word of an `ss -i` line.
fn bbr_pacing_gain(line: &str) -> Option<f64> {
    let bbr = line.split_whitespace().find(|w| w.starts_with("bbr:("))?;
    bbr.trim_start_matches("bbr:(")
        .trim_end_matches(')')
        .split(',')
        .find_map(|kv| kv.strip_prefix("pacing_gain:"))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_connection_is_read() {
        let ss = "0 0 10.0.0.2:5201 10.0.0.1:40000\n\t cubic wscale:7,7 rtt:50.1/1 cwnd:10 bytes_sent:100 bytes_acked:100\n\
                  0 0 10.0.0.2:5201 10.0.0.1:40002\n\t bbr rtt:51.2/0.4 minrtt:50.3 cwnd:1200 bytes_sent:2000000 bytes_retrans:20000 bytes_acked:1900000 delivery_rate 200Mbps rwnd_limited:1500ms(12.5%) dsack_dups:7 reord_seen:3 snd_wnd:3000000\n";
        assert_eq!(
            fields(busiest(ss).unwrap()).unwrap(),
            "cwnd 1200, minrtt 50.3, rtt 51.2/0.4, snd_wnd 3000000, rwnd_limited 1500ms(12.5%), \
             bytes_retrans 20000, dsack_dups 7, reord_seen 3, delivery_rate 200Mbps, sent again 1.00%"
        );
        assert_eq!(busiest("nothing here"), None);
    }

    fn bbr(gain: &str, cwnd: u32) -> String {
        format!(
            "\t bbr rtt:51.2/0.4 cwnd:{cwnd} bytes_sent:2000000 bytes_acked:1900000 \
             bbr:(bw:286634240bps,mrtt:50.082,pacing_gain:{gain},cwnd_gain:2.88672) delivery_rate 200Mbps"
        )
    }

    #[test]
    fn a_bbr_sender_that_never_leaves_startup_says_so_and_probe_rtt_does_not_count_as_leaving() {
        let s = Duration::from_secs;
        let mut startup = Startup::Unknown;
        for (i, (gain, cwnd)) in [("2.88672", 3896), ("1", 4), ("2.88672", 3900)]
            .into_iter()
            .enumerate()
        {
            startup = startup.after(&bbr(gain, cwnd), s(i as u64));
        }
        assert_eq!(startup, Startup::Stayed(3));
        assert_eq!(startup.to_string(), "BBR never left Startup (3 readings)");
        assert_eq!(
            fields(&bbr("2.88672", 3896)).unwrap(),
            "cwnd 3896, rtt 51.2/0.4, delivery_rate 200Mbps, bbr pacing_gain 2.88672, sent again 0.00%"
        );
    }

    #[test]
    fn a_bbr_sender_that_drains_has_left_startup_from_then_on() {
        let s = Duration::from_secs;
        let startup = Startup::Unknown
            .after(&bbr("2.88672", 3896), s(1))
            .after(&bbr("0.34375", 2000), s(4))
            .after(&bbr("2.88672", 3896), s(5));
        assert_eq!(startup, Startup::Left(s(4)));
        // CUBIC says nothing about it.
        let cubic = "\t cubic rtt:50.1/1 cwnd:10 bytes_sent:100 bytes_acked:100";
        assert_eq!(Startup::Unknown.after(cubic, s(1)), Startup::Unknown);
    }
}
