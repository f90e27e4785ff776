//! The rendered prompt view of a program (each predictor's instructions, fields and demos) as
//! Markdown.

use std::fmt::Write as _;

use serde_json::Value;

use super::parse::*;

// ----- prompt ---------------------------------------------------------------------------------

/// Renders a program's prompts as Markdown: per predictor its instructions, fields and demos. For
/// JSON that is not a DSPy program, a short note and the pretty-printed JSON.
pub fn render_prompt(value: &Value) -> String {
    render_prompt_titled(value, "Program prompts")
}

/// [`render_prompt`] under a title of the caller's choice (a Markdown heading line's text).
pub fn render_prompt_titled(value: &Value, title: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", one_line(title));
    let Some(program) = parse_program(value) else {
        md.push_str(
            "_This program is not a DSPy state file or a DSPy.rb program: it has no predictors to \
             render. Its JSON:_\n\n",
        );
        let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
        push_fenced(&mut md, "json", &pretty, "");
        return md;
    };
    let count = program.predictors.len();
    let _ = write!(
        md,
        "_{}{} · {count} predictor{}_\n\n",
        match program.format {
            ProgramFormat::Dspy => "DSPy state file".to_owned(),
            _ => "DSPy.rb program".to_owned(),
        },
        program
            .class_name
            .as_deref()
            .map(|c| format!(" · `{}`", one_line(c)))
            .unwrap_or_default(),
        if count == 1 { "" } else { "s" }
    );
    for p in &program.predictors {
        let _ = write!(md, "## Predictor `{}`", one_line(&p.name));
        if let Some(sig) = &p.signature {
            let _ = write!(md, " — signature `{}`", one_line(sig));
        }
        md.push_str("\n\n### Instructions\n\n");
        if p.instructions.trim().is_empty() {
            md.push_str("_(none)_\n\n");
        } else {
            push_fenced(&mut md, "text", &p.instructions, "");
            md.push('\n');
        }
        md.push_str("### Fields\n\n");
        if !p.fields_known {
            md.push_str("_The program does not record its signature's fields._\n\n");
        } else if p.fields.is_empty() {
            md.push_str("_(none)_\n\n");
        } else {
            let with_type = p.fields.iter().any(|f| f.ty.is_some() || f.role.is_some());
            if with_type {
                md.push_str("| # | Field | Role | Type | Description |\n|---|---|---|---|---|\n");
            } else {
                md.push_str("| # | Field | Prefix | Description |\n|---|---|---|---|\n");
            }
            for (i, f) in p.fields.iter().enumerate() {
                let desc = cell(f.description.as_deref().unwrap_or(""));
                if with_type {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {desc} |",
                        i + 1,
                        cell(&f.name),
                        cell(f.role.as_deref().unwrap_or("")),
                        cell(f.ty.as_deref().unwrap_or("")),
                    );
                } else {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {desc} |",
                        i + 1,
                        cell(&f.name),
                        cell(f.prefix.as_deref().unwrap_or("")),
                    );
                }
            }
            md.push('\n');
        }
        let _ = write!(md, "### Demos ({})\n\n", p.demos.len());
        if p.demos.is_empty() {
            md.push_str("_(none)_\n\n");
        }
        for (i, demo) in p.demos.iter().enumerate() {
            let _ = write!(md, "#### Demo {}\n\n", i + 1);
            match demo.as_object() {
                Some(obj) if !obj.is_empty() => {
                    for (k, v) in obj {
                        push_demo_value(&mut md, k, v);
                    }
                    if !md.ends_with("\n\n") {
                        md.push('\n');
                    }
                }
                _ => {
                    let pretty = serde_json::to_string_pretty(demo).unwrap_or_default();
                    push_fenced(&mut md, "json", &pretty, "");
                    md.push('\n');
                }
            }
        }
    }
    while md.ends_with("\n\n") {
        md.pop();
    }
    md
}

pub(super) fn push_demo_value(md: &mut String, key: &str, value: &Value) {
    let key = one_line(key);
    match value {
        Value::String(s) if !s.contains('\n') && !s.contains('`') => {
            let _ = writeln!(md, "- **{key}**: {}", if s.is_empty() { "\"\"" } else { s });
        }
        Value::String(s) => {
            let _ = writeln!(md, "- **{key}**:\n");
            push_fenced(md, "text", s, "  ");
            md.push('\n');
        }
        Value::Object(_) | Value::Array(_) => {
            let _ = writeln!(md, "- **{key}**:\n");
            let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
            push_fenced(md, "json", &pretty, "  ");
            md.push('\n');
        }
        other => {
            let _ = writeln!(md, "- **{key}**: `{other}`");
        }
    }
}

/// A fenced code block longer than any backtick run of the text, each line indented by `indent`.
pub(super) fn push_fenced(md: &mut String, lang: &str, text: &str, indent: &str) {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(md, "{indent}{fence}{lang}");
    for line in text.lines() {
        if line.is_empty() {
            md.push('\n');
        } else {
            let _ = writeln!(md, "{indent}{line}");
        }
    }
    let _ = writeln!(md, "{indent}{fence}");
}

/// A table cell: pipes escaped, line breaks as `<br>`.
pub(super) fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

pub(super) fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}
