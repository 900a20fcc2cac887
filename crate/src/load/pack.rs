//! The pre-quantized pack: a model directory with `config.json`, the tokenizer files, weight
//! shards of at most 128 MiB (`weights-00001.bin`, …) and a manifest (`genprm-pack.json`) giving
//! every tensor's place, the shards' sizes and SHA-256 checksums, and the checksum of the
//! `config.json` it was made for. Shards are consecutive slices of one byte stream, so a tensor
//! may span two of them; each slice can be fetched on its own (files, URLs, byte ranges).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::quant::{GROUP, QuantFormat, QuantMatrix};
use crate::load::config::PACK_QUANT_METHOD;
use crate::load::safetensors::{ByteSource, HostTensor, InMemory, TensorSource, WeightDtype, check_file_name, check_finite, ready, to_f32};

/// The manifest's file name.
pub const MANIFEST: &str = "genprm-pack.json";
/// The largest shard.
pub const SHARD_BYTES: usize = 128 << 20;
/// Files copied from the source checkpoint when present.
pub const SIDE_FILES: &[&str] = &["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"];

/// How one tensor is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedTensor {
    /// The checkpoint's tensor name.
    pub name: String,
    /// `f32`, `q8` or `q4`.
    pub kind: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset of its bytes in the stream (values, then scales for quantized tensors).
    pub offset: u64,
    /// Bytes of values.
    pub values_bytes: u64,
    /// Bytes of scales, in the manifest's `scale_dtype` (0 for f32 tensors).
    pub scales_bytes: u64,
}

/// How a pack stores the per-group scales of its quantized tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDtype {
    /// 4 bytes per group (packs without the field are f32).
    #[default]
    F32,
    /// 2 bytes per group: the levels are computed against the f16-rounded scale, so the stored
    /// pair is exact; about 10% smaller q4 packs and 5% smaller q8 ones.
    F16,
}

impl ScaleDtype {
    fn is_f32(&self) -> bool {
        *self == ScaleDtype::F32
    }
}

impl std::str::FromStr for ScaleDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(ScaleDtype::F32),
            "f16" => Ok(ScaleDtype::F16),
            other => Err(Error::InvalidArgument { name: "scales", message: format!("`{other}` is not one of f32, f16") }),
        }
    }
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name in the pack directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// `genprm-pack.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `genprm-pack`.
    pub format: String,
    /// Layout version (1).
    pub version: u32,
    /// The quantization of the linear layers.
    pub quant: QuantFormat,
    /// Weights per scale.
    pub group_size: usize,
    /// The type of the stored scales (written only when f16, so f32 packs stay readable by
    /// earlier versions, which know no such field).
    #[serde(default, skip_serializing_if = "ScaleDtype::is_f32")]
    pub scale_dtype: ScaleDtype,
    /// SHA-256 of the pack's `config.json`: the source's, marked as a pack's (see
    /// [`PACK_QUANT_METHOD`]; packs made before the mark hold the source's unchanged).
    pub config_sha256: String,
    /// Shards in stream order.
    pub shards: Vec<ShardInfo>,
    /// Every tensor.
    pub tensors: Vec<PackedTensor>,
    /// The other files of the pack's folder (those of [`SIDE_FILES`] the source had), so that a
    /// reader that must ask for each file (a browser, over HTTP) asks for none the folder lacks;
    /// empty in packs written before the field (the reader then asks, and takes a 404 as absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes a pack for the tensors of `source` (in `names` order), quantizing every 2-D tensor
/// (an input width the group size does not divide is an error) with scales stored as
/// `scale_dtype`, and returns its manifest. `progress` sees each tensor name.
#[allow(clippy::too_many_arguments)]
pub fn write_pack(
    source: &dyn TensorSource,
    names: &[String],
    quant: QuantFormat,
    head_quant: Option<QuantFormat>,
    scale_dtype: ScaleDtype,
    src_dir: &Path,
    out: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Manifest> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut copied_config = None;
    let mut files = Vec::new();
    for f in SIDE_FILES {
        let from = src_dir.join(f);
        if from.exists() {
            files.push(f.to_string());
            let mut bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            if *f == "config.json" {
                bytes = mark_config(&bytes, quant, &from)?;
                copied_config = Some(sha256_hex(&bytes));
            }
            let to = out.join(f);
            std::fs::write(&to, &bytes).map_err(|e| Error::io(&to, e))?;
        }
    }
    let config_sha256 =
        copied_config.ok_or_else(|| Error::MissingFile { path: src_dir.join("config.json"), hint: String::new() })?;
    let mut writer = ShardWriter { out: out.to_path_buf(), shards: Vec::new(), current: Vec::new(), offset: 0 };
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        progress(name);
        let t = source.read_f32(name)?;
        let is_head = name == "model.embed_tokens.weight" || name == "lm_head.weight";
        let format = if is_head { head_quant.unwrap_or(quant) } else { quant };
        let offset = writer.offset;
        if t.shape.len() == 2 {
            let q = match scale_dtype {
                ScaleDtype::F32 => QuantMatrix::quantize(&t.data, t.shape[0], t.shape[1], format, name)?,
                ScaleDtype::F16 => {
                    QuantMatrix::quantize_rounding_scales(&t.data, t.shape[0], t.shape[1], format, name, |s| half::f16::from_f32(s).to_f32())?
                }
            };
            drop(t);
            let values = q.values_bytes();
            let scales: Vec<u8> = match scale_dtype {
                ScaleDtype::F32 => q.scales().iter().flat_map(|s| s.to_le_bytes()).collect(),
                ScaleDtype::F16 => {
                    if let Some(s) = q.scales().iter().find(|s| !s.is_finite()) {
                        return Err(Error::InvalidArgument {
                            name: "scales",
                            message: format!("tensor `{name}` has a weight too large for an f16 scale ({s}); write the pack with f32 scales"),
                        });
                    }
                    q.scales().iter().flat_map(|s| half::f16::from_f32(*s).to_le_bytes()).collect()
                }
            };
            writer.write(&values)?;
            writer.write(&scales)?;
            tensors.push(PackedTensor {
                name: name.clone(),
                kind: format.to_string(),
                shape: vec![q.rows(), q.cols()],
                offset,
                values_bytes: values.len() as u64,
                scales_bytes: scales.len() as u64,
            });
        } else {
            let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            writer.write(&bytes)?;
            tensors.push(PackedTensor { name: name.clone(), kind: "f32".into(), shape: t.shape, offset, values_bytes: bytes.len() as u64, scales_bytes: 0 });
        }
    }
    let shards = writer.finish()?;
    let manifest = Manifest { format: "genprm-pack".into(), version: 1, quant, group_size: GROUP, scale_dtype, config_sha256, shards, tensors, files };
    let path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::json(&path, &e))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(manifest)
}

/// The source's `config.json` with a `quantization_config` saying it is a genprm pack (the
/// text otherwise unchanged), as Hugging Face marks quantized checkpoints: a reader that must
/// ask for each file then knows to read the manifest, and no other tool takes the pack's
/// shards for float weights. A source already quantized is refused.
fn mark_config(bytes: &[u8], quant: QuantFormat, path: &Path) -> Result<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::json(path, &e))?;
    let Some(object) = value.as_object() else {
        return Err(Error::Config { path: path.to_path_buf(), field: "(file)".into(), message: "is not a JSON object".into() });
    };
    if object.contains_key("quantization_config") {
        return Err(Error::Config {
            path: path.to_path_buf(),
            field: "quantization_config".into(),
            message: "the checkpoint is already quantized; a pack is made from float weights".into(),
        });
    }
    // The object's opening brace is the first byte that is not white space.
    let brace = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    let mark = format!("\n  \"quantization_config\": {{\"quant_method\": \"{PACK_QUANT_METHOD}\", \"quant\": \"{quant}\"}}{}", if object.is_empty() { "" } else { "," });
    let mut out = Vec::with_capacity(bytes.len() + mark.len());
    out.extend_from_slice(&bytes[..=brace]);
    out.extend_from_slice(mark.as_bytes());
    out.extend_from_slice(&bytes[brace + 1..]);
    Ok(out)
}

struct ShardWriter {
    out: PathBuf,
    shards: Vec<ShardInfo>,
    current: Vec<u8>,
    offset: u64,
}

impl ShardWriter {
    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = SHARD_BYTES - self.current.len();
            let n = room.min(bytes.len());
            self.current.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.offset += n as u64;
            if self.current.len() == SHARD_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let file = format!("weights-{:05}.bin", self.shards.len() + 1);
        let path = self.out.join(&file);
        std::fs::write(&path, &self.current).map_err(|e| Error::io(&path, e))?;
        self.shards.push(ShardInfo { file, bytes: self.current.len() as u64, sha256: sha256_hex(&self.current) });
        self.current.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.flush()?;
        Ok(self.shards)
    }
}

/// A pack read back: the manifest and its shards over any [`ByteSource`] (bytes read from
/// files, a browser's `Blob`s), every checksum verified before a tensor is read.
pub struct Pack<B = Vec<u8>> {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<B>,
}

impl Pack {
    /// Whether `dir` holds a pack.
    pub fn is_pack(dir: &Path) -> bool {
        dir.join(MANIFEST).exists()
    }

    /// Opens a pack directory: parses the manifest, checks it was made for this `config.json`,
    /// reads every shard and verifies its size and checksum.
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        let manifest = Manifest::read(dir)?;
        // Names and sizes are checked before any shard is read: a shard outside the pack, or a
        // device file, is never opened, and a file larger than the manifest says is never read.
        manifest.check_layout(dir)?;
        let shards = manifest
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = format!("shards[{i}].file");
                let p = crate::load::safetensors::confined_file(dir, &s.file, &mpath, &field)?;
                let len = std::fs::metadata(&p).map_err(|e| Error::io(&p, e))?.len();
                if len != s.bytes {
                    return Err(Error::Safetensors {
                        path: p,
                        message: format!("shard is {len} bytes, the manifest says {} (truncated?)", s.bytes),
                    });
                }
                std::fs::read(&p).map_err(|e| Error::io(&p, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let cpath = dir.join("config.json");
        let config = std::fs::read(&cpath).map_err(|e| Error::io(&cpath, e))?;
        Self::from_parts(dir, manifest, &config, shards)
    }

    /// A pack from its manifest, the bytes of its `config.json` and of each shard (however they
    /// were fetched); `dir` names the source in errors.
    pub fn from_parts(dir: &Path, manifest: Manifest, config_json: &[u8], shards: Vec<Vec<u8>>) -> Result<Self> {
        manifest.check(dir, config_json)?;
        if shards.len() != manifest.shards.len() {
            return Err(manifest.error(dir, format!("{} shards given, the manifest lists {}", shards.len(), manifest.shards.len())));
        }
        let mut given = shards.into_iter();
        ready(Self::fetched(dir, manifest, async |_: &ShardInfo| Ok(given.next().unwrap_or_default()), &mut |_, _, _| {}))
    }
}

impl<B: ByteSource> Pack<B> {
    /// A pack over shards fetched one at a time by `fetch` (in the manifest's order): the
    /// manifest checked against `config_json` and its own layout, then each shard's size and
    /// checksum verified (one shard read whole at a time) before the next is fetched.
    /// `progress(file, done, total)` is called before each shard and at the end. `dir` names
    /// the source in errors.
    pub async fn verified(
        dir: &Path,
        manifest: Manifest,
        config_json: &[u8],
        fetch: impl AsyncFnMut(&ShardInfo) -> Result<B>,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Self> {
        manifest.check(dir, config_json)?;
        Self::fetched(dir, manifest, fetch, progress).await
    }

    /// [`Pack::verified`] of a manifest already checked.
    async fn fetched(
        dir: &Path,
        manifest: Manifest,
        mut fetch: impl AsyncFnMut(&ShardInfo) -> Result<B>,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Self> {
        let total = manifest.shards.len();
        let mut shards = Vec::with_capacity(total);
        for (i, info) in manifest.shards.iter().enumerate() {
            progress(&info.file, i, total);
            let shard = fetch(info).await?;
            let path = dir.join(&info.file);
            if shard.size() != info.bytes {
                return Err(Error::Safetensors { path, message: format!("shard is {} bytes, the manifest says {} (truncated?)", shard.size(), info.bytes) });
            }
            info.verify(dir, &shard.read(0..info.bytes, &path).await?)?;
            shards.push(shard);
        }
        progress("", total, total);
        Ok(Pack { dir: dir.to_path_buf(), manifest, shards })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Bytes `offset..offset + len` of the shards laid end to end.
    async fn bytes(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        for (s, start, end) in self.manifest.locate(offset, len) {
            out.extend_from_slice(&self.shards[s].read(start..end, &self.dir.join(&self.manifest.shards[s].file)).await?);
        }
        Ok(out)
    }

    /// A tensor's shape, or [`Error::MissingTensor`].
    pub fn entry_shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.manifest.entry(&self.dir, name)?.shape.clone())
    }

    /// Every tensor the pack holds.
    pub fn names(&self) -> Vec<String> {
        self.manifest.tensors.iter().map(|t| t.name.clone()).collect()
    }

    /// The file errors about a tensor name: the manifest.
    pub fn file(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// Any tensor in f32 (a quantized one expanded).
    pub async fn tensor_f32(&self, name: &str) -> Result<HostTensor> {
        let t = self.manifest.entry(&self.dir, name)?;
        let values = self.bytes(t.offset, t.values_bytes).await?;
        let scales = self.bytes(t.offset + t.values_bytes, t.scales_bytes).await?;
        self.manifest.decode_f32(&self.dir, t, &values, &scales)
    }

    /// A quantized tensor as stored (`None` for an f32 one).
    pub async fn tensor_quantized(&self, name: &str) -> Result<Option<QuantMatrix>> {
        let t = self.manifest.entry(&self.dir, name)?;
        if t.kind == "f32" {
            return Ok(None);
        }
        let values = self.bytes(t.offset, t.values_bytes).await?;
        let scales = self.bytes(t.offset + t.values_bytes, t.scales_bytes).await?;
        self.manifest.decode_quantized(&self.dir, t, &values, &scales).map(Some)
    }
}

impl Manifest {
    /// Parses a manifest's bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::json(path, &e))
    }

    /// Reads and parses the manifest of the pack in `dir` (nothing else is read or checked).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        Self::parse(&std::fs::read(&path).map_err(|e| Error::io(&path, e))?, &path)
    }

    fn error(&self, dir: &Path, message: String) -> Error {
        Error::Config { path: dir.join(MANIFEST), field: "pack".into(), message }
    }

    /// Checks the format, the group size, that the pack was made for `config_json`, and that
    /// every tensor lies inside the shards. `dir` names the source in errors.
    pub fn check(&self, dir: &Path, config_json: &[u8]) -> Result<()> {
        if self.format != "genprm-pack" || self.version != 1 {
            return Err(self.error(dir, format!("format {:?} version {} is not genprm-pack version 1", self.format, self.version)));
        }
        if self.group_size != GROUP {
            return Err(self.error(dir, format!("group size {} is not supported (only {GROUP})", self.group_size)));
        }
        if sha256_hex(config_json) != self.config_sha256 {
            return Err(Error::Config {
                path: dir.join("config.json"),
                field: "config_sha256".into(),
                message: format!("config.json is not the one {MANIFEST} was made for (checksum differs)"),
            });
        }
        self.check_layout(dir)
    }

    /// The manifest's own consistency, before anything is read: shard names plain files of the
    /// pack, sizes and offsets summed with checked arithmetic, each tensor's bytes inside the
    /// shards, of the length its kind × shape needs, and overlapping no other tensor's.
    pub fn check_layout(&self, dir: &Path) -> Result<()> {
        let mpath = dir.join(MANIFEST);
        let field_err = |field: String, message: String| Error::Config { path: mpath.clone(), field, message };
        let mut total = 0u64;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            check_file_name(&s.file, &mpath, &format!("shards[{i}].file"))?;
            if !names.insert(s.file.as_str()) {
                return Err(field_err(format!("shards[{i}].file"), format!("{:?} is listed twice", s.file)));
            }
            total = total
                .checked_add(s.bytes)
                .ok_or_else(|| field_err(format!("shards[{i}].bytes"), "the shards' sizes add up past 2^64".into()))?;
        }
        let scale_size = match self.scale_dtype {
            ScaleDtype::F32 => 4u64,
            ScaleDtype::F16 => 2,
        };
        let mut spans = Vec::with_capacity(self.tensors.len());
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tensors.iter().enumerate() {
            let bad = |message: String| field_err(format!("tensors[{i}] (`{}`)", t.name), message);
            if !seen.insert(t.name.as_str()) {
                return Err(bad("the tensor is listed twice".into()));
            }
            let elements = t
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .ok_or_else(|| bad(format!("shape {:?} has more elements than 2^64", t.shape)))?;
            let (values, scales) = match t.kind.as_str() {
                "f32" => (elements.checked_mul(4), Some(0)),
                kind => {
                    let format = kind.parse::<QuantFormat>().map_err(|_| bad(format!("kind `{kind}` is not one of f32, q8, q4")))?;
                    let cols = match t.shape[..] {
                        [_, c] => c as u64,
                        _ => return Err(bad(format!("a quantized tensor must be 2-D, not {:?}", t.shape))),
                    };
                    if cols % GROUP as u64 != 0 {
                        return Err(bad(format!("the group size {GROUP} does not divide its input dimension {cols}")));
                    }
                    let groups = elements / GROUP as u64;
                    let values = match format {
                        QuantFormat::Q8 => Some(elements),
                        QuantFormat::Q4 => Some(elements / 2),
                    };
                    (values, groups.checked_mul(scale_size))
                }
            };
            if values != Some(t.values_bytes) || scales != Some(t.scales_bytes) {
                return Err(bad(format!(
                    "{} bytes of values and {} of scales, but a {} tensor of shape {:?} needs {} and {}",
                    t.values_bytes,
                    t.scales_bytes,
                    t.kind,
                    t.shape,
                    values.map_or("more than 2^64".into(), |v| v.to_string()),
                    scales.map_or("more than 2^64".into(), |v| v.to_string()),
                )));
            }
            let end = t
                .offset
                .checked_add(t.values_bytes)
                .and_then(|e| e.checked_add(t.scales_bytes))
                .filter(|&e| e <= total)
                .ok_or_else(|| bad(format!("runs past the end of the shards ({total} bytes)")))?;
            if (end - t.offset) > usize::MAX as u64 {
                return Err(bad("is larger than this machine's memory addresses".into()));
            }
            if end > t.offset {
                spans.push((t.offset, end, t.name.as_str()));
            }
        }
        spans.sort();
        for pair in spans.windows(2) {
            let ((a0, a1, a), (b0, b1, b)) = (pair[0], pair[1]);
            if b0 < a1 {
                return Err(field_err("tensors".into(), format!("tensors `{a}` (bytes {a0}..{a1}) and `{b}` (bytes {b0}..{b1}) overlap")));
            }
        }
        Ok(())
    }

    /// The pieces `(shard, start, end)` of the byte range `offset..offset + len` of the shards
    /// laid end to end.
    pub fn locate(&self, offset: u64, len: u64) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        let (mut pos, end) = (offset, offset + len);
        let mut start = 0u64;
        for (i, s) in self.shards.iter().enumerate() {
            let stop = start + s.bytes;
            if pos < end && pos < stop && pos >= start {
                let upto = end.min(stop);
                out.push((i, pos - start, upto - start));
                pos = upto;
            }
            start = stop;
        }
        out
    }

    /// The manifest entry of a tensor.
    pub fn entry(&self, dir: &Path, name: &str) -> Result<&PackedTensor> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::MissingTensor { path: dir.join(MANIFEST), tensor: name.to_string() })
    }

    /// A quantized tensor from its value and scale bytes.
    pub fn decode_quantized(&self, dir: &Path, t: &PackedTensor, values: &[u8], scales: &[u8]) -> Result<QuantMatrix> {
        let format = t.kind.parse::<QuantFormat>()?;
        let scales = to_f32(scales, match self.scale_dtype {
            ScaleDtype::F32 => WeightDtype::F32,
            ScaleDtype::F16 => WeightDtype::F16,
        });
        check_finite(&scales, &dir.join(MANIFEST), &format!("{} (scales)", t.name), 0)?;
        let (rows, cols) = match t.shape[..] {
            [r, c] => (r, c),
            _ => return Err(Error::Config { path: dir.join(MANIFEST), field: t.name.clone(), message: "a quantized tensor must be 2-D".into() }),
        };
        Ok(QuantMatrix::from_parts(rows, cols, format, values, scales, &t.name)?)
    }

    /// Any tensor in f32 (a quantized one expanded).
    pub fn decode_f32(&self, dir: &Path, t: &PackedTensor, values: &[u8], scales: &[u8]) -> Result<HostTensor> {
        let data = if t.kind == "f32" {
            let data = to_f32(values, WeightDtype::F32);
            check_finite(&data, &dir.join(MANIFEST), &t.name, 0)?;
            data
        } else {
            self.decode_quantized(dir, t, values, scales)?.dequantize()
        };
        Ok(HostTensor { shape: t.shape.clone(), data })
    }
}

impl ShardInfo {
    /// Checks a shard's bytes against its size and checksum. `dir` names the source in errors.
    pub fn verify(&self, dir: &Path, bytes: &[u8]) -> Result<()> {
        let path = dir.join(&self.file);
        if bytes.len() as u64 != self.bytes {
            return Err(Error::Safetensors { path, message: format!("shard is {} bytes, the manifest says {} (truncated?)", bytes.len(), self.bytes) });
        }
        if sha256_hex(bytes) != self.sha256 {
            return Err(Error::Safetensors { path, message: "checksum mismatch: the shard is corrupt".into() });
        }
        Ok(())
    }
}

impl<B: InMemory> TensorSource for Pack<B> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    fn read_f32(&self, name: &str) -> Result<HostTensor> {
        ready(self.tensor_f32(name))
    }
    fn read_quantized(&self, name: &str) -> Result<Option<QuantMatrix>> {
        ready(self.tensor_quantized(name))
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        self.file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One 1×32 matrix whose q8 scale (1e9 / 127) f16 cannot hold.
    struct Huge;

    impl TensorSource for Huge {
        fn shape(&self, _name: &str) -> Result<Vec<usize>> {
            Ok(vec![1, 32])
        }
        fn read_f32(&self, _name: &str) -> Result<HostTensor> {
            Ok(HostTensor { shape: vec![1, 32], data: vec![1e9; 32] })
        }
        fn file_of(&self, _name: &str) -> PathBuf {
            PathBuf::from("huge")
        }
    }

    #[test]
    fn a_scale_f16_cannot_hold_is_an_error_naming_the_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
        let names = vec!["w".to_string()];
        let write = |dtype| write_pack(&Huge, &names, QuantFormat::Q8, None, dtype, tmp.path(), &tmp.path().join("out"), |_| {});
        let e = write(ScaleDtype::F16).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("f32 scales"), "{e}");
        assert!(write(ScaleDtype::F32).is_ok());
        let config = std::fs::read_to_string(tmp.path().join("out/config.json")).unwrap();
        assert_eq!(config, "{\n  \"quantization_config\": {\"quant_method\": \"genprm-pack\", \"quant\": \"q8\"}}");
    }

    #[test]
    fn the_packs_config_is_marked_and_otherwise_unchanged() {
        let source = b"  {\"model_type\": \"qwen2\",\n  \"vocab_size\": 8}\n";
        let marked = String::from_utf8(mark_config(source, QuantFormat::Q4, Path::new("config.json")).unwrap()).unwrap();
        assert_eq!(marked, "  {\n  \"quantization_config\": {\"quant_method\": \"genprm-pack\", \"quant\": \"q4\"},\"model_type\": \"qwen2\",\n  \"vocab_size\": 8}\n");
        let value: serde_json::Value = serde_json::from_str(&marked).unwrap();
        assert_eq!(value["vocab_size"], 8);
        let e = mark_config(marked.as_bytes(), QuantFormat::Q8, Path::new("m/config.json")).unwrap_err().to_string();
        assert!(e.contains("m/config.json") && e.contains("already quantized"), "{e}");
        let e = mark_config(b"[1]", QuantFormat::Q8, Path::new("m/config.json")).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
