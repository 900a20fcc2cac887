//! Safetensors checkpoints: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. Headers are parsed up front; tensors are read and converted to
//! f32 one at a time, so the whole checkpoint is never in memory at once (files are memory-mapped
//! natively; in the browser the same header parser works on byte chunks).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The element types a checkpoint tensor may be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl WeightDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 | WeightDtype::BF16 => 2,
        }
    }
}

/// Where one tensor lives inside a safetensors file, as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Element type, or `None` when the file uses one the loader does not read.
    pub dtype: Option<WeightDtype>,
    /// The dtype as the header spells it (`F32`, `BF16`, `I64`, ...).
    pub dtype_name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Byte range in the file (absolute, header included).
    pub range: Range<usize>,
}

/// The parsed header of one safetensors file.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// Bytes taken by the 8-byte length and the JSON header; tensor data starts here.
    pub data_start: usize,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

impl SafetensorsHeader {
    /// Bytes needed to know the header's length.
    pub const PREFIX: usize = 8;

    /// Reads the header length from the first 8 bytes of a file.
    pub fn header_len(prefix: &[u8], path: &Path) -> Result<usize> {
        let bytes: [u8; 8] = prefix.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("file is {} bytes, too short for a header", prefix.len()),
        })?;
        let n = u64::from_le_bytes(bytes);
        if n > 100_000_000 {
            return Err(Error::Safetensors { path: path.to_path_buf(), message: format!("header length {n} is implausible") });
        }
        Ok(n as usize)
    }

    /// Parses a header. `head` must hold at least the first `8 + header_len` bytes of the file;
    /// `file_len` is the whole file's size, used to detect truncation. A tensor in a dtype other
    /// than F32/F16/BF16 is an error only when it is read ([`Error::Dtype`]). Every size and
    /// offset is computed with checked arithmetic; each tensor's byte range must lie inside the
    /// file, match its dtype × shape, and overlap no other tensor's (as the safetensors reference
    /// requires).
    pub fn parse(head: &[u8], file_len: usize, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Safetensors { path: path.to_path_buf(), message };
        let n = Self::header_len(head, path)?;
        let data_start = Self::PREFIX + n;
        if file_len < data_start || head.len() < data_start {
            return Err(bad(format!("truncated: the header needs {data_start} bytes but the file has {file_len}")));
        }
        let json = std::str::from_utf8(&head[Self::PREFIX..data_start])
            .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(json.trim_end()).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                continue;
            }
            let entry: RawEntry = serde_json::from_value(value)
                .map_err(|e| bad(format!("header entry for tensor `{name}` is malformed: {e}")))?;
            let [start, end] = entry.data_offsets;
            let dtype = match entry.dtype.as_str() {
                "F32" => Some(WeightDtype::F32),
                "F16" => Some(WeightDtype::F16),
                "BF16" => Some(WeightDtype::BF16),
                _ => None,
            };
            if end < start {
                return Err(bad(format!("tensor `{name}` has data_offsets [{start}, {end}] that run backwards")));
            }
            let elements = entry
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{name}` has shape {:?}, whose element count overflows", entry.shape)))?;
            if let Some(dt) = dtype {
                let needed = elements
                    .checked_mul(dt.size())
                    .ok_or_else(|| bad(format!("tensor `{name}` of shape {:?} needs more bytes than an address holds", entry.shape)))?;
                if end - start != needed {
                    return Err(bad(format!(
                        "tensor `{name}` of shape {:?} and dtype {} needs {needed} bytes but data_offsets span {}",
                        entry.shape,
                        entry.dtype,
                        end - start
                    )));
                }
            }
            let range = match (data_start.checked_add(start), data_start.checked_add(end)) {
                (Some(a), Some(b)) => a..b,
                _ => {
                    return Err(bad(format!(
                        "truncated: tensor `{name}` has data_offsets [{start}, {end}], past the end of the file ({file_len} bytes)"
                    )));
                }
            };
            if range.end > file_len {
                return Err(bad(format!(
                    "truncated: tensor `{name}` ends at byte {} but the file has {file_len} bytes",
                    range.end
                )));
            }
            tensors.insert(name, TensorEntry { dtype, dtype_name: entry.dtype, shape: entry.shape, range });
        }
        // No two tensors may share bytes (the reference loader refuses it too): sorted by start,
        // each must begin at or after the end of the one before.
        let mut spans: Vec<(&String, &Range<usize>)> =
            tensors.iter().map(|(n, t)| (n, &t.range)).filter(|(_, r)| !r.is_empty()).collect();
        spans.sort_by_key(|(_, r)| (r.start, r.end));
        for pair in spans.windows(2) {
            let ((a, ra), (b, rb)) = (pair[0], pair[1]);
            if rb.start < ra.end {
                return Err(bad(format!(
                    "tensors `{a}` (bytes {}..{}) and `{b}` (bytes {}..{}) overlap",
                    ra.start - data_start,
                    ra.end - data_start,
                    rb.start - data_start,
                    rb.end - data_start
                )));
            }
        }
        Ok(SafetensorsHeader { data_start, tensors })
    }
}

/// The first value of `data` that is not finite, as (index, value).
pub fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    if data.chunks(1 << 14).all(|c| non_finite_flags(c) & 0x8000_0000 == 0) {
        return None;
    }
    data.iter().position(|v| !v.is_finite()).map(|i| (i, data[i]))
}

/// [`to_f32`], refusing a tensor with a NaN or infinite value: an error naming the file, the
/// tensor and the first such element (`first` is the index of `bytes`' first element within the
/// tensor, for tensors read in pieces). The check runs on each block of values just converted,
/// while it is in cache: the values pass through memory once, and loading is as fast as without.
pub fn to_f32_checked(bytes: &[u8], dtype: WeightDtype, path: &Path, name: &str, first: usize) -> Result<Vec<f32>> {
    const BLOCK: usize = 4096;
    let mut out: Vec<f32> = Vec::with_capacity(bytes.len() / dtype.size());
    let mut flags = 0u32;
    for block in bytes.chunks(BLOCK * dtype.size()) {
        let start = out.len();
        extend_f32(&mut out, block, dtype);
        flags |= non_finite_flags(&out[start..]);
    }
    if flags & 0x8000_0000 != 0 {
        check_finite(&out, path, name, first)?;
    }
    Ok(out)
}

/// The sign bit is set when some value of `data` is NaN or infinite: such an f32 has all its
/// exponent bits set, and adding one to the exponent field then carries into the sign bit. An OR
/// over the values vectorises.
fn non_finite_flags(data: &[f32]) -> u32 {
    const EXP: u32 = 0x7f80_0000;
    data.iter().fold(0u32, |acc, x| acc | (x.to_bits() & EXP).wrapping_add(0x0080_0000))
}

/// Appends the f32 values of little-endian stored elements.
fn extend_f32(out: &mut Vec<f32>, bytes: &[u8], dtype: WeightDtype) {
    match dtype {
        WeightDtype::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        WeightDtype::F16 => out.extend(bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())),
        WeightDtype::BF16 => out.extend(bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())),
    }
}

/// An error when `data` (the elements of tensor `name` from index `first` on) holds a NaN or
/// infinite value.
pub fn check_finite(data: &[f32], path: &Path, name: &str, first: usize) -> Result<()> {
    match first_non_finite(data) {
        None => Ok(()),
        Some((i, v)) => Err(Error::NonFinite { path: path.to_path_buf(), tensor: name.to_string(), index: first + i, value: v }),
    }
}

/// The path of `name`, a file the listing in `listing` (an index or a manifest) names, inside
/// `dir`: refused when the name is absolute or climbs out (`..`), or, natively, when it resolves
/// (through symlinks) to anything but a regular file inside `dir`. One layout is allowed to
/// point out: a Hugging Face cache snapshot (`…/snapshots/<revision>/`), whose files link to
/// the repository's `blobs/`. `field` names the entry in errors.
pub fn confined_file(dir: &Path, name: &str, listing: &Path, field: &str) -> Result<PathBuf> {
    check_file_name(name, listing, field)?;
    let path = dir.join(name);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let bad = |message: String| Error::Config { path: listing.to_path_buf(), field: field.to_string(), message };
        let real_dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let real = std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
        let hf_blobs = dir
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
            .and_then(Path::parent)
            .and_then(|repo| std::fs::canonicalize(repo.join("blobs")).ok());
        if !real.starts_with(&real_dir) && !hf_blobs.is_some_and(|b| real.starts_with(b)) {
            return Err(bad(format!("{name:?} leads to {}, outside {}", real.display(), real_dir.display())));
        }
        regular_file(&path, listing, field)?;
    }
    Ok(path)
}

/// Refuses anything but a regular file (a device such as `/dev/zero`, a FIFO, a directory).
#[cfg(not(target_arch = "wasm32"))]
pub fn regular_file(path: &Path, listing: &Path, field: &str) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Config {
            path: listing.to_path_buf(),
            field: field.to_string(),
            message: format!("{} is not a regular file", path.display()),
        });
    }
    Ok(())
}

/// Refuses a listed file name that is empty, absolute, or has a `..`, `.` or root component:
/// every file of a checkpoint or pack lies in its directory (or below it).
pub fn check_file_name(name: &str, listing: &Path, field: &str) -> Result<()> {
    use std::path::Component;
    let bad = |message: String| Error::Config { path: listing.to_path_buf(), field: field.to_string(), message };
    if name.is_empty() {
        return Err(bad("the file name is empty".into()));
    }
    // `%`, `?` and `#` too: a browser resolves names as URLs (`%2e%2e/` is `../` there).
    if name.contains(['\\', '\0', ':', '%', '?', '#']) {
        return Err(bad(format!("{name:?} is not a plain file name in the model directory")));
    }
    let p = Path::new(name);
    if p.is_absolute() || name.starts_with('/') {
        return Err(bad(format!("{name:?} is an absolute path; shards must lie in the model directory")));
    }
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad(format!("{name:?} leaves the model directory (`..` or `.` components are not allowed)")));
    }
    Ok(())
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// The shard files a `model.safetensors.index.json` lists, each once, in name order, with one
/// tensor it holds (for error messages); every name must be a plain relative path
/// ([`check_file_name`]). `path` names the index in errors.
pub fn parse_index(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let index: IndexFile = serde_json::from_str(text).map_err(|e| Error::json(path, &e))?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (tensor, file) in index.weight_map {
        check_file_name(&file, path, &format!("weight_map.{tensor}"))?;
        files.entry(file).or_insert(tensor);
    }
    Ok(files.into_iter().collect())
}

/// Converts little-endian stored elements to f32.
pub fn to_f32(bytes: &[u8], dtype: WeightDtype) -> Vec<f32> {
    match dtype {
        WeightDtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        WeightDtype::F16 => {
            bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
        }
        WeightDtype::BF16 => {
            bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
        }
    }
}

/// The byte range of rows `rows` of a 2-D tensor, with its dtype; refuses other shapes, dtypes
/// the loader does not read and ranges past the last row.
pub fn entry_rows(path: &Path, name: &str, entry: &TensorEntry, rows: Range<usize>) -> Result<(Range<usize>, WeightDtype)> {
    let dtype = entry.dtype.ok_or_else(|| Error::Dtype { path: path.to_path_buf(), tensor: name.to_string(), dtype: entry.dtype_name.clone() })?;
    let (n, cols) = match entry.shape[..] {
        [n, cols] => (n, cols),
        _ => return Err(Error::InvalidArgument { name: "rows", message: format!("`{name}` is not 2-D") }),
    };
    if rows.start > rows.end || rows.end > n {
        return Err(Error::InvalidArgument { name: "rows", message: format!("rows {rows:?} of `{name}`, which has {n}") });
    }
    // The header check made `n * cols * size` the tensor's byte length, so none of this overflows.
    let row_bytes = cols * dtype.size();
    Ok((entry.range.start + rows.start * row_bytes..entry.range.start + rows.end * row_bytes, dtype))
}

/// A host-side tensor in f32, as read from a checkpoint.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Anything the model loader can read named tensors from: a checkpoint directory natively, byte
/// chunks fetched over the network in the browser, or a test double.
pub trait TensorSource {
    /// Shape of a tensor, or [`Error::MissingTensor`].
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    /// Reads one tensor and converts it to f32.
    fn read_f32(&self, name: &str) -> Result<HostTensor>;
    /// The tensor as stored quantized, when the source holds it so (a pre-quantized pack).
    fn read_quantized(&self, _name: &str) -> Result<Option<crate::quant::QuantMatrix>> {
        Ok(None)
    }
    /// The file a tensor comes from, for error messages.
    fn file_of(&self, name: &str) -> PathBuf;
    /// Every tensor the source holds, when it can list them (headers already read): the loader
    /// checks them against the config before it reads any data. Empty when unknown.
    fn tensor_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether [`TensorSource::read_rows_f32`] can read part of this tensor.
    fn reads_rows(&self, _name: &str) -> bool {
        false
    }
    /// Rows `rows` of a 2-D tensor in f32, when [`TensorSource::reads_rows`] says so.
    fn read_rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        let _ = rows;
        Err(Error::InvalidArgument { name: "rows", message: format!("`{name}` cannot be read in parts from this source") })
    }
}

/// A [`TensorSource`] whose reads are awaited: files read piece by piece from a browser's
/// `Blob`s. Shapes are known up front (from headers already read); only the data waits. Every
/// synchronous [`TensorSource`] is one too, so the model has a single loader.
#[allow(async_fn_in_trait)]
pub trait AsyncTensorSource {
    /// Shape of a tensor, or [`Error::MissingTensor`].
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    /// Reads one tensor and converts it to f32.
    async fn read_f32(&self, name: &str) -> Result<HostTensor>;
    /// The tensor as stored quantized, when the source holds it so (a pre-quantized pack).
    async fn read_quantized(&self, name: &str) -> Result<Option<crate::quant::QuantMatrix>>;
    /// The file a tensor comes from, for error messages.
    fn file_of(&self, name: &str) -> PathBuf;
    /// Every tensor the source holds, when it can list them (see [`TensorSource::tensor_names`]).
    fn tensor_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether [`AsyncTensorSource::read_rows_f32`] can read part of this tensor.
    fn reads_rows(&self, _name: &str) -> bool {
        false
    }
    /// Rows `rows` of a 2-D tensor in f32, when [`AsyncTensorSource::reads_rows`] says so: a
    /// large matrix is then loaded in pieces and never sits whole in memory.
    async fn read_rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        let _ = rows;
        Err(Error::InvalidArgument { name: "rows", message: format!("`{name}` cannot be read in parts from this source") })
    }
}

impl<T: TensorSource + ?Sized> AsyncTensorSource for T {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        TensorSource::shape(self, name)
    }
    async fn read_f32(&self, name: &str) -> Result<HostTensor> {
        TensorSource::read_f32(self, name)
    }
    async fn read_quantized(&self, name: &str) -> Result<Option<crate::quant::QuantMatrix>> {
        TensorSource::read_quantized(self, name)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        TensorSource::file_of(self, name)
    }
    fn tensor_names(&self) -> Vec<String> {
        TensorSource::tensor_names(self)
    }
    fn reads_rows(&self, name: &str) -> bool {
        TensorSource::reads_rows(self, name)
    }
    async fn read_rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        TensorSource::read_rows_f32(self, name, rows)
    }
}

/// The value of a future that never waits (an async loader over a synchronous source), on any
/// target, without an executor.
pub(crate) fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a synchronous tensor source never waits"),
    }
}

/// The bytes of one file, however they are held: a memory map, a buffer, or (in the browser) a
/// `Blob` read piece by piece. The safetensors reader ([`Safetensors`]) and the pack reader
/// ([`crate::load::pack::Pack`]) read through this, whatever the bytes come from.
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Bytes `range` of the file (inside it); `path` names the file in errors. A short read is
    /// an error.
    async fn read(&self, range: Range<u64>, path: &Path) -> Result<Cow<'_, [u8]>>;
}

/// A [`ByteSource`] already in memory (a buffer, a memory map): read without waiting, so the
/// readers over it are synchronous [`TensorSource`]s too.
pub trait InMemory: ByteSource {
    /// The whole file.
    fn bytes(&self) -> &[u8];
}

/// Bytes `range` of an in-memory file, or an error naming `path` when the range runs past it.
fn slice<'a>(bytes: &'a [u8], range: Range<u64>, path: &Path) -> Result<Cow<'a, [u8]>> {
    usize::try_from(range.start)
        .ok()
        .zip(usize::try_from(range.end).ok())
        .and_then(|(s, e)| bytes.get(s..e))
        .map(Cow::Borrowed)
        .ok_or_else(|| Error::Safetensors { path: path.to_path_buf(), message: format!("bytes {range:?} lie past the file's end ({} bytes)", bytes.len()) })
}

impl ByteSource for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    async fn read(&self, range: Range<u64>, path: &Path) -> Result<Cow<'_, [u8]>> {
        slice(self, range, path)
    }
}

impl InMemory for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for memmap2::Mmap {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    async fn read(&self, range: Range<u64>, path: &Path) -> Result<Cow<'_, [u8]>> {
        slice(self, range, path)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl InMemory for memmap2::Mmap {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Safetensors files over any [`ByteSource`]: one `model.safetensors` or the shards of an index.
/// Each file's header is read and checked when it is added; each tensor is read (whole, or a
/// range of rows) and converted when the loader asks, so the checkpoint is never in memory at
/// once. [`Checkpoint`] (memory-mapped files), [`BytesCheckpoint`] (buffers) and the browser's
/// `Blob`s are this one reader.
pub struct Safetensors<B> {
    files: Vec<(PathBuf, B, SafetensorsHeader)>,
    index: HashMap<String, usize>,
    /// What errors about a tensor found in no file name: the directory, or the first file.
    origin: Option<PathBuf>,
}

impl<B> Default for Safetensors<B> {
    fn default() -> Self {
        Safetensors { files: Vec::new(), index: HashMap::new(), origin: None }
    }
}

impl<B: ByteSource> Safetensors<B> {
    /// No files yet; `origin` (a directory) names the checkpoint in errors about a tensor no
    /// file holds (the first file does when `None`).
    pub fn empty(origin: Option<PathBuf>) -> Self {
        Safetensors { files: Vec::new(), index: HashMap::new(), origin }
    }

    /// Adds one safetensors file: its header is read (the first 8 bytes, then the header's
    /// length) and checked against the file's size before any tensor data is read.
    pub async fn add(&mut self, path: PathBuf, bytes: B) -> Result<()> {
        let len = bytes.size();
        let prefix = bytes.read(0..len.min(SafetensorsHeader::PREFIX as u64), &path).await?;
        let data_start = (SafetensorsHeader::PREFIX + SafetensorsHeader::header_len(&prefix, &path)?) as u64;
        if len < data_start {
            return Err(Error::Safetensors { path, message: format!("truncated: the header needs {data_start} bytes but the file has {len}") });
        }
        let header = {
            let head = bytes.read(0..data_start, &path).await?;
            let file_len = usize::try_from(len).unwrap_or(usize::MAX);
            SafetensorsHeader::parse(&head, file_len, &path)?
        };
        for t in header.tensors.keys() {
            self.index.insert(t.clone(), self.files.len());
        }
        self.files.push((path, bytes, header));
        Ok(())
    }

    fn origin(&self) -> PathBuf {
        self.origin.clone().or_else(|| self.files.first().map(|f| f.0.clone())).unwrap_or_default()
    }

    fn entry(&self, name: &str) -> Result<(&PathBuf, &B, &TensorEntry)> {
        let i = *self.index.get(name).ok_or_else(|| Error::MissingTensor { path: self.origin(), tensor: name.to_string() })?;
        let (path, bytes, header) = &self.files[i];
        Ok((path, bytes, &header.tensors[name]))
    }

    /// A tensor's shape, or [`Error::MissingTensor`].
    pub fn entry_shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.entry(name)?.2.shape.clone())
    }

    /// Every tensor the files hold.
    pub fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    /// The file a tensor comes from (the checkpoint's origin when no file holds it).
    pub fn file(&self, name: &str) -> PathBuf {
        self.index.get(name).map(|&i| self.files[i].0.clone()).unwrap_or_else(|| self.origin())
    }

    /// One tensor in f32, refusing dtypes the loader does not read and non-finite values.
    pub async fn tensor_f32(&self, name: &str) -> Result<HostTensor> {
        let (path, bytes, entry) = self.entry(name)?;
        let dtype = entry.dtype.ok_or_else(|| Error::Dtype { path: path.clone(), tensor: name.to_string(), dtype: entry.dtype_name.clone() })?;
        let data = bytes.read(entry.range.start as u64..entry.range.end as u64, path).await?;
        Ok(HostTensor { shape: entry.shape.clone(), data: to_f32_checked(&data, dtype, path, name, 0)? })
    }

    /// Rows `rows` of a 2-D tensor in f32.
    pub async fn rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        let (path, bytes, entry) = self.entry(name)?;
        let first = rows.start * entry.shape.get(1).copied().unwrap_or(0);
        let (range, dtype) = entry_rows(path, name, entry, rows)?;
        let data = bytes.read(range.start as u64..range.end as u64, path).await?;
        to_f32_checked(&data, dtype, path, name, first)
    }
}

impl<B: ByteSource> Safetensors<B> {
    /// Whether a file holds `name`.
    pub fn holds(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

impl<B: InMemory> TensorSource for Safetensors<B> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    fn read_f32(&self, name: &str) -> Result<HostTensor> {
        ready(self.tensor_f32(name))
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.file(name)
    }
    fn reads_rows(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    fn read_rows_f32(&self, name: &str, rows: Range<usize>) -> Result<Vec<f32>> {
        ready(self.rows_f32(name, rows))
    }
}

/// Safetensors files held as bytes (downloaded, embedded, built by a test).
pub type BytesCheckpoint = Safetensors<Vec<u8>>;

impl Safetensors<Vec<u8>> {
    /// An empty checkpoint; add each shard with [`BytesCheckpoint::add_file`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one safetensors file; `name` is used in error messages.
    pub fn add_file(&mut self, name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<()> {
        ready(self.add(name.into(), bytes))
    }
}

/// The safetensors weights of a Hugging Face checkpoint directory, memory-mapped.
#[cfg(not(target_arch = "wasm32"))]
pub type Checkpoint = Safetensors<memmap2::Mmap>;

#[cfg(not(target_arch = "wasm32"))]
impl Safetensors<memmap2::Mmap> {
    /// Opens `model.safetensors`, or else the shards named by `model.safetensors.index.json`, in `dir`.
    /// Every header is checked (dtypes, offsets, truncation) before any tensor is read.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        // model.safetensors first, as transformers looks (and as the browser asks).
        let files: Vec<PathBuf> = if single.exists() {
            regular_file(&single, &single, "model.safetensors")?;
            vec![single]
        } else if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            parse_index(&text, &index_path)?
                .into_iter()
                .map(|(file, tensor)| confined_file(dir, &file, &index_path, &format!("weight_map.{tensor}")))
                .collect::<Result<_>>()?
        } else {
            return Err(Error::MissingFile {
                path: single,
                hint: "; expected model.safetensors or model.safetensors.index.json with its shards".into(),
            });
        };
        let mut checkpoint = Safetensors::empty(Some(dir.to_path_buf()));
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is read-only and the file is not modified while the checkpoint is open;
            // a file truncated underneath would fault, which the header check cannot prevent.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            ready(checkpoint.add(path, map))?;
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_and_converts_each_dtype() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},"c":{"dtype":"F16","shape":[1],"data_offsets":[10,12]},"__metadata__":{"format":"pt"}}"#;
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&(-2.0f32).to_le_bytes());
        data.extend_from_slice(&half::bf16::from_f32(0.25).to_bits().to_le_bytes());
        data.extend_from_slice(&half::f16::from_f32(-3.0).to_bits().to_le_bytes());
        let f = file(h, &data);
        let header = SafetensorsHeader::parse(&f, f.len(), Path::new("x.safetensors")).unwrap();
        let a = &header.tensors["a"];
        assert_eq!(to_f32(&f[a.range.clone()], a.dtype.unwrap()), vec![1.5, -2.0]);
        let b = &header.tensors["b"];
        assert_eq!(to_f32(&f[b.range.clone()], b.dtype.unwrap()), vec![0.25]);
        let c = &header.tensors["c"];
        assert_eq!(to_f32(&f[c.range.clone()], c.dtype.unwrap()), vec![-3.0]);
    }

    #[test]
    fn truncation_names_the_tensor() {
        let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let f = file(h, &[0u8; 16]);
        let e = SafetensorsHeader::parse(&f, f.len() - 3, Path::new("m.safetensors")).unwrap_err().to_string();
        assert!(e.contains("m.safetensors") && e.contains("`w`") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn unknown_dtype_is_kept_by_name() {
        let h = r#"{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let f = file(h, &[0u8; 8]);
        let header = SafetensorsHeader::parse(&f, f.len(), Path::new("m.safetensors")).unwrap();
        assert_eq!(header.tensors["w"].dtype, None);
        assert_eq!(header.tensors["w"].dtype_name, "I64");
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let h = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let f = file(h, &[0u8; 8]);
        assert!(SafetensorsHeader::parse(&f, f.len(), Path::new("m")).is_err());
    }

    #[test]
    fn short_file_is_an_error() {
        let e = SafetensorsHeader::parse(&[1, 2, 3], 3, Path::new("m.safetensors")).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
    }
}
