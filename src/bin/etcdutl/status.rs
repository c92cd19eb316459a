//! What etcdutl prints: `snapshot status` and `hashkv` in etcd's output formats
//! (`simple`, `json`, `table`, `fields`), byte for byte as etcd's printers.

use etcd_snapshot::Status;

/// etcd's `--write-out` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    /// Comma-separated values.
    Simple,
    /// One JSON object.
    Json,
    /// A table with borders.
    Table,
    /// `"Name" : value` lines.
    Fields,
}

/// A size as go-humanize's `Bytes` writes it (SI units, one decimal below 10).
pub fn human_bytes(n: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor();
    let suffix = SIZES[e as usize];
    let val = (n as f64 / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// A table as etcdctl's tablewriter draws it with right alignment: header cells
/// upper-cased and centred, every cell padded by one space.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].chars().count()]).max())
        .map(|w| w.unwrap_or(0))
        .collect();
    let rule: String =
        widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let mut out = rule.clone();
    for (h, w) in header.iter().zip(&widths) {
        let pad = w - h.chars().count();
        let left = pad / 2;
        out.push_str(&format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(pad - left)));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!("| {cell:>w$} "));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

/// `snapshot status` output.
pub fn print_status(status: &Status, write_out: WriteOut) -> String {
    let cells = vec![
        format!("{:x}", status.hash),
        status.revision.to_string(),
        status.total_key.to_string(),
        human_bytes(status.total_size),
    ];
    match write_out {
        WriteOut::Simple => format!("{}\n", cells.join(", ")),
        WriteOut::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            status.hash, status.revision, status.total_key, status.total_size
        ),
        WriteOut::Table => table(&["hash", "revision", "total keys", "total size"], &[cells]),
        WriteOut::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            status.hash, status.revision, status.total_key, status.total_size
        ),
    }
}

/// `hashkv` output (etcdutl 3.5's printers).
pub fn print_hashkv(
    hash: u32,
    hash_revision: i64,
    compact_revision: i64,
    write_out: WriteOut,
) -> String {
    let cells = vec![hash.to_string(), hash_revision.to_string(), compact_revision.to_string()];
    match write_out {
        WriteOut::Simple => format!("{}\n", cells.join(", ")),
        WriteOut::Json => format!(
            "{{\"hash\":{hash},\"hashRevision\":{hash_revision},\"compactRevision\":{compact_revision}}}\n"
        ),
        WriteOut::Table => table(&["hash", "hash revision", "compact revision"], &[cells]),
        WriteOut::Fields => format!(
            "\"Hash\" : {hash}\n\"Hash revision\" : {hash_revision}\n\"Compact revision\" : {compact_revision}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_go_humanize() {
        for (n, want) in [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (20480, "20 kB"),
            (1_234_567, "1.2 MB"),
            (82_854_982, "83 MB"),
            (9_950_000, "10 MB"),
            (1 << 30, "1.1 GB"),
        ] {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn table_as_tablewriter() {
        // etcdctl 3.4's `snapshot status -w table` of a real etcd snapshot.
        let status = Status { hash: 0x82ca5572, revision: 21, total_key: 24, total_size: 20480 };
        let want = "\
+----------+----------+------------+------------+
|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |
+----------+----------+------------+------------+
| 82ca5572 |       21 |         24 |      20 kB |
+----------+----------+------------+------------+
";
        assert_eq!(print_status(&status, WriteOut::Table), want);
        assert_eq!(print_status(&status, WriteOut::Simple), "82ca5572, 21, 24, 20 kB\n");
        assert_eq!(
            print_status(&status, WriteOut::Json),
            "{\"hash\":2194298226,\"revision\":21,\"totalKey\":24,\"totalSize\":20480}\n"
        );
    }
}
