//! Grading many solutions: the input a teacher brings (JSON Lines or CSV, one solution per row)
//! and the result record written for each row. A malformed row is a row error carrying its
//! line number and the reason; the other rows are still graded. The same code serves the CLI
//! (`genprm grade`) and the browser grading page.
//!
//! Fields (JSON keys or CSV header names, CSV names matched without regard to case):
//! `problem` (required); `steps` (an array of paragraph strings; in CSV a JSON array in the cell)
//! or `solution` (the whole text, split into paragraphs on blank lines); optional `id` and
//! `student_id`; optional `label`, the reference first wrong step (0-based, −1 for a correct
//! solution). Other fields and columns are ignored, so spreadsheet exports work as they are.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::{Solution, split_paragraphs};
use super::{PartialVerification, SolutionScores, StepVerdict, Verification};
use crate::error::{Error, Result};

/// The format of a grading input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// JSON Lines: one JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

impl InputFormat {
    /// The format a file name implies: `.jsonl`/`.ndjson` or `.csv` (any case).
    pub fn from_file_name(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Ok(InputFormat::Jsonl)
        } else if lower.ends_with(".csv") {
            Ok(InputFormat::Csv)
        } else {
            Err(Error::InvalidInput {
                what: name.to_string(),
                message: "unknown grading input format: name the file *.jsonl (one JSON object per line) or *.csv (a header row, then one row per solution)".into(),
            })
        }
    }
}

/// One row of a grading input: a solution to grade, or the reason it cannot be graded.
#[derive(Debug, Clone, PartialEq)]
pub struct GradeRow {
    /// The 1-based line of the input file where the row starts.
    pub line: usize,
    /// The row's `id`, when it has one (kept even when the row is bad).
    pub id: Option<String>,
    /// The row's `student_id`, when it has one.
    pub student_id: Option<String>,
    /// The reference label, when the row has a valid one.
    pub label: Option<i64>,
    /// The solution, or why the row cannot be graded.
    pub solution: std::result::Result<Solution, String>,
}

/// Parses a grading input. Only problems with the file as a whole (a CSV header without a
/// `problem` column, say) are errors; each malformed row becomes a row error.
pub fn parse_input(bytes: &[u8], format: InputFormat, source: &str) -> Result<Vec<GradeRow>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // spreadsheet exports add a BOM
    let mut rows = match format {
        InputFormat::Jsonl => parse_jsonl(bytes),
        InputFormat::Csv => parse_csv(bytes, source)?,
    };
    // Fields named wrongly in every row (`question` for `problem`, say) are the file's mistake,
    // refused as a CSV header without the columns is, not a file of bad rows.
    if format == InputFormat::Jsonl && !rows.is_empty() && rows.iter().all(|r| r.solution.as_ref().is_err_and(|e| e.starts_with("missing field"))) {
        let first: Vec<String> = bytes
            .split(|&b| b == b'\n')
            .find_map(|l| serde_json::from_slice::<serde_json::Map<String, Value>>(l).ok())
            .map(|m| m.keys().map(|k| format!("`{k}`")).collect())
            .unwrap_or_default();
        return Err(Error::InvalidInput {
            what: source.to_string(),
            message: format!(
                "no row has the fields to grade (`problem`, and `steps` or `solution`); the first row's are {}",
                if first.is_empty() { "none".to_string() } else { first.join(", ") }
            ),
        });
    }
    refuse_duplicate_ids(&mut rows);
    Ok(rows)
}

/// A row whose `id` an earlier row already has becomes a row error naming that row: results
/// are told apart by id, so two rows with one id would be two answers to one question.
fn refuse_duplicate_ids(rows: &mut [GradeRow]) {
    let mut first: HashMap<String, usize> = HashMap::new();
    for row in rows.iter_mut() {
        let Some(id) = row.id.clone() else { continue };
        match first.get(&id) {
            Some(&line) => {
                if row.solution.is_ok() {
                    row.solution = Err(format!("the id {id:?} is also the id of line {line}: each row needs its own id"));
                    row.label = None;
                }
            }
            None => {
                first.insert(id, row.line);
            }
        }
    }
}

/// The line where a quoted CSV cell opens and is never closed, if one is: the csv reader would
/// read every line after it as part of that cell. Quotes are read as the csv reader reads them:
/// a quote opens a quoted cell only at a cell's start; inside one, a doubled quote is a quote.
pub fn unterminated_quote(bytes: &[u8]) -> Option<usize> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let (mut state, mut line, mut opened) = (State::Start, 1usize, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        state = match (state, b) {
            (State::Start, b'"') => {
                opened = line;
                State::Quoted
            }
            (State::Start | State::Unquoted | State::QuoteInQuoted, b',' | b'\n' | b'\r') => State::Start,
            (State::Start | State::Unquoted, _) => State::Unquoted,
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (State::QuoteInQuoted, _) => State::Unquoted,
        };
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            line += 1;
        }
    }
    (state == State::Quoted).then_some(opened)
}

/// The fields of one row before validation (absent fields are `None`).
#[derive(Default)]
struct RawRow {
    id: Option<Value>,
    student_id: Option<Value>,
    problem: Option<Value>,
    steps: Option<Value>,
    solution: Option<Value>,
    label: Option<Value>,
}

fn parse_jsonl(bytes: &[u8]) -> Vec<GradeRow> {
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line_no = i + 1;
        let raw = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(mut map)) => {
                let mut take = |k: &str| map.remove(k).filter(|v| !v.is_null());
                Ok(RawRow {
                    id: take("id"),
                    student_id: take("student_id"),
                    problem: take("problem"),
                    steps: take("steps"),
                    solution: take("solution"),
                    label: take("label"),
                })
            }
            Ok(other) => Err(format!("not a JSON object (found {})", json_kind(&other))),
            Err(e) => Err(format!("not JSON: {}", serde_message(&e))),
        };
        rows.push(match raw {
            Ok(raw) => build_row(line_no, raw),
            Err(reason) => GradeRow { line: line_no, id: None, student_id: None, label: None, solution: Err(reason) },
        });
    }
    rows
}

/// The column names a grading CSV may use.
const COLUMNS: &[&str] = &["id", "student_id", "problem", "steps", "solution", "label"];

fn parse_csv(bytes: &[u8], source: &str) -> Result<Vec<GradeRow>> {
    if let Some(line) = unterminated_quote(bytes) {
        return Err(Error::InvalidInput {
            what: format!("{source}, line {line}"),
            message: "a quoted cell opens here and is never closed, so every line after it would be read as part of that cell; close the quote (a quote inside a quoted cell is written twice: \"\")".into(),
        });
    }
    let header_error = |message: String| Error::InvalidInput { what: format!("{source}, line 1 (the header row)"), message };
    let mut reader = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(bytes);
    let header = reader.byte_headers().map_err(|e| header_error(format!("not CSV: {e}")))?.clone();
    if header.is_empty() || header.iter().all(|h| h.iter().all(u8::is_ascii_whitespace)) {
        return Err(header_error("the file is empty: a header row naming the columns (problem, steps or solution, …) comes first".into()));
    }
    let names: Vec<String> = header.iter().map(|h| String::from_utf8_lossy(h).trim().to_lowercase()).collect();
    let mut column: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(&known) = COLUMNS.iter().find(|c| **c == name.as_str())
            && column.insert(known, i).is_some()
        {
            return Err(header_error(format!("the column `{known}` appears twice")));
        }
    }
    let listed = || names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if !column.contains_key("problem") {
        return Err(header_error(format!("no `problem` column (the header has {})", listed())));
    }
    if !column.contains_key("steps") && !column.contains_key("solution") {
        return Err(header_error(format!(
            "no `steps` or `solution` column (the header has {}): give the paragraphs as a JSON array in `steps` or the whole text in `solution`",
            listed()
        )));
    }
    // Lines as a spreadsheet shows them: the csv reader counts only "\n", but it also ends a
    // record at a lone "\r" (old Mac exports), and rows are told apart (and resumed) by line.
    let lines = LineStarts::of(bytes);
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = lines.at(reader.position().byte());
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| lines.at(p.byte()));
                rows.push(GradeRow { line, id: None, student_id: None, label: None, solution: Err(format!("not CSV: {e}")) });
                continue;
            }
        }
        let line = record.position().map_or(line, |p| lines.at(p.byte()));
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // an empty row, as spreadsheets leave at the end
        }
        rows.push(csv_row(line, &record, &column, header.len()));
    }
    Ok(rows)
}

/// The byte offsets where lines start, a line ending at "\n", "\r\n" or a lone "\r".
struct LineStarts<'a> {
    bytes: &'a [u8],
    starts: Vec<u64>,
}

impl<'a> LineStarts<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        let mut starts = vec![0u64];
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                starts.push(i as u64 + 1);
            }
        }
        LineStarts { bytes, starts }
    }

    /// The 1-based line of the text at a byte offset (the csv reader may give the offset of the
    /// line break before a record; the record's line is the one after it).
    fn at(&self, byte: u64) -> usize {
        let mut b = byte as usize;
        while matches!(self.bytes.get(b), Some(b'\r' | b'\n')) {
            b += 1;
        }
        self.starts.partition_point(|&s| s <= b as u64).max(1)
    }
}

fn csv_row(line: usize, record: &csv::ByteRecord, column: &HashMap<&str, usize>, width: usize) -> GradeRow {
    let mut raw = RawRow::default();
    let mut problems: Vec<String> = Vec::new();
    let mut cells: HashMap<&str, String> = HashMap::new();
    let mut blank: Vec<&str> = Vec::new();
    for (&name, &i) in column {
        match record.get(i) {
            None => problems.push(format!("missing column `{name}`: the row has {} field(s), the header {width}", record.len())),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Err(_) => problems.push(format!("column `{name}` is not UTF-8 text (save the file as UTF-8)")),
                Ok(text) if text.trim().is_empty() => blank.push(name),
                Ok(text) => {
                    cells.insert(name, text.to_string());
                }
            },
        }
    }
    // The identifiers are kept even on a bad row, so the teacher can find it.
    raw.id = cells.remove("id").map(|s| Value::String(s.trim().to_string()));
    raw.student_id = cells.remove("student_id").map(|s| Value::String(s.trim().to_string()));
    if record.len() > width {
        problems.push(format!("the row has {} fields but the header only {width} (a comma in an unquoted cell?)", record.len()));
    }
    problems.sort();
    if let Some(first) = problems.into_iter().next() {
        let id = raw.id.as_ref().and_then(|v| v.as_str()).map(str::to_string);
        let student_id = raw.student_id.as_ref().and_then(|v| v.as_str()).map(str::to_string);
        return GradeRow { line, id, student_id, label: None, solution: Err(first) };
    }
    raw.problem = cells.remove("problem").map(Value::String);
    raw.solution = cells.remove("solution").map(Value::String);
    let mut early: Option<String> = None;
    if let Some(steps) = cells.remove("steps") {
        match serde_json::from_str::<Value>(&steps) {
            Ok(v) => raw.steps = Some(v),
            Err(e) => early = Some(format!("column `steps` is not a JSON array of strings: {}", serde_message(&e))),
        }
    }
    if let Some(label) = cells.remove("label") {
        match whole_number(label.trim()) {
            Some(n) => raw.label = Some(Value::from(n)),
            None => early = early.or(Some(format!("`label` must be an integer (the 0-based first wrong step, or -1), not {:?}", label.trim()))),
        }
    }
    let mut row = build_row(line, raw);
    if let Some(reason) = early {
        row.solution = Err(reason);
    }
    // A blank cell reads as absent (a file may have both a steps and a solution column, one of
    // them filled per row), but is named as empty, not missing.
    if let Err(reason) = &row.solution {
        let empty = if reason.starts_with("missing field `problem`") {
            blank.contains(&"problem").then(|| "`problem` is empty: there is no problem to grade against".to_string())
        } else if reason.starts_with("missing field: `steps`") {
            match (blank.contains(&"steps"), blank.contains(&"solution")) {
                (true, true) => Some("`steps` and `solution` are empty: there is nothing to grade".to_string()),
                (true, false) => Some("`steps` is empty: there is nothing to grade".to_string()),
                (false, true) => Some("`solution` is empty: there is nothing to grade".to_string()),
                (false, false) => None,
            }
        } else {
            None
        };
        if let Some(empty) = empty {
            row.solution = Err(empty);
        }
    }
    row
}

/// An integer written as one (`2`) or as a float with no fraction (`2.0`, as pandas writes a
/// column of integers with blanks in it).
fn whole_number(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| {
        let f = text.parse::<f64>().ok().filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15)?;
        Some(f as i64)
    })
}

/// Validates one row's fields into a solution, or the first reason it cannot be graded.
fn build_row(line: usize, raw: RawRow) -> GradeRow {
    let ident = |v: Option<Value>, name: &str| -> std::result::Result<Option<String>, String> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("`{name}` must be a string or a number, not {}", json_kind(&other))),
        }
    };
    let (id, id_err) = match ident(raw.id, "id") {
        Ok(v) => (v, None),
        Err(e) => (None, Some(e)),
    };
    let (student_id, sid_err) = match ident(raw.student_id, "student_id") {
        Ok(v) => (v, None),
        Err(e) => (None, Some(e)),
    };
    let label = match raw.label {
        None => Ok(None),
        Some(v) => match &v {
            Value::Number(n) => whole_number(&n.to_string()),
            _ => None,
        }
        .map(Some)
        .ok_or_else(|| format!("`label` must be an integer (the 0-based first wrong step, or -1), not {v}")),
    };
    let solution = (|| {
        if let Some(e) = id_err.or(sid_err) {
            return Err(e);
        }
        let label = label.clone()?;
        let problem = match raw.problem {
            None => return Err("missing field `problem`".to_string()),
            Some(Value::String(s)) => s,
            Some(other) => return Err(format!("`problem` must be a string, not {}", json_kind(&other))),
        };
        let steps = match (raw.steps, raw.solution) {
            (Some(_), Some(_)) => return Err("both `steps` and `solution` are given: give one of them".to_string()),
            (None, None) => {
                return Err("missing field: `steps` (an array of paragraphs) or `solution` (the whole text, paragraphs separated by blank lines)".to_string());
            }
            (Some(Value::Array(items)), None) => {
                let mut steps = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => steps.push(s),
                        other => return Err(format!("`steps[{i}]` must be a string, not {}", json_kind(&other))),
                    }
                }
                steps
            }
            (Some(other), None) => return Err(format!("`steps` must be an array of strings, not {}", json_kind(&other))),
            (None, Some(Value::String(text))) => {
                let steps = split_paragraphs(&text);
                if steps.is_empty() {
                    return Err("`solution` is empty: there is nothing to grade".to_string());
                }
                steps
            }
            (None, Some(other)) => return Err(format!("`solution` must be a string, not {}", json_kind(&other))),
        };
        let mut solution = Solution::new(problem, steps);
        solution.id = id.clone().or_else(|| student_id.clone());
        solution.label = label;
        solution.validate("").map_err(|e| match e {
            Error::InvalidInput { message, .. } => message.replace("there is nothing to verify", "there is nothing to grade"),
            other => other.to_string(),
        })?;
        Ok(solution)
    })();
    let label = solution.as_ref().ok().and_then(|s| s.label);
    GradeRow { line, id, student_id, label, solution }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message with the column, without its "line 1" (each row is its own text).
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    format!("{text} (column {})", e.column())
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Every step was judged.
    Graded,
    /// The row could not be read as a solution; `error` says why.
    BadRow,
    /// The verification stopped with an error (the conversation outgrew the model's context,
    /// say); the steps judged before it are kept.
    Failed,
}

/// The result of grading one input row: one JSON line of a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradeResult {
    /// The row's 1-based line in the input (the key a resumed run matches rows by).
    pub line: usize,
    /// The row's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The row's `student_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_id: Option<String>,
    /// Graded, a bad row, or failed part-way.
    pub status: RowStatus,
    /// Why the row is bad or the verification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each judged step's reward (the mean over samples), in order.
    pub rewards: Vec<f64>,
    /// 0-based index of the first step with reward < 0.5, or −1 when every step passed; absent
    /// when unknown (a bad row, or a failure before any wrong step).
    pub first_error_step: Option<i64>,
    /// Min/last/mean of the step rewards, when every step was judged.
    pub scores: Option<SolutionScores>,
    /// The reference first wrong step, when the row gives one.
    pub label: Option<i64>,
    /// Whether `first_error_step` equals `label`, when both are known.
    pub agreement: Option<bool>,
    /// The full verdicts: each step's rationales, code runs, judgements and rewards.
    pub steps: Vec<StepVerdict>,
}

impl GradeResult {
    fn base(row: &GradeRow, status: RowStatus) -> Self {
        GradeResult {
            line: row.line,
            id: row.id.clone(),
            student_id: row.student_id.clone(),
            status,
            error: None,
            rewards: Vec::new(),
            first_error_step: None,
            scores: None,
            label: row.label,
            agreement: None,
            steps: Vec::new(),
        }
    }

    /// The result of a row that could not be read.
    pub fn bad_row(row: &GradeRow, reason: &str) -> Self {
        GradeResult { error: Some(reason.to_string()), ..Self::base(row, RowStatus::BadRow) }
    }

    /// The result of a whole verification.
    pub fn graded(row: &GradeRow, v: Verification) -> Self {
        let mut r = Self::base(row, RowStatus::Graded);
        r.rewards = v.steps.iter().map(|s| s.reward).collect();
        r.first_error_step = Some(v.first_error_step);
        r.scores = Some(v.scores);
        r.agreement = r.label.map(|l| l == v.first_error_step);
        r.steps = v.steps;
        r
    }

    /// The result of a verification that stopped with an error: the steps judged before it, and
    /// the first wrong step if one of them is.
    pub fn failed(row: &GradeRow, partial: PartialVerification) -> Self {
        let mut r = Self::base(row, RowStatus::Failed);
        let v = partial.completed;
        r.error = Some(partial.error.to_string());
        r.rewards = v.steps.iter().map(|s| s.reward).collect();
        if v.first_error_step >= 0 {
            r.first_error_step = Some(v.first_error_step);
            r.agreement = r.label.map(|l| l == v.first_error_step);
        }
        r.steps = v.steps;
        r
    }

    /// The result of a row from its verification outcome.
    pub fn from_outcome(row: &GradeRow, outcome: std::result::Result<Verification, PartialVerification>) -> Self {
        match outcome {
            Ok(v) => Self::graded(row, v),
            Err(partial) => Self::failed(row, partial),
        }
    }
}

/// Matches the results a results file already holds to the input rows: the lines already
/// done. Each result must name a line of the input with the same `id` and `student_id`, once;
/// anything else means the file belongs to another input (or the input changed), an error
/// naming the results file's line.
pub fn done_lines(rows: &[GradeRow], kept: &[GradeResult], results_name: &str) -> Result<HashSet<usize>> {
    let by_line: HashMap<usize, &GradeRow> = rows.iter().map(|r| (r.line, r)).collect();
    let mut done = HashSet::new();
    for (i, result) in kept.iter().enumerate() {
        let what = format!("{results_name}, result {}", i + 1);
        let Some(row) = by_line.get(&result.line) else {
            return Err(Error::InvalidInput {
                what,
                message: format!("a result for input line {}, where the input has no row: is this the results file of another input?", result.line),
            });
        };
        if row.id != result.id || row.student_id != result.student_id {
            return Err(Error::InvalidInput {
                what,
                message: format!(
                    "the result for input line {} has id {} / student_id {} but that row has {} / {}: the input changed since these results were written",
                    result.line,
                    shown(&result.id),
                    shown(&result.student_id),
                    shown(&row.id),
                    shown(&row.student_id)
                ),
            });
        }
        if !done.insert(result.line) {
            return Err(Error::InvalidInput { what, message: format!("a second result for input line {}", result.line) });
        }
    }
    Ok(done)
}

/// An identifier as a message shows it: quoted, or "none".
fn shown(id: &Option<String>) -> String {
    id.as_ref().map_or_else(|| "none".to_string(), |s| format!("{s:?}"))
}

/// Totals over a set of results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GradeSummary {
    /// Rows with a result.
    pub rows: usize,
    /// Rows whose every step was judged.
    pub graded: usize,
    /// Rows that could not be read.
    pub bad_rows: usize,
    /// Rows whose verification failed part-way.
    pub failed: usize,
    /// Graded rows with a reference label.
    pub labelled: usize,
    /// Graded rows whose first wrong step equals the label.
    pub agreed: usize,
}

impl GradeSummary {
    /// Counts `results`.
    pub fn of(results: &[GradeResult]) -> Self {
        let mut s = GradeSummary { rows: results.len(), ..Default::default() };
        for r in results {
            match r.status {
                RowStatus::Graded => s.graded += 1,
                RowStatus::BadRow => s.bad_rows += 1,
                RowStatus::Failed => s.failed += 1,
            }
            if r.status == RowStatus::Graded
                && let Some(agree) = r.agreement
            {
                s.labelled += 1;
                s.agreed += usize::from(agree);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(rows: &[GradeRow]) -> Vec<(usize, std::result::Result<usize, String>)> {
        rows.iter().map(|r| (r.line, r.solution.as_ref().map(|s| s.steps.len()).map_err(Clone::clone))).collect()
    }

    fn bad(rows: &[GradeRow], line: usize) -> String {
        rows.iter().find(|r| r.line == line).unwrap_or_else(|| panic!("no row at line {line}")).solution.clone().unwrap_err()
    }

    #[test]
    fn jsonl_rows_with_steps_or_a_solution_text() {
        let text = concat!(
            "{\"id\": \"a\", \"problem\": \"2+3?\", \"steps\": [\"2+3=5\", \"So 5.\"], \"label\": -1}\n",
            "\n",
            "{\"student_id\": 17, \"problem\": \"6*7?\", \"solution\": \"6*7 = 42.\\n\\nThe answer is 42.\\n\", \"name\": \"ignored\"}\r\n",
        );
        let rows = parse_input(format!("\u{feff}{text}").as_bytes(), InputFormat::Jsonl, "in.jsonl").unwrap();
        assert_eq!(reasons(&rows), vec![(1, Ok(2)), (3, Ok(2))]);
        assert_eq!(rows[0].id.as_deref(), Some("a"));
        assert_eq!(rows[0].label, Some(-1));
        assert_eq!(rows[1].student_id.as_deref(), Some("17"));
        let s = rows[1].solution.as_ref().unwrap();
        assert_eq!(s.steps, vec!["6*7 = 42.", "The answer is 42."]);
        assert_eq!(s.id.as_deref(), Some("17"));
    }

    #[test]
    fn every_bad_jsonl_row_is_a_row_error_and_the_rest_parse() {
        let lines = [
            r#"{"problem": "p", "steps": ["a"]}"#,                     // 1 fine
            r#"{"problem": "p", "steps": ["a"],"#,                     // 2 not JSON
            r#"["p", ["a"]]"#,                                         // 3 not an object
            r#"{"steps": ["a"]}"#,                                     // 4 no problem
            r#"{"id": "x", "problem": "p"}"#,                          // 5 neither steps nor solution
            r#"{"problem": "p", "steps": ["a"], "solution": "a"}"#,    // 6 both
            r#"{"problem": "p", "steps": []}"#,                        // 7 empty steps
            r#"{"problem": "p", "solution": " \n\n \n"}"#,             // 8 empty solution text
            r#"{"problem": "p", "steps": ["a", "  ", "c"]}"#,          // 9 an empty paragraph
            r#"{"problem": "p", "steps": "a"}"#,                       // 10 steps not an array
            r#"{"problem": "p", "steps": ["a", 3]}"#,                  // 11 a step not a string
            r#"{"problem": "p", "steps": ["a"], "label": 1}"#,         // 12 label out of range
            r#"{"problem": "p", "steps": ["a"], "label": "0"}"#,       // 13 label not an integer
            r#"{"problem": 5, "steps": ["a"]}"#,                       // 14 problem not a string
            r#"{"problem": "  ", "steps": ["a"]}"#,                    // 15 empty problem
            r#"{"id": ["x"], "problem": "p", "steps": ["a"]}"#,        // 16 id of the wrong type
            r#"{"problem": "p@@", "steps": ["a"]}"#,                   // 17 not UTF-8 (@@ → 0xFF)
        ];
        let mut bytes = Vec::new();
        for l in lines {
            match l.split_once("@@") {
                Some((a, b)) => {
                    bytes.extend_from_slice(a.as_bytes());
                    bytes.push(0xFF);
                    bytes.extend_from_slice(b.as_bytes());
                }
                None => bytes.extend_from_slice(l.as_bytes()),
            }
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(b"{\"problem\": \"p\", \"solution\": \"a\"}"); // 18: a last line without newline
        let rows = parse_input(&bytes, InputFormat::Jsonl, "in.jsonl").unwrap();
        assert_eq!(rows.len(), 18);
        assert!(rows[0].solution.is_ok() && rows[17].solution.is_ok());
        let expect = [
            (2, "not JSON"),
            (3, "not a JSON object (found an array)"),
            (4, "missing field `problem`"),
            (5, "missing field: `steps`"),
            (6, "both `steps` and `solution`"),
            (7, "`steps` is empty"),
            (8, "`solution` is empty"),
            (9, "`steps[1]` (paragraph 2) is empty"),
            (10, "`steps` must be an array of strings, not a string"),
            (11, "`steps[1]` must be a string, not a number"),
            (12, "`label` 1 is outside -1..0"),
            (13, "`label` must be an integer"),
            (14, "`problem` must be a string, not a number"),
            (15, "`problem` is empty"),
            (16, "`id` must be a string or a number, not an array"),
            (17, "not JSON"),
        ];
        for (line, needle) in expect {
            let reason = bad(&rows, line);
            assert!(reason.contains(needle), "line {line}: {reason}");
        }
        assert!(bad(&rows, 2).contains("column"), "{}", bad(&rows, 2));
        assert_eq!(rows[4].id.as_deref(), Some("x"), "a bad row keeps its id");
    }

    #[test]
    fn csv_rows_with_a_steps_array_or_a_solution_text() {
        let text = "Student_ID,problem,solution,steps,label,comment\n\
                    s1,\"2+3?\",\"2+3=5.\n\nSo 5.\",,-1,fine\n\
                    s2,\"6*7?\",,\"[\"\"6*7 = 42.\"\"]\",0,\n\
                    ,,,,,\n";
        let rows = parse_input(text.as_bytes(), InputFormat::Csv, "in.csv").unwrap();
        assert_eq!(reasons(&rows), vec![(2, Ok(2)), (5, Ok(1))]);
        assert_eq!(rows[0].student_id.as_deref(), Some("s1"));
        assert_eq!(rows[0].solution.as_ref().unwrap().steps, vec!["2+3=5.", "So 5."]);
        assert_eq!(rows[1].label, Some(0));
    }

    #[test]
    fn labels_written_as_whole_floats_read_and_misnamed_jsonl_fields_are_a_file_error() {
        // pandas writes a column of integers with blanks in it as floats.
        let rows = parse_input(b"problem,solution,label\np,x,0.0\np,y,\np,z,1.5\n", InputFormat::Csv, "in.csv").unwrap();
        assert_eq!((rows[0].label, rows[1].label), (Some(0), None));
        assert!(bad(&rows, 4).contains("`label` must be an integer"));
        let rows = parse_input(b"{\"problem\": \"p\", \"steps\": [\"a\", \"b\"], \"label\": 1.0}\n", InputFormat::Jsonl, "in.jsonl").unwrap();
        assert_eq!(rows[0].label, Some(1));
        // Every row without the fields (named otherwise): the file's mistake, named up front.
        let e = parse_input(b"{\"question\": \"p\", \"answer\": \"x\"}\n{\"question\": \"q\", \"answer\": \"y\"}\n", InputFormat::Jsonl, "in.jsonl").unwrap_err().to_string();
        assert!(e.contains("in.jsonl") && e.contains("no row has the fields to grade") && e.contains("`answer`, `question`"), "{e}");
        // One good row among them: the others are bad rows.
        let rows = parse_input(b"{\"question\": \"p\"}\n{\"problem\": \"p\", \"solution\": \"x\"}\n", InputFormat::Jsonl, "in.jsonl").unwrap();
        assert!(rows[0].solution.is_err() && rows[1].solution.is_ok());
    }

    #[test]
    fn a_resumed_results_file_of_another_input_is_named_plainly() {
        let rows = parse_input(b"id,problem,solution\ns2-X,p,x\n", InputFormat::Csv, "in.csv").unwrap();
        let mut kept = GradeResult::bad_row(&rows[0], "x");
        kept.id = Some("s2-0".into());
        let e = done_lines(&rows, &[kept], "out.jsonl").unwrap_err().to_string();
        assert!(e.contains("has id \"s2-0\" / student_id none but that row has \"s2-X\" / none") && !e.contains("Some("), "{e}");
    }

    #[test]
    fn every_bad_csv_row_is_a_row_error_and_header_problems_are_file_errors() {
        let text = "id,problem,steps,solution,label\n\
                    a,p,\"[\"\"x\"\"]\",,\n\
                    b,p,not json,,\n\
                    c,p,\"{\"\"a\"\": 1}\",,\n\
                    d,,\"[\"\"x\"\"]\",,\n\
                    e,p,,,\n\
                    f,p,\"[\"\"x\"\"]\",x,\n\
                    g,p,\"[\"\"x\"\"]\",,first\n\
                    h,p\n\
                    i,p,\"[\"\"x\"\"]\",,,extra\n\
                    j,p,[],,\n";
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(b"k,p\xff,\"[\"\"x\"\"]\",,\n");
        let rows = parse_input(&bytes, InputFormat::Csv, "in.csv").unwrap();
        assert_eq!(rows.len(), 11);
        assert!(rows[0].solution.is_ok());
        let expect = [
            (3, "column `steps` is not a JSON array of strings"),
            (4, "`steps` must be an array of strings, not an object"),
            (5, "`problem` is empty"),
            (6, "`steps` and `solution` are empty"),
            (7, "both `steps` and `solution`"),
            (8, "`label` must be an integer"),
            (9, "missing column `"),
            (10, "the row has 6 fields but the header only 5"),
            (11, "`steps` is empty"),
            (12, "column `problem` is not UTF-8"),
        ];
        for (line, needle) in expect {
            let reason = bad(&rows, line);
            assert!(reason.contains(needle), "line {line}: {reason}");
        }
        assert_eq!(rows[7].id.as_deref(), Some("h"), "a short row keeps its id");
        // The header itself.
        for (text, needle) in [
            ("id,question,steps\n1,p,[]\n", "no `problem` column (the header has `id`, `question`, `steps`)"),
            ("id,problem,answer\n", "no `steps` or `solution` column"),
            ("problem,steps,Problem\n", "the column `problem` appears twice"),
            ("", "the file is empty"),
        ] {
            let e = parse_input(text.as_bytes(), InputFormat::Csv, "in.csv").unwrap_err().to_string();
            assert!(e.contains("in.csv, line 1") && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn formats_from_file_names() {
        assert_eq!(InputFormat::from_file_name("a/b.JSONL").unwrap(), InputFormat::Jsonl);
        assert_eq!(InputFormat::from_file_name("b.csv").unwrap(), InputFormat::Csv);
        let e = InputFormat::from_file_name("b.xlsx").unwrap_err().to_string();
        assert!(e.contains("b.xlsx") && e.contains("*.csv"), "{e}");
    }

    #[test]
    fn results_round_trip_and_resume_matches_rows_by_line_and_id() {
        let rows = parse_input(
            b"{\"id\":\"a\",\"problem\":\"p\",\"steps\":[\"x\"],\"label\":0}\n{\"id\":\"b\",\"problem\":\"p\"}\n",
            InputFormat::Jsonl,
            "in.jsonl",
        )
        .unwrap();
        let v = Verification::from_steps(vec![StepVerdict { index: 0, reward: 0.25, samples: vec![] }]);
        let good = GradeResult::graded(&rows[0], v);
        assert_eq!((good.first_error_step, good.agreement, good.rewards.clone()), (Some(0), Some(true), vec![0.25]));
        let badr = GradeResult::bad_row(&rows[1], rows[1].solution.as_ref().unwrap_err());
        for r in [&good, &badr] {
            let line = serde_json::to_string(r).unwrap();
            assert_eq!(&serde_json::from_str::<GradeResult>(&line).unwrap(), r);
        }
        let s = GradeSummary::of(&[good.clone(), badr.clone()]);
        assert_eq!((s.rows, s.graded, s.bad_rows, s.labelled, s.agreed), (2, 1, 1, 1, 1));
        assert_eq!(done_lines(&rows, &[good.clone(), badr.clone()], "out").unwrap(), HashSet::from([1, 2]));
        let twice = done_lines(&rows, &[good.clone(), good.clone()], "out").unwrap_err().to_string();
        assert!(twice.contains("out, result 2") && twice.contains("second result"), "{twice}");
        let mut other = good.clone();
        other.id = Some("z".into());
        assert!(done_lines(&rows, &[other], "out").unwrap_err().to_string().contains("the input changed"));
        let mut far = good;
        far.line = 9;
        assert!(done_lines(&rows, &[far], "out").unwrap_err().to_string().contains("line 9"));
    }
}
