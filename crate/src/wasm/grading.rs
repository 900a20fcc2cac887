//! Grading files in the page with the CLI's code: `parseGradingInput` and `gradeResult`.

use super::*;

/// A grading input row as the page sees it (see contract.md).
#[derive(Serialize, Deserialize)]
pub(super) struct WebGradeRow {
    pub(super) line: usize,
    pub(super) id: Option<String>,
    pub(super) student_id: Option<String>,
    pub(super) label: Option<i64>,
    pub(super) problem: Option<String>,
    pub(super) steps: Option<Vec<String>>,
    pub(super) error: Option<String>,
}

impl From<&GradeRow> for WebGradeRow {
    fn from(row: &GradeRow) -> Self {
        let (problem, steps, error) = match &row.solution {
            Ok(s) => (Some(s.problem.clone()), Some(s.steps.clone()), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        WebGradeRow { line: row.line, id: row.id.clone(), student_id: row.student_id.clone(), label: row.label, problem, steps, error }
    }
}

impl WebGradeRow {
    pub(super) fn row(self) -> GradeRow {
        let solution = match (self.error, self.problem, self.steps) {
            (Some(e), _, _) => Err(e),
            (None, Some(problem), Some(steps)) => {
                let mut s = Solution::new(problem, steps);
                s.id = self.id.clone();
                s.label = self.label;
                Ok(s)
            }
            _ => Err("the row has no problem and steps".to_string()),
        };
        GradeRow { line: self.line, id: self.id, student_id: self.student_id, label: self.label, solution }
    }
}

/// Parses a grading input (JSON Lines or CSV by the file name's extension) with the same code as
/// `genprm grade`: one row per solution, a malformed row carrying its line number and reason.
#[wasm_bindgen(js_name = parseGradingInput)]
pub fn parse_grading_input(bytes: &[u8], file_name: &str) -> std::result::Result<JsValue, JsValue> {
    let format = InputFormat::from_file_name(file_name).map_err(js_error)?;
    let rows = grade_rows::parse_input(bytes, format, file_name).map_err(js_error)?;
    let rows: Vec<WebGradeRow> = rows.iter().map(WebGradeRow::from).collect();
    Ok(to_js(&rows))
}

/// The result record of a grading row, exactly the JSON line `genprm grade` writes: from the
/// row and `Model.verify`'s result (null for a bad row).
#[wasm_bindgen(js_name = gradeResult)]
pub fn grade_result(row: JsValue, result: JsValue) -> std::result::Result<JsValue, JsValue> {
    #[derive(Deserialize)]
    struct WebResult {
        complete: bool,
        error: Option<String>,
        steps: Vec<prm::StepVerdict>,
    }
    let row: WebGradeRow = serde_wasm_bindgen::from_value(row).map_err(|e| js_error(format!("grading row: {e}")))?;
    let row = row.row();
    let record = match (&row.solution, result.is_null() || result.is_undefined()) {
        (Err(reason), _) => GradeResult::bad_row(&row, reason),
        (Ok(_), true) => return Err(js_error("gradeResult: a gradable row needs the verification result")),
        (Ok(_), false) => {
            let r: WebResult = serde_wasm_bindgen::from_value(result).map_err(|e| js_error(format!("verification result: {e}")))?;
            let verification = prm::Verification::from_steps(r.steps);
            if r.complete {
                GradeResult::graded(&row, verification)
            } else {
                let message = r.error.unwrap_or_else(|| "the verification stopped".into());
                GradeResult::failed(&row, prm::PartialVerification { completed: verification, error: Error::Stopped(message) })
            }
        }
    };
    Ok(to_js(&record))
}
