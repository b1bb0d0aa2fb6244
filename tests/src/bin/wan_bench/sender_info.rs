//! What a kernel sender says about its connection near the end of a run
//! (its `tcp_info`, read with `ss -ti`): whether the receiver's window
//! held it back, how much it sent again and how much of that the receiver
//! reported as needless (D-SACK), and whether BBR ever left Startup.
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

/// A reading taken in the background while iperf3 runs.
pub struct Probe(JoinHandle<Option<String>>);

impl Probe {
    /// Reads, `after` from now, the busiest connection with local port
    /// `port` (`local`: the sender is the iperf3 server; else the remote
    /// port is) in network namespace `netns` (`None`: this one).
    pub fn start(netns: Option<String>, port: u16, local: bool, after: Duration) -> Probe {
        Probe(std::thread::spawn(move || {
            std::thread::sleep(after);
            let side = if local { "sport" } else { "dport" };
            let filter = format!("( {side} = :{port} )");
            let mut cmd = match &netns {
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
            busiest(&String::from_utf8_lossy(&out.stdout))
        }))
    }

    /// The reading, one line, or why there is none.
    pub fn finish(self) -> String {
        match self.0.join() {
            Ok(Some(line)) => line,
            _ => "no reading (the connection had closed?)".into(),
        }
    }
}

/// Of `ss -tinH` output, the connection that moved most bytes, as the
/// fields worth comparing.
fn busiest(ss: &str) -> Option<String> {
    // Each connection is an address line followed by an indented
    // line of `key:value` words.
    let sockets = ss.lines().filter(|l| l.contains("bytes_"));
    let acked = |line: &str| -> u64 {
        value(line, "bytes_acked:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let line = sockets.max_by_key(|l| acked(l))?;
    let mut shown = Vec::new();
    for key in FIELDS {
        if let Some(v) = value(line, key) {
            let key = key.trim_end_matches(':');
            shown.push(format!("{key} {v}"));
        }
    }
    if let Some(gain) = bbr_pacing_gain(line) {
        // 2.89 this late means Startup never ended: a kernel sender whose
        // send buffer holds less than Startup's window has only
        // application-limited rate samples, and BBR v1 leaves Startup on
        // others only (seen at 50 ms against our receiver).
        let mode = if gain > 2.0 { " (Startup)" } else { "" };
        shown.push(format!("bbr pacing_gain {gain}{mode}"));
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
            busiest(ss).unwrap(),
            "cwnd 1200, minrtt 50.3, rtt 51.2/0.4, snd_wnd 3000000, rwnd_limited 1500ms(12.5%), \
             bytes_retrans 20000, dsack_dups 7, reord_seen 3, delivery_rate 200Mbps, sent again 1.00%"
        );
        assert_eq!(busiest("nothing here"), None);
    }

    #[test]
    fn a_bbr_sender_still_in_startup_says_so() {
        let ss = "0 0 10.0.0.2:5201 10.0.0.1:40002\n\t bbr rtt:51.2/0.4 cwnd:3896 bytes_sent:2000000 bytes_acked:1900000 \
                  bbr:(bw:286634240bps,mrtt:50.082,pacing_gain:2.88672,cwnd_gain:2.88672) delivery_rate 200Mbps\n";
        assert_eq!(
            busiest(ss).unwrap(),
            "cwnd 3896, rtt 51.2/0.4, delivery_rate 200Mbps, bbr pacing_gain 2.88672 (Startup), sent again 0.00%"
        );
    }
}
