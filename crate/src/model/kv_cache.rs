//! The KV cache: keys and values of every layer for the positions seen so far, preallocated and
//! written in place, one length per row; on a GPU it also owns the decode step recorded on its
//! buffers.

use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

use super::linear::{MAX_BINDING_BYTES, tensor_bytes};
use crate::error::{Error, Result};

/// Positions are added to a [`KvCache`] in steps of this many (each growth copies the cache once).
pub const KV_CACHE_STEP: usize = 256;

/// Keys and values of every layer for the positions seen so far, for one or more sequences
/// ("rows"). Storage is preallocated for `capacity` positions per row and written in place as
/// positions are added, so decoding never copies what is already cached; each row has its own
/// length, so the rows of a batch can be at different positions (Maj@N samples that stop, run
/// code or restart at different times).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer, keys and values `[rows * kv_heads * capacity, head_dim]`, ordered by
    /// (row, head, position); f32 or f16 ([`Qwen2Model::kv_dtype`]).
    pub(super) layers: Vec<Option<(Tensor<2>, Tensor<2>)>>,
    pub(super) rows: usize,
    pub(super) capacity: usize,
    pub(super) lens: Vec<usize>,
    /// Per row, `Some((source, n))` when its first `n` positions hold the same keys and values
    /// as row `source`'s (it was copied from there by [`KvCache::copy_prefix`] and neither row
    /// has been written below `n` since). Every row keeps its own copy; this only lets the CPU
    /// attention read a prompt shared by many samples once for all of them.
    pub(super) same_as: Vec<Option<(usize, usize)>>,
    /// The decode step recorded on this cache's buffers, replayed while they stay the same
    /// ([`Qwen2Model::forward_rows`] on a GPU).
    pub(super) graph: GraphSlot,
}

/// A recorded decode step, owned by one cache: a clone of the cache does not share it (its
/// buffers would be another's).
#[derive(Default)]
pub(super) struct GraphSlot(pub(super) Option<DecodeGraph>);

impl Clone for GraphSlot {
    fn clone(&self) -> Self {
        GraphSlot(None)
    }
}

impl std::fmt::Debug for GraphSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "a recorded decode step" } else { "none" })
    }
}

/// One decode step of the whole model on a GPU, recorded once with CubeCL's software graph
/// capture (every launch's pipeline, bindings and bind group resolved at recording) and
/// replayed for each later step: the step's inputs are written into the same buffers, then the
/// recorded launches run again. Valid while the rows, the cache's capacity and its buffers are
/// those it was recorded on ([`GraphKey`]).
pub(super) struct DecodeGraph {
    pub(super) key: GraphKey,
    pub(super) recording: crate::backend::gpu::replay::Recording,
    /// The inputs, `[rows]` i32 ids, `[rows, head_dim]` rotary table, `[rows]` i32 lengths,
    /// `[rows · kv_heads]` i32 cache rows: written before each replay.
    pub(super) ids: Tensor<1, Int>,
    pub(super) rope: Tensor<2>,
    pub(super) lens: Tensor<1, Int>,
    pub(super) writes: Tensor<1, Int>,
    /// The logits `[rows, 1, vocab]` each replay writes.
    pub(super) logits: Tensor<3>,
}

/// What a recorded decode step depends on besides its inputs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GraphKey {
    pub(super) first: usize,
    pub(super) rows: usize,
    pub(super) capacity: usize,
    /// Every layer's key and value buffers (CubeCL's memory ids).
    pub(super) buffers: Vec<String>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held by row 0 (the only row of a single-sequence cache).
    pub fn len(&self) -> usize {
        self.row_len(0)
    }

    /// Whether row 0 holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions held by `row` (0 for a row never written).
    pub fn row_len(&self, row: usize) -> usize {
        self.lens.get(row).copied().unwrap_or(0)
    }

    /// Rows allocated.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Positions allocated per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of keys and values allocated (every layer, row and position of the capacity).
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|(k, v)| tensor_bytes(k) + tensor_bytes(v)).sum::<u64>() as usize
    }

    /// The element type keys and values are stored in (`None` before the first forward pass).
    pub fn dtype(&self) -> Option<DType> {
        self.layers.iter().flatten().next().map(|(k, _)| k.dtype())
    }

    /// Keeps only the first `len` positions of every row (a later forward continues from there).
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.lens {
            *l = (*l).min(len);
        }
    }

    /// Keeps only the first `len` positions of `row`.
    pub fn truncate_row(&mut self, row: usize, len: usize) {
        if let Some(l) = self.lens.get_mut(row) {
            *l = (*l).min(len);
        }
    }

    /// Drops everything, storage included.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Makes row `to` hold the first `len` positions of row `from` (the shared prompt of Maj@N
    /// samples is prefilled once and copied). Fails only when a GPU cache with one more row would
    /// not fit one buffer binding ([`Error::KvCacheTooLarge`]).
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        let len = len.min(self.row_len(from));
        if from == to || len == 0 {
            self.truncate_row(to, len);
            return Ok(());
        }
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device()) else {
            return Ok(());
        };
        let (heads, head_dim) = (self.heads(), self.layers.iter().flatten().next().map_or(0, |(k, _)| k.dims()[1]));
        let dtype = self.dtype().unwrap_or(DType::F32);
        self.reserve(self.layers.len(), to + 1, self.capacity, heads, head_dim, dtype, &device)?;
        let capacity = self.capacity;
        let index = |row: usize| -> Vec<i64> {
            (0..heads).flat_map(|h| (0..len).map(move |p| ((row * heads + h) * capacity + p) as i64)).collect()
        };
        let (src, dst) = (index(from), index(to));
        let n = src.len();
        let src = Tensor::<1, Int>::from_data(TensorData::new(src, [n]), &device);
        let dst = Tensor::<1, Int>::from_data(TensorData::new(dst, [n]), &device);
        for slot in &mut self.layers {
            if let Some((k, v)) = slot.take() {
                let ks = k.clone().select(0, src.clone());
                let vs = v.clone().select(0, src.clone());
                let k = k.select_assign(0, dst.clone(), ks, IndexingUpdateOp::Assign);
                let v = v.select_assign(0, dst.clone(), vs, IndexingUpdateOp::Assign);
                *slot = Some((k, v));
            }
        }
        self.lens[to] = len;
        self.written(to, 0);
        self.same_as[to] = Some((from, len));
        Ok(())
    }

    /// Every layer's key and value buffers, by CubeCL's memory id (a recorded decode step is
    /// valid while they stay the same).
    pub(super) fn buffer_ids(&self) -> Vec<String> {
        use crate::backend::gpu::replay::buffer_id;
        self.layers.iter().flatten().flat_map(|(k, v)| [buffer_id(k), buffer_id(v)]).collect()
    }

    /// Records that `row` is written from position `from` on: its own and every other row's
    /// claim to equal it end there.
    pub(super) fn written(&mut self, row: usize, from: usize) {
        for (r, same) in self.same_as.iter_mut().enumerate() {
            if let Some((source, n)) = *same
                && (r == row || source == row)
            {
                *same = (n.min(from) > 0).then_some((source, n.min(from)));
            }
        }
    }

    /// The row whose memory holds `row`'s first positions too, and how many (at most the row's
    /// length), following copies of copies; `None` if no other row does.
    pub(crate) fn shared_prefix(&self, row: usize) -> Option<(usize, usize)> {
        let (mut source, mut n) = self.same_as.get(row).copied().flatten()?;
        n = n.min(self.row_len(row));
        while let Some((s, m)) = self.same_as.get(source).copied().flatten() {
            (source, n) = (s, n.min(m));
        }
        (n > 0).then_some((source, n))
    }

    /// Key/value heads per row (from the allocated storage).
    pub(super) fn heads(&self) -> usize {
        match self.layers.iter().flatten().next() {
            Some((k, _)) if self.rows * self.capacity > 0 => k.dims()[0] / (self.rows * self.capacity),
            _ => 0,
        }
    }

    /// Grows the storage to at least `rows` rows of `positions` positions of `dtype`
    /// (zero-filled, so the masked-out positions attention multiplies by zero are finite).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reserve(&mut self, layers: usize, rows: usize, positions: usize, heads: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<()> {
        let capacity = positions.div_ceil(KV_CACHE_STEP) * KV_CACHE_STEP;
        // One layer's keys are one tensor: on a GPU it must fit one buffer binding.
        let bytes = rows.max(self.rows) * heads * capacity.max(self.capacity).max(KV_CACHE_STEP) * head_dim * dtype.size();
        if *device != Device::flex() && bytes > MAX_BINDING_BYTES {
            return Err(Error::KvCacheTooLarge {
                rows: rows.max(self.rows),
                positions: capacity.max(self.capacity),
                mib: bytes.div_ceil(1 << 20),
                limit_mib: MAX_BINDING_BYTES >> 20,
            });
        }
        if self.layers.len() != layers || self.heads() != heads && self.rows * self.capacity > 0 || self.dtype().is_some_and(|d| d != dtype) {
            self.clear();
        }
        if self.layers.is_empty() {
            let (rows, capacity) = (rows.max(1), capacity.max(KV_CACHE_STEP));
            let zeros = || Tensor::<2>::zeros([rows * heads * capacity, head_dim], (device, dtype));
            self.layers = (0..layers).map(|_| Some((zeros(), zeros()))).collect();
            self.rows = rows;
            self.capacity = capacity;
            self.lens = vec![0; rows];
            self.same_as = vec![None; rows];
            return Ok(());
        }
        if capacity > self.capacity {
            let (old, extra) = (self.capacity, capacity - self.capacity);
            let r = self.rows * heads;
            let grow = |t: Tensor<2>| {
                let t = t.reshape([r, old, head_dim]);
                Tensor::cat(vec![t, Tensor::<3>::zeros([r, extra, head_dim], (device, dtype))], 1).reshape([r * capacity, head_dim])
            };
            for slot in &mut self.layers {
                if let Some((k, v)) = slot.take() {
                    *slot = Some((grow(k), grow(v)));
                }
            }
            self.capacity = capacity;
        }
        if rows > self.rows {
            let extra = (rows - self.rows) * heads * self.capacity;
            let grow = |t: Tensor<2>| Tensor::cat(vec![t, Tensor::<2>::zeros([extra, head_dim], (device, dtype))], 0);
            for slot in &mut self.layers {
                if let Some((k, v)) = slot.take() {
                    *slot = Some((grow(k), grow(v)));
                }
            }
            self.rows = rows;
            self.lens.resize(rows, 0);
            self.same_as.resize(rows, None);
        }
        Ok(())
    }
}
