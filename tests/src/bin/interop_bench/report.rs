//! The tables the benchmark prints.

use crate::measure::{Percentiles, Row};

const NAME: usize = 50;

pub fn print_header() {
    println!(
        "{:<NAME$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "", "down 1", "up 1", "down 8", "up 8", "ttfb p50", "p90", "CPU s/GiB", "RSS MiB"
    );
    println!(
        "{:<NAME$} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "Mbit/s", "Mbit/s", "Mbit/s", "Mbit/s", "ms", "ms"
    );
}

fn opt(v: Option<f64>, width: usize, precision: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or(format!("{:>width$}", "-"), |v| {
            format!("{v:>width$.precision$}")
        })
}

pub fn print_row(r: &Row) {
    let ms = |v: f64| opt(Some(v), 8, 2);
    println!(
        "{:<NAME$} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {} {} {} {}",
        r.name,
        r.down1,
        r.up1,
        r.down8,
        r.up8,
        ms(r.ttfb50),
        ms(r.ttfb90),
        opt(r.cpu_per_gib, 9, 2),
        opt(r.rss_mib, 8, 1)
    );
}

pub fn print_ratio(name: &str, a: &Row, b: &Row) {
    // A side that moved nothing or never answered has no ratio.
    let r = |x: f64, y: f64| opt(Some(x / y).filter(|_| y > 0.0), 8, 2);
    println!(
        "{:<NAME$} {} {} {} {} {} {}",
        name,
        r(a.down1, b.down1),
        r(a.up1, b.up1),
        r(a.down8, b.down8),
        r(a.up8, b.up8),
        r(a.ttfb50, b.ttfb50),
        r(a.ttfb90, b.ttfb90)
    );
}

/// Time to first byte through each of underpass's entry points: SOCKS5
/// (the table's), the HTTP proxy (an absolute-form GET: the request is
/// in hand before the tunnel connection opens, so it can leave as soon as
/// the connection is up) and a TCPClientTunnel (curl talks to the origin
/// as if directly, no proxy negotiation).
pub struct Entries {
    pub name: String,
    pub socks: Percentiles,
    pub http: Percentiles,
    pub forward: Percentiles,
}

fn pair((a, b): Percentiles) -> String {
    format!("{:>15}", format!("{a:.2} / {b:.2}"))
}

pub fn print_entries(entries: &[Entries]) {
    if entries.is_empty() {
        return;
    }
    println!();
    println!("time to first byte by entry point, ms p50 / p90 (the table's figure is SOCKS5)");
    println!(
        "{:<NAME$} {:>15} {:>15} {:>15}",
        "", "SOCKS5", "HTTP proxy", "TCPClientTunnel"
    );
    for e in entries {
        println!(
            "{:<NAME$} {} {} {}",
            e.name,
            pair(e.socks),
            pair(e.http),
            pair(e.forward)
        );
    }
}

/// One way in of the interleaved comparison: its percentiles, its paired
/// ratio to the reference, and to the `--against` build's same way in.
pub struct Round {
    pub name: String,
    pub ttfb: Percentiles,
    pub to_reference: f64,
    pub to_against: Option<f64>,
}

pub fn print_rounds(rounds: usize, lines: &[Round]) {
    println!();
    println!(
        "time to first byte, interleaved: {rounds} rounds, each taking one request of every way in a random order"
    );
    let against = lines.iter().any(|l| l.to_against.is_some());
    print!("{:<NAME$} {:>15} {:>15}", "", "ms p50 / p90", "/ reference");
    println!("{}", if against { "   / --against" } else { "" });
    for l in lines {
        print!(
            "{:<NAME$} {} {:>15.3}",
            l.name,
            pair(l.ttfb),
            l.to_reference
        );
        match l.to_against {
            Some(r) => println!(" {r:>14.3}"),
            None => println!(),
        }
    }
    println!(
        "(a ratio is the median over rounds of this way's time / the other's in the same round)"
    );
}
