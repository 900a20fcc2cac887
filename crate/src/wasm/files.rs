//! The model's files as the page hands them over (`fetchFile(name) => Promise<Blob | null>`),
//! read piece by piece through the one safetensors reader and the one pack reader.

use super::*;

/// The model's files, fetched through the page's `fetchFile(name) => Promise<Blob | null>`.
pub(super) struct Files {
    pub(super) fetch: Function,
    /// The folder's file names when known (a pack's manifest lists them): another name is
    /// absent without asking the page, so no request is made for it (a 404 in the console).
    pub(super) known: Option<std::collections::HashSet<String>>,
}

impl Files {
    pub(super) fn new(fetch: Function) -> Self {
        Files { fetch, known: None }
    }

    /// The file `name`, or `None` when the folder has none.
    pub(super) async fn get(&self, name: &str) -> Result<Option<Blob>> {
        self.ask(name, false).await
    }

    /// The file `name` when the page can tell it exists without a request that may fail (the
    /// folder's files are listed: picked files, a Hugging Face repository, a pack, a given list);
    /// `None` otherwise. For an optional file whose absence has a fallback as good (a chat
    /// template also found in `tokenizer_config.json`), so a site's plain folder logs no 404.
    pub(super) async fn get_if_listed(&self, name: &str) -> Result<Option<Blob>> {
        self.ask(name, true).await
    }

    async fn ask(&self, name: &str, if_listed: bool) -> Result<Option<Blob>> {
        if self.known.as_ref().is_some_and(|known| !known.contains(name)) {
            return Ok(None);
        }
        let failed = |e: JsValue| Error::Io {
            path: name.into(),
            source: std::io::Error::other(e.as_string().or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message()))).unwrap_or_else(|| format!("{e:?}"))),
        };
        let listed_only = self.known.is_none() && if_listed;
        let promise = if listed_only {
            let options = js_sys::Object::new();
            js_sys::Reflect::set(&options, &"ifListed".into(), &JsValue::TRUE).map_err(failed)?;
            self.fetch.call2(&JsValue::NULL, &name.into(), &options).map_err(failed)?
        } else {
            self.fetch.call1(&JsValue::NULL, &name.into()).map_err(failed)?
        };
        let value = JsFuture::from(Promise::resolve(&promise)).await.map_err(failed)?;
        if value.is_null() || value.is_undefined() {
            return Ok(None);
        }
        value.dyn_into::<Blob>().map(Some).map_err(|_| Error::Io {
            path: name.into(),
            source: std::io::Error::other("fetchFile did not return a Blob or null"),
        })
    }

    pub(super) async fn required(&self, name: &str, hint: &str) -> Result<Blob> {
        self.get(name).await?.ok_or_else(|| Error::MissingFile { path: name.into(), hint: hint.to_string() })
    }
}

/// Bytes `start..end` of a blob.
pub(super) async fn read_range(blob: &Blob, start: u64, end: u64, path: &Path) -> Result<Vec<u8>> {
    let io = |e: JsValue| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(format!("{e:?}")) };
    let part = blob.slice_with_f64_and_f64(start as f64, end as f64).map_err(io)?;
    let buffer = JsFuture::from(part.array_buffer()).await.map_err(io)?;
    let bytes = Uint8Array::new(&buffer).to_vec();
    if bytes.len() as u64 != end - start {
        return Err(Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("read {} bytes at {start}, expected {} (truncated?)", bytes.len(), end - start),
        });
    }
    Ok(bytes)
}

pub(super) async fn read_all(blob: &Blob, path: &Path) -> Result<Vec<u8>> {
    read_range(blob, 0, blob.size() as u64, path).await
}

/// A model file as a `Blob`, read piece by piece: the [`ByteSource`] the one safetensors reader
/// and the one pack reader take in the browser.
pub(super) struct BlobBytes(pub(super) Blob);

impl ByteSource for BlobBytes {
    fn size(&self) -> u64 {
        self.0.size() as u64
    }
    async fn read(&self, range: std::ops::Range<u64>, path: &Path) -> Result<Cow<'_, [u8]>> {
        read_range(&self.0, range.start, range.end, path).await.map(Cow::Owned)
    }
}

/// Opens the safetensors files of a model folder: `model.safetensors`, or else the shards its
/// index lists (names confined to the folder: no `..`, no absolute path or URL); `None` when the
/// folder has neither. The single file is asked for first, as transformers looks: a site's folder
/// holding one (any checkpoint under 5 GB saved by transformers) then logs no 404.
pub(super) async fn open_safetensors(files: &Files) -> Result<Option<Safetensors<BlobBytes>>> {
    let mut checkpoint = Safetensors::empty(None);
    if let Some(blob) = files.get("model.safetensors").await? {
        checkpoint.add(PathBuf::from("model.safetensors"), BlobBytes(blob)).await?;
        return Ok(Some(checkpoint));
    }
    let names: Vec<String> = match files.get("model.safetensors.index.json").await? {
        Some(blob) => {
            let path = Path::new("model.safetensors.index.json");
            let bytes = read_all(&blob, path).await?;
            let text = std::str::from_utf8(&bytes).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                field: "(file)".into(),
                message: format!("not UTF-8 text: {e}"),
            })?;
            crate::load::safetensors::parse_index(text, path)?.into_iter().map(|(file, _)| file).collect()
        }
        None => return Ok(None),
    };
    for name in names {
        let blob = files.required(&name, "; model.safetensors.index.json lists it").await?;
        checkpoint.add(PathBuf::from(name), BlobBytes(blob)).await?;
    }
    Ok(Some(checkpoint))
}

impl AsyncTensorSource for Safetensors<BlobBytes> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    async fn read_f32(&self, name: &str) -> Result<HostTensor> {
        self.tensor_f32(name).await
    }
    async fn read_quantized(&self, _name: &str) -> Result<Option<QuantMatrix>> {
        Ok(None)
    }
    fn file_of(&self, name: &str) -> PathBuf {
        self.file(name)
    }
    fn reads_rows(&self, name: &str) -> bool {
        self.holds(name)
    }
    async fn read_rows_f32(&self, name: &str, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        self.rows_f32(name, rows).await
    }
}

impl AsyncTensorSource for Pack<BlobBytes> {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.entry_shape(name)
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names()
    }
    async fn read_f32(&self, name: &str) -> Result<HostTensor> {
        self.tensor_f32(name).await
    }
    async fn read_quantized(&self, name: &str) -> Result<Option<QuantMatrix>> {
        self.tensor_quantized(name).await
    }
    fn file_of(&self, _name: &str) -> PathBuf {
        self.file()
    }
}
