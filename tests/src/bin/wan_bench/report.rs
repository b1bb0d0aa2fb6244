//! The tables: one per path as it finishes, and a summary in markdown at
//! the end (one line per path, direction and stream count).

use crate::rows::{dir_name, row_name, sender_name, Run, Sender};
use crate::sender_info::Startup;
use crate::{Dir, Path, Row};

const NAME: usize = 46;

/// Says who sends in each row, so the ratios read right.
pub fn print_senders(algorithms: &[&str]) {
    let first = algorithms[0];
    println!("who sends over the path:");
    println!(
        "  reference: kernel TCP both ways, once per algorithm ({})",
        algorithms.join(", ")
    );
    println!(
        "  underpass -> wireguard-go: down, the peer's kernel (once per algorithm, compared with the reference of the same one); up, underpass's stack (compared with every reference)"
    );
    println!(
        "  underpass -> gateway: underpass's stacks both ways (the kernel, with {first}, only carries the loopback legs to iperf3); compared with every reference"
    );
    println!(
        "after each run: what the relay did each way (random loss, drops at the bottleneck's queue, datagrams its socket dropped unread = overflowed) and its CPU"
    );
}

/// The (streams, direction) columns, in the order they were run.
fn columns(runs: &[Run]) -> Vec<(u32, Dir)> {
    let mut out = Vec::new();
    for r in runs {
        if !out.contains(&(r.streams, r.dir)) {
            out.push((r.streams, r.dir));
        }
    }
    out
}

fn find(runs: &[Run], row: Row, (streams, dir): (u32, Dir), sender: Sender) -> Option<&Run> {
    runs.iter()
        .find(|r| (r.row, r.streams, r.dir, r.sender) == (row, streams, dir, sender))
}

/// `row`'s run in `column` to set against the reference whose kernel uses
/// `algorithm`: the one whose sender is the same, or underpass's.
fn against<'a>(
    runs: &'a [Run],
    row: Row,
    column: (u32, Dir),
    algorithm: &'static str,
) -> Option<&'a Run> {
    find(runs, row, column, Sender::Kernel(algorithm))
        .or_else(|| find(runs, row, column, Sender::Underpass))
}

/// A run's figure; `S` after it: its kernel sender (BBR) never left
/// Startup, which costs a run drops that one that left does not pay.
fn mbit(run: Option<&Run>) -> String {
    let figure = match run {
        None => return "-".into(),
        Some(r) if r.failed.is_some() => return "0!".into(),
        Some(r) if r.mbit >= 100.0 => format!("{:.0}", r.mbit),
        Some(r) if r.mbit >= 10.0 => format!("{:.1}", r.mbit),
        Some(r) => format!("{:.2}", r.mbit),
    };
    match run.map(|r| r.startup) {
        Some(Startup::Stayed(_)) => format!("{figure} S"),
        _ => figure,
    }
}

/// Says what `S` means, where a run has one.
fn print_startup_legend<'a>(runs: impl IntoIterator<Item = &'a Run>) {
    if runs
        .into_iter()
        .any(|r| matches!(r.startup, Startup::Stayed(_)))
    {
        println!("S = the kernel sender (BBR v1) never left Startup in that run (it paced at 2.89x its estimate throughout)");
    }
}

fn ratio(ours: Option<&Run>, reference: Option<&Run>) -> String {
    match (ours, reference) {
        (Some(o), Some(r)) if r.mbit > 0.0 && r.failed.is_none() => {
            format!("{:.2}", o.mbit / r.mbit)
        }
        _ => "-".into(),
    }
}

fn column_name((streams, dir): (u32, Dir)) -> String {
    format!("{} x{streams}", dir_name(dir))
}

pub fn print_path(path: &Path, runs: &[Run], algorithms: &[&'static str]) {
    let columns = columns(runs);
    println!();
    println!("{path}: Mbit/s");
    print!("{:<NAME$}", "");
    for &c in &columns {
        print!(" {:>9}", column_name(c));
    }
    println!();
    let mut lines: Vec<(Row, Sender)> = Vec::new();
    for r in runs {
        if !lines.contains(&(r.row, r.sender)) {
            lines.push((r.row, r.sender));
        }
    }
    for &(row, sender) in &lines {
        print!(
            "{:<NAME$}",
            format!("{}, {}", row_name(row), sender_name(sender))
        );
        for &c in &columns {
            print!(" {:>9}", mbit(find(runs, row, c, sender)));
        }
        println!();
    }
    let ours: Vec<Row> = [Row::Underpass, Row::Gateway]
        .into_iter()
        .filter(|row| runs.iter().any(|r| r.row == *row))
        .collect();
    for &algorithm in algorithms {
        if !runs.iter().any(|r| r.row == Row::Reference) || ours.is_empty() {
            break;
        }
        println!(
            "ratio to the reference, kernel {algorithm} (same sender where the kernel sends):"
        );
        for &row in &ours {
            print!("{:<NAME$}", format!("  {}", row_name(row)));
            for &c in &columns {
                let reference = find(runs, Row::Reference, c, Sender::Kernel(algorithm));
                print!(" {:>9}", ratio(against(runs, row, c, algorithm), reference));
            }
            println!();
        }
    }
    if runs.iter().any(|r| r.failed.is_some()) {
        println!(
            "0! = no result: iperf3 failed or was killed 25 s late (a wedged tunnel); counted as 0"
        );
    }
    print_startup_legend(runs);
}

/// One markdown line per path, direction and stream count: the
/// references, and each of ours with its ratio to each reference.
pub fn print_summary(results: &[(Path, Vec<Run>)], algorithms: &[&'static str]) {
    let all: Vec<&Run> = results.iter().flat_map(|(_, runs)| runs).collect();
    let has = |row: Row| all.iter().any(|r| r.row == row);
    let reference = has(Row::Reference);
    let ours: Vec<Row> = [Row::Underpass, Row::Gateway]
        .into_iter()
        .filter(|&row| has(row))
        .collect();
    println!();
    println!("summary (Mbit/s; ratio = ours / reference with that kernel algorithm; where underpass's download shows two figures, the peer's kernel sent with {}; 0! = no result)", algorithms.join(" / "));
    print_startup_legend(all.iter().copied());
    println!();
    let mut header = vec!["RTT ms", "loss", "bottleneck", "dir", "streams"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    if reference {
        header.extend(algorithms.iter().map(|a| format!("reference {a}")));
    }
    for &row in &ours {
        header.push(short(row).into());
        if reference {
            header.extend(algorithms.iter().map(|a| format!("/ {a}")));
        }
    }
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for (path, runs) in results {
        for c in columns(runs) {
            let mut cells = vec![
                format!("{}", path.rtt_ms),
                format!("{}%", path.loss * 100.0),
                path.rate.map_or("none".into(), |r| format!("{r} Mbit/s")),
                dir_name(c.1).into(),
                c.0.to_string(),
            ];
            let references: Vec<Option<&Run>> = algorithms
                .iter()
                .map(|&a| find(runs, Row::Reference, c, Sender::Kernel(a)))
                .collect();
            if reference {
                cells.extend(references.iter().map(|&r| mbit(r)));
            }
            for &row in &ours {
                let figures: Vec<String> = runs
                    .iter()
                    .filter(|r| (r.row, r.streams, r.dir) == (row, c.0, c.1))
                    .map(|r| mbit(Some(r)))
                    .collect();
                cells.push(figures.join(" / "));
                if reference {
                    for (&a, &r) in algorithms.iter().zip(&references) {
                        cells.push(ratio(against(runs, row, c, a), r));
                    }
                }
            }
            println!("| {} |", cells.join(" | "));
        }
    }
}

fn short(row: Row) -> &'static str {
    match row {
        Row::Underpass => "underpass",
        Row::Gateway => "gateway",
        Row::Reference => "reference",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(mbit: f64, startup: Startup) -> Run {
        Run {
            row: Row::Underpass,
            sender: Sender::Kernel("bbr"),
            dir: Dir::Down,
            streams: 1,
            mbit,
            failed: None,
            startup,
        }
    }

    #[test]
    fn a_run_whose_sender_never_left_startup_is_marked() {
        assert_eq!(mbit(Some(&run(235.4, Startup::Stayed(40)))), "235 S");
        assert_eq!(
            mbit(Some(&run(245.0, Startup::Left(Duration::from_secs(4))))),
            "245"
        );
        assert_eq!(mbit(Some(&run(3.27, Startup::Unknown))), "3.27");
        let mut failed = run(0.0, Startup::Stayed(3));
        failed.failed = Some("iperf3 failed".into());
        assert_eq!(mbit(Some(&failed)), "0!");
    }
}
