//! The census's files: one JSON object and one CSV line per instruction and setup, and the
//! table as a grid of coloured cells (`census.svg`).

use std::fmt::Write as _;
use std::fs;

use hypercall_abi::Mode;

use super::{class, reference, verdict, Cell, Row, SETUPS};

/// One result per row and setup.
fn records(rows: &[Row]) -> Vec<[String; 9]> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.name != "nop") {
        for (index, setup) in SETUPS.iter().enumerate() {
            let verdict = if setup.mode == Mode::Native {
                "native".to_string()
            } else {
                verdict(&row.cells[reference(*setup)], &row.cells[index])
            };
            let (outcome, value, entries, instructions) = match &row.cells[index] {
                Cell::Seen { outcome, value, entries, instructions } => {
                    (outcome.clone(), value.clone(), entries.to_string(), instructions.to_string())
                }
                Cell::Killed(reason) => ("kill".into(), reason.clone(), "".into(), "".into()),
            };
            out.push([
                row.ring.clone(),
                row.name.clone(),
                class(&row.name).into(),
                setup.label(),
                setup.emulator.name().into(),
                outcome,
                value,
                verdict,
                format!("{instructions}/{entries}"),
            ]);
        }
    }
    out
}

const KEYS: [&str; 9] =
    ["ring", "instruction", "class", "mode", "emulator", "outcome", "value", "verdict", "cost"];

pub fn write_files(dir: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let records = records(rows);
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut json = String::from("[\n");
    for (i, record) in records.iter().enumerate() {
        let fields: Vec<String> =
            KEYS.iter().zip(record).map(|(k, v)| format!("\"{k}\": {}", quote(v))).collect();
        let comma = if i + 1 < records.len() { "," } else { "" };
        let _ = writeln!(json, "  {{{}}}{comma}", fields.join(", "));
    }
    json.push_str("]\n");
    let mut csv = KEYS.join(",") + "\n";
    for record in &records {
        let cells: Vec<String> = record.iter().map(|v| quote(v)).collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    for (name, text) in [("results.json", json), ("results.csv", csv), ("census.svg", svg(rows))] {
        fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    Ok(())
}

/// The table as a grid of coloured cells: green ok, blue trapped and emulated, red wrong,
/// black kill (native columns grey).
pub fn svg(rows: &[Row]) -> String {
    let (cell_w, cell_h, left, top) = (110, 16, 230, 40);
    let shown: Vec<&Row> = rows.iter().filter(|r| r.name != "nop").collect();
    let (width, height) = (left + cell_w * SETUPS.len() + 10, top + cell_h * shown.len() + 10);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">\n"
    );
    for (i, setup) in SETUPS.iter().enumerate() {
        let _ =
            writeln!(out, "<text x=\"{}\" y=\"30\">{}</text>", left + i * cell_w + 4, setup.name());
    }
    for (r, row) in shown.iter().enumerate() {
        let y = top + r * cell_h;
        let _ = writeln!(out, "<text x=\"4\" y=\"{}\">{} {}</text>", y + 12, row.ring, row.name);
        for (i, setup) in SETUPS.iter().enumerate() {
            let text = if setup.mode == Mode::Native {
                "native".to_string()
            } else {
                verdict(&row.cells[reference(*setup)], &row.cells[i])
            };
            let colour = match text.split(' ').next().unwrap_or("") {
                "ok" => "#7c7",
                "trapped+emulated" => "#79d",
                "kill" => "#333",
                "native" => "#ccc",
                _ => "#d66",
            };
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"><title>{}</title></rect>",
                left + i * cell_w,
                cell_w - 2,
                cell_h - 2,
                text.replace('&', "&amp;").replace('<', "&lt;").replace('\'', "&apos;")
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
