//! Input files → [`Document`]s, streaming.
//!
//! Three on-disk formats ([`InputFormat`]):
//!
//! * **Parquet** — the FineWeb / FineWeb-Edu layout: a `text` column plus optional `id`, `url`,
//!   `language`, `score` (names configurable with [`Columns`]). Read with the `parquet` crate's
//!   arrow reader, one row group at a time in batches of [`PARQUET_BATCH_ROWS`] rows, projected
//!   onto only the columns named in [`Columns`] that the file has. Memory is bounded by one
//!   decoded batch plus the pages of the current row group being decoded — never the whole
//!   file, so a shard larger than memory streams.
//! * **JSONL** — one JSON object per line (`{"text": ..., "id": ..., ...}`), optionally
//!   gzip-compressed (`.gz`). Read line by line.
//! * **Text** — plain UTF-8 files, one document per file, per blank-line-separated paragraph,
//!   or per line ([`TextUnit`]).
//!
//! [`expand_paths`] turns a source's path patterns (files, directories, globs) into a sorted
//! list of files; [`read_documents`] opens one file and returns a [`DocumentReader`], an
//! iterator of `Result<Document, DataError>`.
//!
//! Errors name the file and where in it: `row group 3 of 8 (0-based), batch 2` for parquet,
//! `line 17` (1-based, as editors count) for JSONL and text. A [`DocumentReader`] stops after
//! its first error (it is fused): input errors are meant to stop the pipeline, not be skipped.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

use crate::{DataError, Document};

/// Rows per decoded parquet batch. FineWeb documents average a few KB of text, so a batch is a
/// few MB of decoded strings; small enough to bound memory, large enough to amortise decoding.
pub const PARQUET_BATCH_ROWS: usize = 1024;

/// How a source's documents are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Apache Parquet with a text column (FineWeb / FineWeb-Edu layout).
    Parquet,
    /// One JSON object per line, optionally gzip-compressed.
    Jsonl,
    /// Plain UTF-8 text; see [`TextUnit`] for what a document is.
    Text,
}

impl InputFormat {
    /// File-name endings that [`expand_paths`] keeps when walking a directory for this format
    /// (matched case-insensitively, after a `.`).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            InputFormat::Parquet => &["parquet"],
            InputFormat::Jsonl => &[
                "jsonl",
                "json",
                "ndjson",
                "jsonl.gz",
                "json.gz",
                "ndjson.gz",
            ],
            InputFormat::Text => &["txt", "md", "text"],
        }
    }

    /// The format whose [`extensions`](Self::extensions) `path`'s name ends with, if any.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        [InputFormat::Parquet, InputFormat::Jsonl, InputFormat::Text]
            .into_iter()
            .find(|f| has_extension(path, f.extensions()))
    }
}

/// Column (parquet) or key (JSONL) names of a document's fields. The defaults are FineWeb's
/// (`text`, `id`, `url`, `language`, `score`; FineWeb-Edu adds `score`). Only `text` must exist;
/// the others are read when the file has them and left `None` otherwise. Names are top-level
/// columns / keys (no nested paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    /// The document text (required). Default `"text"`.
    pub text: String,
    /// A document id, string or integer. Default `"id"`.
    pub id: String,
    /// The page URL. Default `"url"`.
    pub url: String,
    /// The input's language label (e.g. `"en"`). Default `"language"`.
    pub language: String,
    /// A numeric quality score (e.g. FineWeb-Edu's 0–5 `score`). Default `"score"`.
    pub score: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            text: "text".into(),
            id: "id".into(),
            url: "url".into(),
            language: "language".into(),
            score: "score".into(),
        }
    }
}

/// How plain-text files become documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextUnit {
    /// The whole file is one document (an empty or whitespace-only file is skipped).
    #[default]
    File,
    /// Paragraphs separated by one or more blank (empty or whitespace-only) lines; each
    /// paragraph's lines are joined with `\n`.
    Paragraphs,
    /// Each non-blank line is a document.
    Lines,
}

// ---------------------------------------------------------------------------------------------
// Path expansion
// ---------------------------------------------------------------------------------------------

/// Expands a source's path patterns into the files to read: a file path is kept as is
/// (whatever its extension); a directory is walked recursively, keeping files whose name ends
/// with `.` + one of `extensions` (case-insensitive; hidden entries, whose name starts with
/// `.`, are skipped); a pattern with `*`, `?` or `[` is a glob (`**` matches any depth;
/// wildcards do not match a leading `.`, as in a shell), and each match is treated as a path
/// (files kept, directories walked). The result is sorted and
/// deduplicated.
///
/// A pattern that matches no file gives [`DataError::NoInput`] naming the pattern (with an
/// empty `hint` for the caller to fill in with where such files come from).
pub fn expand_paths(
    source_name: &str,
    patterns: &[String],
    extensions: &[&str],
) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let before = files.len();
        if is_glob(pattern) {
            // Like a shell: `*` does not match a leading `.` (hidden files, `.cache/`).
            let options = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..glob::MatchOptions::new()
            };
            let matches = glob::glob_with(pattern, options).map_err(|e| DataError::Config {
                field: format!("data source `{source_name}` paths"),
                message: format!("invalid glob pattern `{pattern}`: {e}"),
            })?;
            for entry in matches {
                let path = entry.map_err(|e| {
                    let path = e.path().to_path_buf();
                    DataError::io(path, e.into())
                })?;
                collect_path(&path, extensions, &mut files)?;
            }
        } else {
            let path = Path::new(pattern);
            if path.exists() {
                collect_path(path, extensions, &mut files)?;
            }
        }
        if files.len() == before {
            return Err(DataError::NoInput {
                source_name: source_name.to_string(),
                pattern: pattern.clone(),
                hint: String::new(),
            });
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// True when `path`'s file name ends with `.ext` for one of `extensions` (case-insensitive).
fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    extensions.iter().any(|ext| {
        let ext = ext.to_ascii_lowercase();
        name.len() > ext.len() + 1
            && name.ends_with(&ext)
            && name.as_bytes()[name.len() - ext.len() - 1] == b'.'
    })
}

/// Adds `path` (a file) or the matching files under it (a directory) to `out`.
fn collect_path(path: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        let mut visited = HashSet::new();
        walk_dir(path, extensions, &mut visited, out)
    } else {
        out.push(path.to_path_buf());
        Ok(())
    }
}

/// Recursive directory walk (follows symlinks; a directory reached twice, e.g. through a
/// symlink loop, is walked once).
fn walk_dir(
    dir: &Path,
    extensions: &[&str],
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<(), DataError> {
    let canonical = dir.canonicalize().map_err(|e| DataError::io(dir, e))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        // `metadata` follows symlinks; a dangling link is skipped rather than fatal.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk_dir(&path, extensions, visited, out)?;
        } else if has_extension(&path, extensions) {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Opens one file for streaming reading as `format`. Parquet files are checked here (readable
/// footer, a text column of a string type, optional columns of usable types); JSONL and text
/// files are checked as they are read.
pub fn read_documents(
    path: &Path,
    format: InputFormat,
    columns: &Columns,
    text_unit: TextUnit,
) -> Result<DocumentReader, DataError> {
    let inner = match format {
        InputFormat::Parquet => Inner::Parquet(Box::new(ParquetDocs::open(path, columns)?)),
        InputFormat::Jsonl => Inner::Jsonl(JsonlDocs {
            lines: open_lines(path)?,
            columns: columns.clone(),
        }),
        InputFormat::Text => Inner::Text(TextDocs {
            lines: open_lines(path)?,
            unit: text_unit,
            done: false,
        }),
    };
    Ok(DocumentReader {
        path: path.to_path_buf(),
        format,
        inner,
        skipped: 0,
        finished: false,
    })
}

/// Streams the documents of one file: an iterator of `Result<Document, DataError>` that ends
/// after the last document or after its first error. `Send`, so files can be read on worker
/// threads.
pub struct DocumentReader {
    path: PathBuf,
    format: InputFormat,
    inner: Inner,
    skipped: u64,
    finished: bool,
}

enum Inner {
    Parquet(Box<ParquetDocs>),
    Jsonl(JsonlDocs),
    Text(TextDocs),
}

impl DocumentReader {
    /// Records read so far that had no text (null parquet text, JSON `null` text, an empty
    /// text file) and were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's format.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// Number of rows in the file when the format records it up front (parquet), for
    /// progress reporting; includes rows that will be skipped.
    pub fn total_rows(&self) -> Option<u64> {
        match &self.inner {
            Inner::Parquet(p) => Some(p.total_rows),
            _ => None,
        }
    }
}

impl std::fmt::Debug for DocumentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("skipped", &self.skipped)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Iterator for DocumentReader {
    type Item = Result<Document, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let item = match &mut self.inner {
            Inner::Parquet(p) => p.next_doc(&self.path, &mut self.skipped),
            Inner::Jsonl(j) => j.next_doc(&self.path, &mut self.skipped),
            Inner::Text(t) => t.next_doc(&self.path, &mut self.skipped),
        };
        match item {
            Ok(Some(doc)) => Some(Ok(doc)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

fn bad_at(path: &Path, location: impl Into<String>, message: impl Into<String>) -> DataError {
    DataError::BadInput {
        path: path.to_path_buf(),
        location: Some(location.into()),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parquet
// ---------------------------------------------------------------------------------------------

struct ParquetDocs {
    file: File,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    /// Names of the projected columns that exist in the file (text always `Some`).
    text: String,
    id: Option<String>,
    url: Option<String>,
    language: Option<String>,
    score: Option<String>,
    num_row_groups: usize,
    total_rows: u64,
    /// Next row group to open.
    next_row_group: usize,
    /// Reader over the current row group, with its index and the number of batches read.
    current: Option<(usize, ParquetRecordBatchReader, usize)>,
    /// The current decoded batch and the next row in it.
    batch: Option<(DecodedBatch, usize)>,
}

/// String-typed arrow column, borrowed per row without copying the whole column.
enum StrCol {
    Utf8(arrow::array::StringArray),
    Large(arrow::array::LargeStringArray),
    View(arrow::array::StringViewArray),
}

impl StrCol {
    /// Wraps a string column, casting other types (binary, dictionary, integers) to `Utf8`.
    /// The cast is strict: invalid UTF-8 is an error, not a silent null.
    fn new(array: &ArrayRef) -> Result<StrCol, arrow::error::ArrowError> {
        Ok(match array.data_type() {
            DataType::Utf8 => StrCol::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => StrCol::Large(array.as_string::<i64>().clone()),
            DataType::Utf8View => StrCol::View(array.as_string_view().clone()),
            _ => {
                let options = CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let cast = cast_with_options(array, &DataType::Utf8, &options)?;
                StrCol::Utf8(cast.as_string::<i32>().clone())
            }
        })
    }

    fn get(&self, row: usize) -> Option<&str> {
        match self {
            StrCol::Utf8(a) => (!a.is_null(row)).then(|| a.value(row)),
            StrCol::Large(a) => (!a.is_null(row)).then(|| a.value(row)),
            StrCol::View(a) => (!a.is_null(row)).then(|| a.value(row)),
        }
    }
}

struct DecodedBatch {
    rows: usize,
    text: StrCol,
    id: Option<StrCol>,
    url: Option<StrCol>,
    language: Option<StrCol>,
    score: Option<Float64Array>,
}

/// Text-like arrow types accepted for `text`, `url`, `language` (and `id`).
fn is_string_like(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        DataType::Dictionary(_, value) => is_string_like(value),
        _ => false,
    }
}

fn is_integer(dt: &DataType) -> bool {
    dt.is_integer() || matches!(dt, DataType::Dictionary(_, v) if v.is_integer())
}

fn is_number(dt: &DataType) -> bool {
    dt.is_numeric() || matches!(dt, DataType::Dictionary(_, v) if v.is_numeric())
}

impl ParquetDocs {
    fn open(path: &Path, columns: &Columns) -> Result<ParquetDocs, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| DataError::bad_input(path, format!("not a readable parquet file: {e}")))?;
        let schema = metadata.schema().clone();
        let field_type = |name: &str| -> Option<DataType> {
            schema
                .field_with_name(name)
                .ok()
                .map(|f| f.data_type().clone())
        };

        let Some(text_type) = field_type(&columns.text) else {
            let names: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| format!("`{}` ({})", f.name(), f.data_type()))
                .collect();
            return Err(DataError::bad_input(
                path,
                format!(
                    "no text column `{}`; the file has columns: {}. Set the source's \
                     `columns.text` to the column that holds the document text",
                    columns.text,
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        };
        let wrong_type = |role: &str, name: &str, dt: &DataType, expected: &str| {
            DataError::bad_input(
                path,
                format!(
                    "column `{name}` (the source's `columns.{role}`) has type {dt}, expected \
                     {expected}; point `columns.{role}` at another column"
                ),
            )
        };
        if !is_string_like(&text_type) {
            return Err(wrong_type("text", &columns.text, &text_type, "a string"));
        }
        // Optional columns: absent → None; present with an unusable type → error (silently
        // ignoring, say, a string `score` would make a score filter drop everything).
        let optional =
            |role: &str, name: &str, ok: fn(&DataType) -> bool, expected: &str| match field_type(
                name,
            ) {
                None => Ok(None),
                Some(dt) if ok(&dt) => Ok(Some(name.to_string())),
                Some(dt) => Err(wrong_type(role, name, &dt, expected)),
            };
        let id = optional(
            "id",
            &columns.id,
            |dt| is_string_like(dt) || is_integer(dt),
            "a string or an integer",
        )?;
        let url = optional("url", &columns.url, is_string_like, "a string")?;
        let language = optional("language", &columns.language, is_string_like, "a string")?;
        let score = optional("score", &columns.score, is_number, "a number")?;

        // Project onto the root columns we read (by position in the parquet schema).
        let wanted: Vec<&str> = [
            Some(&columns.text),
            id.as_ref(),
            url.as_ref(),
            language.as_ref(),
            score.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        let parquet_schema = metadata.parquet_schema();
        let roots: Vec<usize> = parquet_schema
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&f.name()))
            .map(|(i, _)| i)
            .collect();
        let projection = ProjectionMask::roots(parquet_schema, roots);

        let num_row_groups = metadata.metadata().num_row_groups();
        let total_rows = metadata.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(ParquetDocs {
            file,
            metadata,
            projection,
            text: columns.text.clone(),
            id,
            url,
            language,
            score,
            num_row_groups,
            total_rows,
            next_row_group: 0,
            current: None,
            batch: None,
        })
    }

    fn location(&self, row_group: usize, batch: Option<usize>) -> String {
        let mut s = format!("row group {row_group} of {} (0-based)", self.num_row_groups);
        if let Some(b) = batch {
            let start = b * PARQUET_BATCH_ROWS;
            s.push_str(&format!(
                ", batch {b} (rows {start}..{} of the row group)",
                start + PARQUET_BATCH_ROWS
            ));
        }
        s
    }

    fn next_doc(&mut self, path: &Path, skipped: &mut u64) -> Result<Option<Document>, DataError> {
        loop {
            if let Some((batch, row)) = &mut self.batch {
                if *row < batch.rows {
                    let r = *row;
                    *row += 1;
                    let Some(text) = batch.text.get(r) else {
                        *skipped += 1;
                        continue;
                    };
                    let owned =
                        |c: &Option<StrCol>| c.as_ref().and_then(|c| c.get(r)).map(str::to_string);
                    return Ok(Some(Document {
                        text: text.to_string(),
                        id: owned(&batch.id),
                        url: owned(&batch.url),
                        language: owned(&batch.language),
                        score: batch
                            .score
                            .as_ref()
                            .and_then(|s| (!s.is_null(r)).then(|| s.value(r))),
                    }));
                }
                self.batch = None;
            }
            if let Some((rg, reader, batches)) = &mut self.current {
                let (rg, b) = (*rg, *batches);
                match reader.next() {
                    Some(Ok(record_batch)) => {
                        *batches += 1;
                        let decoded = self
                            .decode(&record_batch)
                            .map_err(|e| bad_at(path, self.location(rg, Some(b)), e.to_string()))?;
                        self.batch = Some((decoded, 0));
                    }
                    Some(Err(e)) => {
                        return Err(bad_at(
                            path,
                            self.location(rg, Some(b)),
                            format!("corrupt parquet data: {e}"),
                        ))
                    }
                    None => self.current = None,
                }
                continue;
            }
            if self.next_row_group >= self.num_row_groups {
                return Ok(None);
            }
            let rg = self.next_row_group;
            self.next_row_group += 1;
            let file = self.file.try_clone().map_err(|e| DataError::io(path, e))?;
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                    .with_row_groups(vec![rg])
                    .with_projection(self.projection.clone())
                    .with_batch_size(PARQUET_BATCH_ROWS)
                    .build()
                    .map_err(|e| {
                        bad_at(
                            path,
                            self.location(rg, None),
                            format!("corrupt parquet data: {e}"),
                        )
                    })?;
            self.current = Some((rg, reader, 0));
        }
    }

    fn decode(&self, batch: &RecordBatch) -> Result<DecodedBatch, arrow::error::ArrowError> {
        let column = |name: &Option<String>| -> Option<&ArrayRef> {
            name.as_ref().and_then(|n| batch.column_by_name(n))
        };
        let str_col = |name: &Option<String>| column(name).map(StrCol::new).transpose();
        let text = batch.column_by_name(&self.text).ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("batch lacks column `{}`", self.text))
        })?;
        let score = match column(&self.score) {
            None => None,
            Some(a) => {
                let options = CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let cast = cast_with_options(a, &DataType::Float64, &options)?;
                Some(cast.as_primitive::<arrow::datatypes::Float64Type>().clone())
            }
        };
        Ok(DecodedBatch {
            rows: batch.num_rows(),
            text: StrCol::new(text)?,
            id: str_col(&self.id)?,
            url: str_col(&self.url)?,
            language: str_col(&self.language)?,
            score,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Line-based formats (JSONL, text)
// ---------------------------------------------------------------------------------------------

/// Lines of a file (gunzipped when its name ends in `.gz`), with 1-based line numbers.
struct Lines {
    reader: Box<dyn BufRead + Send>,
    line_no: u64,
    buf: Vec<u8>,
}

fn open_lines(path: &Path) -> Result<Lines, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let gz = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz"));
    let reader: Box<dyn BufRead + Send> = if gz {
        // Multi-member: `cat a.gz b.gz` and bgzip output are valid gzip streams.
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    };
    Ok(Lines {
        reader,
        line_no: 0,
        buf: Vec::new(),
    })
}

impl Lines {
    /// The next line without its `\n` / `\r\n` (and without a UTF-8 byte-order mark on line 1),
    /// or `None` at the end of the file.
    fn next_line(&mut self, path: &Path) -> Result<Option<(u64, &str)>, DataError> {
        self.buf.clear();
        let line_no = self.line_no + 1;
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::UnexpectedEof => {
                    bad_at(path, format!("line {line_no}"), format!("cannot read: {e}"))
                }
                _ => DataError::io(path, e),
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no = line_no;
        let mut bytes: &[u8] = &self.buf;
        if let Some(b) = bytes.strip_suffix(b"\n") {
            bytes = b.strip_suffix(b"\r").unwrap_or(b);
        }
        if line_no == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        std::str::from_utf8(bytes)
            .map(|l| Some((line_no, l)))
            .map_err(|e| {
                bad_at(
                    path,
                    format!("line {line_no}"),
                    format!("not valid UTF-8 (byte {} of the line)", e.valid_up_to()),
                )
            })
    }
}

struct JsonlDocs {
    lines: Lines,
    columns: Columns,
}

impl JsonlDocs {
    fn next_doc(&mut self, path: &Path, skipped: &mut u64) -> Result<Option<Document>, DataError> {
        loop {
            let Some((line_no, line)) = self.lines.next_line(path)? else {
                return Ok(None);
            };
            if line.trim().is_empty() {
                continue;
            }
            let loc = format!("line {line_no}");
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| bad_at(path, &loc, format!("not valid JSON: {e}")))?;
            let serde_json::Value::Object(mut obj) = value else {
                return Err(bad_at(path, &loc, "expected a JSON object"));
            };
            let c = &self.columns;
            let text = match obj.remove(&c.text) {
                None => return Err(bad_at(path, &loc, format!("no `{}` key", c.text))),
                Some(serde_json::Value::Null) => {
                    *skipped += 1;
                    continue;
                }
                Some(serde_json::Value::String(s)) => s,
                Some(other) => {
                    return Err(bad_at(
                        path,
                        &loc,
                        format!("`{}` is {}, expected a string", c.text, json_kind(&other)),
                    ))
                }
            };
            let string = |obj: &mut serde_json::Map<String, serde_json::Value>,
                          key: &str,
                          allow_number: bool|
             -> Result<Option<String>, DataError> {
                match obj.remove(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s)),
                    Some(serde_json::Value::Number(n)) if allow_number => Ok(Some(n.to_string())),
                    Some(other) => Err(bad_at(
                        path,
                        &loc,
                        format!(
                            "`{key}` is {}, expected a string{}",
                            json_kind(&other),
                            if allow_number { " or a number" } else { "" }
                        ),
                    )),
                }
            };
            let id = string(&mut obj, &c.id, true)?;
            let url = string(&mut obj, &c.url, false)?;
            let language = string(&mut obj, &c.language, false)?;
            let score = match obj.remove(&c.score) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Number(n)) => n.as_f64(),
                Some(other) => {
                    return Err(bad_at(
                        path,
                        &loc,
                        format!("`{}` is {}, expected a number", c.score, json_kind(&other)),
                    ))
                }
            };
            return Ok(Some(Document {
                text,
                id,
                url,
                language,
                score,
            }));
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

struct TextDocs {
    lines: Lines,
    unit: TextUnit,
    done: bool,
}

impl TextDocs {
    fn next_doc(&mut self, path: &Path, skipped: &mut u64) -> Result<Option<Document>, DataError> {
        if self.done {
            return Ok(None);
        }
        match self.unit {
            TextUnit::File => {
                self.done = true;
                let mut bytes = Vec::new();
                self.lines
                    .reader
                    .read_to_end(&mut bytes)
                    .map_err(|e| DataError::io(path, e))?;
                let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
                let text = String::from_utf8(body.to_vec()).map_err(|e| {
                    let at = e.utf8_error().valid_up_to();
                    let line = 1 + body[..at].iter().filter(|&&b| b == b'\n').count();
                    bad_at(
                        path,
                        format!("line {line}"),
                        format!("not valid UTF-8 (byte offset {at})"),
                    )
                })?;
                if text.trim().is_empty() {
                    *skipped += 1;
                    return Ok(None);
                }
                Ok(Some(Document::from_text(text)))
            }
            TextUnit::Lines => loop {
                let Some((_, line)) = self.lines.next_line(path)? else {
                    self.done = true;
                    return Ok(None);
                };
                if !line.trim().is_empty() {
                    return Ok(Some(Document::from_text(line)));
                }
            },
            TextUnit::Paragraphs => {
                let mut para = String::new();
                loop {
                    let line = self.lines.next_line(path)?;
                    match line.map(|(_, l)| l) {
                        None => {
                            self.done = true;
                            return Ok((!para.is_empty()).then(|| Document::from_text(para)));
                        }
                        Some(l) if l.trim().is_empty() => {
                            if !para.is_empty() {
                                return Ok(Some(Document::from_text(para)));
                            }
                        }
                        Some(l) => {
                            if !para.is_empty() {
                                para.push('\n');
                            }
                            para.push_str(l);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float32Array, Float64Array, Int32Array, Int64Array, LargeStringArray, StringArray,
        StringViewArray,
    };
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use std::io::Write;
    use std::sync::Arc;

    /// Writes `batch` to `path` as parquet in row groups of at most `rows_per_group` rows.
    fn write_parquet(path: &Path, batch: &RecordBatch, rows_per_group: usize) {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows_per_group))
            .build();
        let file = File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    fn read_all(
        path: &Path,
        format: InputFormat,
        columns: &Columns,
        unit: TextUnit,
    ) -> (Vec<Document>, u64) {
        let mut reader = read_documents(path, format, columns, unit).unwrap();
        let docs = reader.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
        (docs, reader.skipped())
    }

    fn num_row_groups(path: &Path) -> usize {
        ArrowReaderMetadata::load(&File::open(path).unwrap(), ArrowReaderOptions::new())
            .unwrap()
            .metadata()
            .num_row_groups()
    }

    /// FineWeb-like rows: `n` documents with every field, some optional fields null.
    fn fineweb_rows(n: usize) -> (RecordBatch, Vec<Document>) {
        let expected: Vec<Document> = (0..n)
            .map(|i| Document {
                text: format!("Document number {i}.\nIt has two lines, ünïcödé and \"quotes\"."),
                id: Some(format!("<urn:uuid:{i:08}>")),
                url: (i % 4 != 3).then(|| format!("https://example.com/page/{i}")),
                language: Some(if i % 2 == 0 { "en" } else { "fr" }.to_string()),
                score: (i % 5 != 4).then_some(i as f64 * 0.25),
            })
            .collect();
        let b = batch(vec![
            (
                "id",
                Arc::new(StringArray::from_iter(
                    expected.iter().map(|d| d.id.clone()),
                )),
            ),
            (
                "text",
                Arc::new(StringArray::from_iter_values(
                    expected.iter().map(|d| d.text.clone()),
                )),
            ),
            (
                "dump",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|_| "CC-MAIN-2024-10"),
                )),
            ),
            (
                "url",
                Arc::new(StringArray::from_iter(
                    expected.iter().map(|d| d.url.clone()),
                )),
            ),
            (
                "language",
                Arc::new(StringArray::from_iter(
                    expected.iter().map(|d| d.language.clone()),
                )),
            ),
            (
                "score",
                Arc::new(Float64Array::from_iter(expected.iter().map(|d| d.score))),
            ),
        ]);
        (b, expected)
    }

    #[test]
    fn parquet_documents_and_metadata_come_back_in_order_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fineweb.parquet");
        let (b, expected) = fineweb_rows(23);
        write_parquet(&path, &b, 5);
        assert_eq!(num_row_groups(&path), 5);

        let reader = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        assert_eq!(reader.total_rows(), Some(23));
        let (docs, skipped) = read_all(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        );
        assert_eq!(docs, expected);
        assert_eq!(skipped, 0);
        // Spot checks, in case the expectation builder is wrong in the same way as the reader.
        assert_eq!(docs[7].id.as_deref(), Some("<urn:uuid:00000007>"));
        assert_eq!(docs[3].url, None);
        assert_eq!(docs[4].score, None);
        assert_eq!(docs[6].score, Some(1.5));
        assert_eq!(docs[1].language.as_deref(), Some("fr"));
    }

    #[test]
    fn parquet_projection_reads_only_configured_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let (b, _) = fineweb_rows(4);
        write_parquet(&path, &b, 10);
        let reader = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        let Inner::Parquet(p) = &reader.inner else {
            unreachable!()
        };
        // 6 columns in the file; `dump` is not read.
        let names: Vec<&str> = p
            .metadata
            .parquet_schema()
            .columns()
            .iter()
            .enumerate()
            .filter(|(i, _)| p.projection.leaf_included(*i))
            .map(|(_, c)| c.name())
            .collect();
        assert_eq!(names, ["id", "text", "url", "language", "score"]);
    }

    #[test]
    fn parquet_custom_column_names_and_numeric_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edu.parquet");
        let b = batch(vec![
            (
                "content",
                Arc::new(StringArray::from(vec!["alpha", "beta", "gamma"])) as ArrayRef,
            ),
            (
                "doc_id",
                Arc::new(Int64Array::from(vec![Some(10), None, Some(-3)])),
            ),
            ("int_score", Arc::new(Int32Array::from(vec![3, 5, 0]))),
            // Default-named columns that must NOT be read with the custom mapping.
            ("text", Arc::new(StringArray::from(vec!["x", "y", "z"]))),
            ("score", Arc::new(Float32Array::from(vec![9.0, 9.0, 9.0]))),
        ]);
        write_parquet(&path, &b, 2);
        let columns = Columns {
            text: "content".into(),
            id: "doc_id".into(),
            score: "int_score".into(),
            url: "link".into(), // absent → None
            ..Columns::default()
        };
        let (docs, _) = read_all(&path, InputFormat::Parquet, &columns, TextUnit::File);
        let got: Vec<_> = docs
            .iter()
            .map(|d| {
                (
                    d.text.as_str(),
                    d.id.as_deref(),
                    d.url.as_deref(),
                    d.language.as_deref(),
                    d.score,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("alpha", Some("10"), None, None, Some(3.0)),
                ("beta", None, None, None, Some(5.0)),
                ("gamma", Some("-3"), None, None, Some(0.0)),
            ]
        );

        // Float32 scores are widened.
        let (docs, _) = read_all(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        );
        assert_eq!(docs[0].text, "x");
        assert_eq!(docs[0].score, Some(9.0));
        assert_eq!(docs[0].id, None);
    }

    #[test]
    fn parquet_missing_text_column_names_the_columns_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody.parquet");
        let b = batch(vec![
            ("body", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("id", Arc::new(Int64Array::from(vec![1]))),
        ]);
        write_parquet(&path, &b, 10);
        let err = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap_err();
        assert!(matches!(err, DataError::BadInput { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("nobody.parquet"), "{msg}");
        assert!(msg.contains("no text column `text`"), "{msg}");
        assert!(msg.contains("`body`") && msg.contains("`id`"), "{msg}");
        assert!(msg.contains("columns.text"), "{msg}");
    }

    #[test]
    fn parquet_wrong_typed_columns_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let b = batch(vec![
            ("text", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("score", Arc::new(StringArray::from(vec!["high"]))),
        ]);
        write_parquet(&path, &b, 10);
        let msg = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("`score`") && msg.contains("expected a number"),
            "{msg}"
        );

        let path = dir.path().join("t2.parquet");
        let b = batch(vec![(
            "text",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]);
        write_parquet(&path, &b, 10);
        let msg = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("`text`") && msg.contains("expected a string"),
            "{msg}"
        );
    }

    #[test]
    fn parquet_null_text_rows_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nulls.parquet");
        let b = batch(vec![
            (
                "text",
                Arc::new(StringArray::from(vec![
                    Some("one"),
                    None,
                    Some(""),
                    None,
                    Some("five"),
                ])) as ArrayRef,
            ),
            (
                "id",
                Arc::new(StringArray::from(vec!["1", "2", "3", "4", "5"])),
            ),
        ]);
        write_parquet(&path, &b, 2);
        let (docs, skipped) = read_all(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        );
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.text.as_str(), d.id.as_deref().unwrap()))
            .collect();
        // An empty string is a document (filters decide); only nulls are skipped.
        assert_eq!(got, [("one", "1"), ("", "3"), ("five", "5")]);
        assert_eq!(skipped, 2);
    }

    #[test]
    fn parquet_large_utf8_and_utf8_view_text() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["first large", "second", "third één"];
        let large = dir.path().join("large.parquet");
        write_parquet(
            &large,
            &batch(vec![
                (
                    "text",
                    Arc::new(LargeStringArray::from(texts.to_vec())) as ArrayRef,
                ),
                (
                    "language",
                    Arc::new(LargeStringArray::from(vec!["en", "en", "nl"])),
                ),
            ]),
            2,
        );
        let view = dir.path().join("view.parquet");
        write_parquet(
            &view,
            &batch(vec![(
                "text",
                Arc::new(StringViewArray::from(texts.to_vec())) as ArrayRef,
            )]),
            2,
        );
        for path in [&large, &view] {
            let (docs, _) = read_all(
                path,
                InputFormat::Parquet,
                &Columns::default(),
                TextUnit::File,
            );
            let got: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
            assert_eq!(got, texts, "{}", path.display());
        }
        let (docs, _) = read_all(
            &large,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        );
        assert_eq!(docs[2].language.as_deref(), Some("nl"));
    }

    #[test]
    fn parquet_larger_than_a_batch_streams_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let n = 5000;
        let b = batch(vec![
            (
                "text",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("doc {i} {}", "x".repeat(i % 50))),
                )) as ArrayRef,
            ),
            ("id", Arc::new(Int64Array::from_iter_values(0..n as i64))),
        ]);
        write_parquet(&path, &b, 700);
        assert_eq!(num_row_groups(&path), 8); // 7 × 700 + 100

        let mut reader = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        let mut count = 0usize;
        let mut row_groups_seen = HashSet::new();
        while let Some(doc) = reader.next() {
            let doc = doc.unwrap();
            assert_eq!(doc.id, Some(count.to_string()));
            assert_eq!(doc.text, format!("doc {count} {}", "x".repeat(count % 50)));
            let Inner::Parquet(p) = &reader.inner else {
                unreachable!()
            };
            // Never more than one batch (≤ PARQUET_BATCH_ROWS rows, within one row group) decoded.
            let (decoded, _) = p.batch.as_ref().unwrap();
            assert!(decoded.rows <= PARQUET_BATCH_ROWS.min(700));
            row_groups_seen.insert(p.current.as_ref().unwrap().0);
            count += 1;
        }
        assert_eq!(count, n);
        assert_eq!(row_groups_seen.len(), 8);
        assert!(reader.next().is_none());
    }

    #[test]
    fn parquet_batch_size_splits_big_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one_group.parquet");
        let n = 2500;
        let b = batch(vec![(
            "text",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| i.to_string()))) as ArrayRef,
        )]);
        write_parquet(&path, &b, 10_000);
        assert_eq!(num_row_groups(&path), 1);
        let mut reader = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        let mut max_rows = 0;
        let mut count = 0;
        while let Some(doc) = reader.next() {
            assert_eq!(doc.unwrap().text, count.to_string());
            let Inner::Parquet(p) = &reader.inner else {
                unreachable!()
            };
            max_rows = max_rows.max(p.batch.as_ref().unwrap().0.rows);
            count += 1;
        }
        assert_eq!(count, n);
        assert_eq!(max_rows, PARQUET_BATCH_ROWS);
    }

    #[test]
    fn parquet_corruption_is_reported_with_its_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.parquet");
        let b = batch(vec![(
            "text",
            Arc::new(StringArray::from_iter_values(
                (0..30).map(|i| format!("text {i}")),
            )) as ArrayRef,
        )]);
        write_parquet(&path, &b, 10);
        // Overwrite row group 1's text column chunk (page headers included) with garbage.
        let meta =
            ArrowReaderMetadata::load(&File::open(&path).unwrap(), ArrowReaderOptions::new())
                .unwrap();
        let (start, len) = meta.metadata().row_group(1).column(0).byte_range();
        drop(meta);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[start as usize..(start + len) as usize].fill(0xFF);
        std::fs::write(&path, &bytes).unwrap();

        let mut reader = read_documents(
            &path,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        for i in 0..10 {
            assert_eq!(reader.next().unwrap().unwrap().text, format!("text {i}"));
        }
        let err = reader.next().unwrap().unwrap_err();
        let DataError::BadInput {
            path: p, location, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(p, &path);
        assert!(
            location.as_deref().unwrap().starts_with("row group 1 of 3"),
            "{err}"
        );
        assert!(reader.next().is_none(), "the reader stops after an error");

        // Not a parquet file at all.
        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"this is not parquet").unwrap();
        let msg = read_documents(
            &junk,
            InputFormat::Parquet,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("junk.parquet") && msg.contains("not a readable parquet file"),
            "{msg}"
        );
    }

    const JSONL: &str = concat!(
        "{\"text\": \"first doc\", \"id\": \"a\", \"url\": \"https://a.example\", \"language\": \"en\", \"score\": 3.5}\n",
        "\n",
        "{\"text\": \"second\\ndoc\", \"id\": 17, \"score\": 2, \"extra\": [1, 2]}\r\n",
        "   \n",
        "{\"text\": null, \"id\": \"skipped\"}\n",
        "{\"text\": \"third\", \"url\": null}", // no trailing newline
    );

    fn expected_jsonl() -> Vec<Document> {
        vec![
            Document {
                text: "first doc".into(),
                id: Some("a".into()),
                url: Some("https://a.example".into()),
                language: Some("en".into()),
                score: Some(3.5),
            },
            Document {
                text: "second\ndoc".into(),
                id: Some("17".into()),
                score: Some(2.0),
                ..Default::default()
            },
            Document::from_text("third"),
        ]
    }

    #[test]
    fn jsonl_plain_and_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("docs.jsonl");
        std::fs::write(&plain, format!("\u{feff}{JSONL}")).unwrap();
        let gz = dir.path().join("docs.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(JSONL.as_bytes()).unwrap();
        enc.finish().unwrap();
        for path in [&plain, &gz] {
            let (docs, skipped) = read_all(
                path,
                InputFormat::Jsonl,
                &Columns::default(),
                TextUnit::File,
            );
            assert_eq!(docs, expected_jsonl(), "{}", path.display());
            assert_eq!(skipped, 1);
        }
    }

    #[test]
    fn jsonl_custom_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(
            &path,
            "{\"content\": \"hello\", \"text\": 5, \"quality\": 0.5}\n",
        )
        .unwrap();
        let columns = Columns {
            text: "content".into(),
            score: "quality".into(),
            ..Columns::default()
        };
        let (docs, _) = read_all(&path, InputFormat::Jsonl, &columns, TextUnit::File);
        assert_eq!(
            docs,
            [Document {
                text: "hello".into(),
                score: Some(0.5),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"text\": \"ok 1\"}\n\n{\"text\": \"ok 2\"}\n{\"text\": oops}\n{\"text\": \"after\"}\n").unwrap();
        let mut reader = read_documents(
            &path,
            InputFormat::Jsonl,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap();
        assert_eq!(reader.next().unwrap().unwrap().text, "ok 1");
        assert_eq!(reader.next().unwrap().unwrap().text, "ok 2");
        let err = reader.next().unwrap().unwrap_err();
        let DataError::BadInput {
            location, message, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(location.as_deref(), Some("line 4"));
        assert!(message.contains("not valid JSON"), "{message}");
        assert!(
            err.to_string()
                .contains("bad.jsonl (line 4): not valid JSON"),
            "{err}"
        );
        assert!(reader.next().is_none());

        let cases: [(&str, &str); 5] = [
            (
                "{\"text\": \"a\"}\n{\"body\": \"b\"}\n",
                "(line 2): no `text` key",
            ),
            ("[1, 2]\n", "(line 1): expected a JSON object"),
            (
                "{\"text\": 3}\n",
                "(line 1): `text` is a number, expected a string",
            ),
            (
                "{\"text\": \"a\", \"score\": \"high\"}\n",
                "(line 1): `score` is a string, expected a number",
            ),
            (
                "{\"text\": \"a\", \"id\": [1]}\n",
                "(line 1): `id` is an array, expected a string or a number",
            ),
        ];
        for (content, expected) in cases {
            std::fs::write(&path, content).unwrap();
            let err = read_documents(
                &path,
                InputFormat::Jsonl,
                &Columns::default(),
                TextUnit::File,
            )
            .unwrap()
            .find_map(Result::err)
            .unwrap();
            assert!(matches!(err, DataError::BadInput { .. }));
            assert!(
                err.to_string().contains(expected),
                "{err} does not contain {expected}"
            );
        }

        std::fs::write(&path, b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}\n").unwrap();
        let err = read_documents(
            &path,
            InputFormat::Jsonl,
            &Columns::default(),
            TextUnit::File,
        )
        .unwrap()
        .find_map(Result::err)
        .unwrap();
        assert!(
            err.to_string().contains("(line 2): not valid UTF-8"),
            "{err}"
        );

        // A truncated gzip stream is a bad input, not a silent end of file.
        let gz = dir.path().join("cut.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..2000 {
            writeln!(enc, "{{\"text\": \"document {i} with some words\"}}").unwrap();
        }
        let bytes = enc.finish().unwrap();
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        let results: Vec<_> =
            read_documents(&gz, InputFormat::Jsonl, &Columns::default(), TextUnit::File)
                .unwrap()
                .collect();
        assert!(results.len() < 2000);
        assert!(
            matches!(results.last(), Some(Err(DataError::BadInput { .. }))),
            "{:?}",
            results.last()
        );
    }

    #[test]
    fn text_units() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        let content = "Title line\r\nsecond line of para one\r\n\r\n\r\n  \t\nPara two.\n\nLast para\nends here\n";
        std::fs::write(&path, content).unwrap();
        let texts = |unit| -> Vec<String> {
            read_all(&path, InputFormat::Text, &Columns::default(), unit)
                .0
                .into_iter()
                .map(|d| d.text)
                .collect()
        };
        assert_eq!(texts(TextUnit::File), [content]);
        assert_eq!(
            texts(TextUnit::Paragraphs),
            [
                "Title line\nsecond line of para one",
                "Para two.",
                "Last para\nends here"
            ]
        );
        assert_eq!(
            texts(TextUnit::Lines),
            [
                "Title line",
                "second line of para one",
                "Para two.",
                "Last para",
                "ends here"
            ]
        );

        // Empty files give no document (counted as skipped in File mode).
        std::fs::write(&path, "\n  \n").unwrap();
        let (docs, skipped) = read_all(
            &path,
            InputFormat::Text,
            &Columns::default(),
            TextUnit::File,
        );
        assert!(docs.is_empty());
        assert_eq!(skipped, 1);
        assert!(texts(TextUnit::Paragraphs).is_empty());
        assert!(texts(TextUnit::Lines).is_empty());

        // Invalid UTF-8 is a BadInput naming the line, in every unit.
        std::fs::write(&path, b"good\n\nbad \xC3\x28 byte\n").unwrap();
        for unit in [TextUnit::File, TextUnit::Paragraphs, TextUnit::Lines] {
            let err = read_documents(&path, InputFormat::Text, &Columns::default(), unit)
                .unwrap()
                .find_map(Result::err)
                .unwrap();
            assert!(matches!(err, DataError::BadInput { .. }), "{err:?}");
            assert!(
                err.to_string().contains("(line 3): not valid UTF-8"),
                "{unit:?}: {err}"
            );
        }
    }

    #[test]
    fn expand_paths_walks_directories_globs_and_reports_missing_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let touch = |rel: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let a = touch("web/CC-2024/000.parquet");
        let b = touch("web/CC-2024/001.PARQUET");
        let c = touch("web/CC-2023/sub/deep/000.parquet");
        touch("web/CC-2024/.hidden.parquet");
        touch("web/.cache/x.parquet");
        touch("web/CC-2024/readme.md");
        touch("web/CC-2024/notparquet");
        touch("web/CC-2024/000.parquet.tmp");
        let j1 = touch("jsonl/a.jsonl");
        let j2 = touch("jsonl/b.json.gz");
        touch("jsonl/c.gz");
        let odd = touch("misc/data.bin");
        let s = |p: &Path| p.to_str().unwrap().to_string();

        let parquet = InputFormat::Parquet.extensions();
        let got = expand_paths("web", &[s(&root.join("web"))], parquet).unwrap();
        assert_eq!(got, vec![c.clone(), a.clone(), b.clone()]); // sorted: CC-2023 < CC-2024

        // Globs (`**` recursive) plus an overlapping directory and an explicit file: deduplicated.
        let patterns = [
            s(&root.join("web/**/*.parquet")),
            s(&root.join("web/CC-2024")),
            s(&a),
            s(&odd), // an explicit file is kept whatever its extension
        ];
        let got = expand_paths("web", &patterns, parquet).unwrap();
        assert_eq!(got, vec![odd.clone(), c.clone(), a.clone(), b.clone()]);

        // A glob matching a directory walks it.
        let got = expand_paths("web", &[s(&root.join("web/CC-202?"))], parquet).unwrap();
        assert_eq!(got, vec![c.clone(), a.clone(), b.clone()]);

        let got = expand_paths(
            "j",
            &[s(&root.join("jsonl"))],
            InputFormat::Jsonl.extensions(),
        )
        .unwrap();
        assert_eq!(got, vec![j1, j2]);

        // Missing path, glob with no match, directory without matching files.
        for missing in [
            s(&root.join("nope/fineweb-edu/*.parquet")),
            s(&root.join("nope.parquet")),
            s(&root.join("misc")),
        ] {
            let err = expand_paths("fineweb_edu", &[s(&a), missing.clone()], parquet).unwrap_err();
            let DataError::NoInput {
                source_name,
                pattern,
                hint,
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!(source_name, "fineweb_edu");
            assert_eq!(pattern, &missing);
            assert!(hint.is_empty());
            assert!(err.to_string().contains(&missing), "{err}");
        }

        let err = expand_paths("w", &[s(&root.join("web/[.parquet"))], parquet).unwrap_err();
        assert!(matches!(err, DataError::Config { .. }), "{err:?}");
    }

    #[test]
    fn format_from_path_and_config_serde() {
        assert_eq!(
            InputFormat::from_path(Path::new("a/b.parquet")),
            Some(InputFormat::Parquet)
        );
        assert_eq!(
            InputFormat::from_path(Path::new("x.ndjson.gz")),
            Some(InputFormat::Jsonl)
        );
        assert_eq!(
            InputFormat::from_path(Path::new("README.md")),
            Some(InputFormat::Text)
        );
        assert_eq!(InputFormat::from_path(Path::new("parquet")), None);
        assert_eq!(InputFormat::from_path(Path::new("x.gz")), None);

        let c: Columns = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Columns::default());
        assert_eq!(c.text, "text");
        let c: Columns = serde_json::from_str(r#"{"text": "content"}"#).unwrap();
        assert_eq!((c.text.as_str(), c.id.as_str()), ("content", "id"));
        assert!(serde_json::from_str::<Columns>(r#"{"txt": "content"}"#).is_err());
        let f: InputFormat = serde_json::from_str(r#""jsonl""#).unwrap();
        assert_eq!(f, InputFormat::Jsonl);
        let u: TextUnit = serde_json::from_str(r#""paragraphs""#).unwrap();
        assert_eq!(u, TextUnit::Paragraphs);
        assert_eq!(TextUnit::default(), TextUnit::File);
    }

    #[test]
    fn readers_are_send() {
        fn send<T: Send>() {}
        send::<DocumentReader>();
    }
}
