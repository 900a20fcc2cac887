//! The Qwen2 decoder in burn: embedding, `num_hidden_layers` × (RMSNorm, grouped-query attention
//! with rotary embeddings and q/k/v biases, RMSNorm, SwiGLU MLP), final RMSNorm and the language
//! model head (its own matrix or the tied embedding). One implementation serves every device; the
//! [`KvCache`] makes decoding incremental.
//!
//! Files: [`linear`] (weights and the one linear layer), [`norm`] (RMSNorm), [`kv_cache`] (the
//! KV cache and the recorded decode step), [`load`] (a model from a tensor source), and here the
//! decoder's forward pass. The model reaches devices only through [`crate::backend`]; it may not
//! import the generation loop, the engines or the protocol above it.

mod gpu_kernels;
mod kv_cache;
mod linear;
mod load;
mod norm;


use burn::tensor::activation::softmax;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};

pub use gpu_kernels::{check_model, kernels_for};
pub use kv_cache::{KV_CACHE_STEP, KvCache};
use kv_cache::{DecodeGraph, GraphKey};
pub use linear::{Epilogue, Linear, MAX_BINDING_BYTES, PREFILL_ROWS, Weight};
use linear::tensor_bytes;
pub use load::{LOAD_PIECE_BYTES, LoadOptions, LoadProgress, expected_tensors, tensor_names};
pub use norm::RmsNorm;
use crate::backend::gpu::replay;
use crate::error::{Error, Result};
use crate::load::config::Qwen2Config;

/// Where one forward pass writes and reads: rows `first..first + past.len()` of the cache, each
/// starting at its own position, all padded to `seq` new positions.
struct Step {
    first: usize,
    /// Positions each row held before this pass.
    past: Vec<usize>,
    seq: usize,
    capacity: usize,
    /// Per row, another cache row holding its first positions too ([`KvCache::shared_prefix`]).
    shared: Vec<Option<(usize, usize)>>,
    /// Decoding on a GPU: each row's length after this pass, on the device for the fused
    /// attention kernel (uploaded once for all layers).
    gpu_lens: Option<Tensor<1, Int>>,
}

/// The rotary angles of one pass's new positions, on the device.
enum Rope {
    /// Cosines and sines `[rows, 1, seq, head_dim]`, halves repeated, for burn's ops (CPU device).
    Tables(Tensor<4>, Tensor<4>),
    /// `[rows · seq, head_dim]`: each position's `head_dim/2` cosines, then its sines, for the
    /// GPU kernel ([`crate::backend::gpu::layer::rotary_and_cache_write`]).
    Packed(Tensor<2>),
}

struct Attention {
    /// The q, k and v projections as one layer: outputs `[q (heads · d) | k (kv heads · d) |
    /// v (kv heads · d)]`.
    qkv: Linear,
    o: Linear,
}

struct Mlp {
    /// The gate and up projections as one layer: outputs `[gate (intermediate) | up
    /// (intermediate)]`, combined by [`Epilogue::SwiGlu`].
    gate_up: Linear,
    down: Linear,
}

struct Layer {
    input_norm: RmsNorm,
    attention: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// Which positions the forward pass returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position of each sequence (generation).
    Last,
    /// Every input position (scoring, tests).
    All,
}

/// A Qwen2 causal language model on one device.
pub struct Qwen2Model {
    config: Qwen2Config,
    device: Device,
    embed: Weight,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embedding.
    lm_head: Option<Linear>,
    /// The element type of the KV cache ([`LoadOptions::kv_f16`]).
    kv_dtype: DType,
    /// How decode attends on a GPU ([`LoadOptions::gpu_attention`]).
    decode_attention: crate::backend::DecodeAttention,
    /// How decode steps reach a GPU ([`LoadOptions::gpu_decode`]); replaying turns itself off
    /// for good when a recording fails.
    gpu_decode: crate::backend::GpuDecode,
    replay_failed: std::sync::atomic::AtomicBool,
    /// Decode steps replayed from a recording, and recordings made (benchmarks, tests).
    replays: std::sync::atomic::AtomicUsize,
    recordings: std::sync::atomic::AtomicUsize,
}

impl Qwen2Model {
    /// Whether the model runs in f16 mode ([`LoadOptions::gpu_f16`]: f16 prefill products and
    /// KV cache): quantized weights on a GPU with f16 arithmetic, unless turned off.
    pub fn gpu_f16(&self) -> bool {
        self.prefill_precision() == Some(crate::backend::PrefillPrecision::F16)
    }

    /// The element type of the KV cache's keys and values ([`LoadOptions::kv_f16`]): by default
    /// f16 in f16 mode ([`LoadOptions::gpu_f16`]), else f32.
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// The arithmetic of prefill's products on a GPU with quantized weights (`None` on the CPU
    /// device and for f32 weights, whose products are always f32).
    pub fn prefill_precision(&self) -> Option<crate::backend::gpu::quant::PrefillPrecision> {
        match &self.layers.first()?.mlp.gate_up.weight {
            Weight::GpuQuant(g) => Some(g.precision()),
            _ => None,
        }
    }

    /// The kernel of decode's products on a GPU with quantized weights (`None` on the CPU
    /// device and for f32 weights).
    pub fn matvec_kernel(&self) -> Option<crate::backend::gpu::quant::MatvecKernel> {
        match &self.layers.first()?.mlp.gate_up.weight {
            Weight::GpuQuant(g) => Some(g.matvec()),
            _ => None,
        }
    }

    /// The packed GPU matrices by role (`embed`, then the first layer's `qkv`, `o`, `gate_up`,
    /// `down`, then `lm_head` unless tied): what the start-up self-check
    /// ([`crate::backend::gpu::selfcheck`]) runs follows from their formats and kernels.
    pub(crate) fn gpu_quant_roles(&self) -> Vec<(&'static str, &crate::backend::gpu::quant::GpuQuant)> {
        let mut all = vec![("embed", &self.embed)];
        if let Some(l) = self.layers.first() {
            all.extend([("qkv", &l.attention.qkv.weight), ("o", &l.attention.o.weight), ("gate_up", &l.mlp.gate_up.weight), ("down", &l.mlp.down.weight)]);
        }
        all.extend(self.lm_head.as_ref().map(|h| ("lm_head", &h.weight)));
        all.into_iter()
            .filter_map(|(role, w)| match w {
                Weight::GpuQuant(g) => Some((role, g.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Bytes of parameters one decode step reads, whatever the batch: every layer's matrices,
    /// biases and norms, the final norm and the lm_head (the tied embedding, read whole as the
    /// head); of the embedding as a lookup table only a row per sequence, left out. Decode can
    /// be no faster than the device's memory bandwidth divided by this.
    pub fn decode_weight_bytes(&self) -> u64 {
        let norm = |n: &RmsNorm| tensor_bytes(&n.weight);
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let (a, m) = (&l.attention, &l.mlp);
                [&a.qkv, &a.o, &m.gate_up, &m.down].iter().map(|x| x.bytes()).sum::<u64>() + norm(&l.input_norm) + norm(&l.post_norm)
            })
            .sum();
        let head = match &self.lm_head {
            Some(h) => h.bytes(),
            None => self.embed.bytes(),
        };
        layers + norm(&self.norm) + head
    }

    /// The model's configuration.
    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rows of the embedding (and columns of the logits).
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Runs `batch` sequences of equal length whose ids are concatenated in `tokens`, continuing
    /// from what rows `0..batch` of `cache` hold (the same number of positions each) and
    /// appending to them. Returns logits `[batch, positions, vocab]` for the positions `which`
    /// selects.
    pub fn forward(&self, tokens: &[u32], batch: usize, cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        if batch == 0 || tokens.is_empty() || tokens.len() % batch != 0 {
            return Err(Error::InvalidArgument {
                name: "tokens",
                message: format!("{} ids cannot form {batch} sequences of equal, non-zero length", tokens.len()),
            });
        }
        let past = cache.row_len(0);
        if (1..batch).any(|r| cache.row_len(r) != past) {
            return Err(Error::InvalidArgument {
                name: "cache",
                message: "the rows of an equal-length batch hold different numbers of positions".into(),
            });
        }
        let seq = tokens.len() / batch;
        let rows: Vec<&[u32]> = tokens.chunks(seq).collect();
        self.forward_rows(0, &rows, cache, which)
    }

    /// Runs one pass over rows `first..first + inputs.len()` of `cache`, each row continuing
    /// from its own position with its own new ids (`inputs[i]`; an empty one leaves the row as
    /// it is). Rows are padded to the longest input; the padding is never cached as positions.
    /// Returns logits `[rows, 1, vocab]` at each row's last new id for [`LogitsFor::Last`]
    /// (meaningless for an empty input), or `[rows, longest, vocab]` for [`LogitsFor::All`].
    pub fn forward_rows(&self, first: usize, inputs: &[&[u32]], cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        // On the CPU the pass runs on a worker of the thread pool, so the parallel kernels inside
        // it start without waking a sleeping thread for each matrix product.
        #[cfg(not(target_arch = "wasm32"))]
        if self.device == Device::flex() {
            return rayon::scope(|_| self.forward_rows_in_place(first, inputs, cache, which));
        }
        self.forward_rows_in_place(first, inputs, cache, which)
    }

    /// [`Qwen2Model::forward_rows`] on the calling thread.
    fn forward_rows_in_place(&self, first: usize, inputs: &[&[u32]], cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<3>> {
        let c = &self.config;
        let n = inputs.len();
        let seq = inputs.iter().map(|t| t.len()).max().unwrap_or(0);
        if n == 0 || seq == 0 {
            return Err(Error::InvalidArgument { name: "tokens", message: "nothing to run".into() });
        }
        let mut position = 0;
        for (r, t) in inputs.iter().enumerate() {
            let total = cache.row_len(first + r) + t.len();
            if total > c.max_position_embeddings {
                return Err(Error::ContextOverflow { tokens: total, max: c.max_position_embeddings });
            }
            for &id in *t {
                if id as usize >= c.vocab_size {
                    return Err(Error::TokenOutOfRange { id, position, vocab_size: c.vocab_size });
                }
                position += 1;
            }
        }
        let past: Vec<usize> = (0..n).map(|r| cache.row_len(first + r)).collect();
        let needed = past.iter().map(|p| p + seq).max().unwrap_or(seq);
        cache.reserve(self.layers.len(), first + n, needed, c.kv_heads(), c.head_dim(), self.kv_dtype(), &self.device)?;
        for (r, &p) in past.iter().enumerate() {
            cache.written(first + r, p);
        }
        // Decoding on the CPU, rows whose first positions another row holds too attend over
        // that row's memory for them (read once for all).
        let shared: Vec<Option<(usize, usize)>> = (0..n).map(|r| cache.shared_prefix(first + r)).collect();
        #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))]
        let mut step = Step {
            first,
            past,
            seq,
            capacity: cache.capacity,
            shared,
            gpu_lens: None,
        };

        if which == LogitsFor::Last
            && let Some(logits) = self.decode_recorded(&step, inputs, cache)?
        {
            return Ok(logits);
        }

        // Padding repeats each row's last id (or id 0); its keys land past the row's length.
        let padded: Vec<u32> = inputs.iter().flat_map(|t| (0..seq).map(move |i| t.get(i).or(t.last()).copied().unwrap_or(0))).collect();
        let x = self.embed.gather(&padded, &self.device); // [n * seq, hidden]
        let rope = self.rope(&step);
        // Decoding on a GPU: one fused kernel per layer attends without a mask.
        let fused = self.fused_decode_attention(&step);
        if fused && self.device != Device::flex() {
            let lens: Vec<usize> = step.past.iter().map(|p| p + 1).collect();
            step.gpu_lens = Some(crate::backend::gpu::attention::row_lens(&lens, &self.device));
        }
        let mask = (!fused).then(|| self.attention_mask(&step));
        let writes = self.cache_writes(&step, c.kv_heads());
        let x = self.layers_forward(x, &step, &rope, mask.as_ref(), &writes, cache);
        for (r, t) in inputs.iter().enumerate() {
            cache.lens[first + r] += t.len();
        }

        let x = match which {
            LogitsFor::All => x,
            LogitsFor::Last => {
                let last: Vec<i64> = inputs.iter().enumerate().map(|(r, t)| (r * seq + t.len().max(1) - 1) as i64).collect();
                x.select(0, Tensor::<1, Int>::from_data(TensorData::new(last, [n]), &self.device))
            }
        };
        let rows = x.dims()[0];
        Ok(self.head(x).reshape([n, rows / n, c.vocab_size]))
    }

    /// Every decoder layer over the pass's hidden states `x` (`[rows · seq, hidden]`), each
    /// writing its keys and values into `cache`.
    fn layers_forward(&self, mut x: Tensor<2>, step: &Step, rope: &Rope, mask: Option<&Tensor<5>>, writes: &Tensor<1, Int>, cache: &mut KvCache) -> Tensor<2> {
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let qkv = layer.attention.qkv.forward_normed(x.clone(), &layer.input_norm, Epilogue::Plain);
            let heads = self.attention(qkv, step, rope, mask, writes, slot);
            x = layer.attention.o.forward_then(heads, Epilogue::Add(x));
            let m = &layer.mlp;
            let h = m.gate_up.forward_normed(x.clone(), &layer.post_norm, Epilogue::SwiGlu);
            x = m.down.forward_then(h, Epilogue::Add(x));
        }
        x
    }

    /// The final norm and the output head: logits `[rows, vocab]`.
    fn head(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.forward_normed(x, &self.norm, Epilogue::Plain),
            None => self.embed.matmul_t_normed(x, &self.norm),
        }
    }

    /// The rotary angles of each row's new positions, computed in f32 exactly as transformers
    /// does (inverse frequencies, outer product, then cos/sin), in the form the device's
    /// attention reads them.
    fn rope(&self, step: &Step) -> Rope {
        let d = self.config.head_dim();
        let n = step.past.len();
        if self.device != Device::flex() {
            return Rope::Packed(Tensor::from_data(TensorData::new(self.rope_table(step), [n * step.seq, d]), &self.device));
        }
        let mut cos = Vec::with_capacity(n * step.seq * d);
        let mut sin = Vec::with_capacity(n * step.seq * d);
        for a in self.rope_angles(step) {
            for _ in 0..2 {
                cos.extend(a.iter().map(|v| v.cos()));
                sin.extend(a.iter().map(|v| v.sin()));
            }
        }
        let shape = [n, 1, step.seq, d];
        Rope::Tables(Tensor::from_data(TensorData::new(cos, shape), &self.device), Tensor::from_data(TensorData::new(sin, shape), &self.device))
    }

    /// How many decode steps were replayed from a recording, and how many recordings were made
    /// ([`LoadOptions::gpu_decode`]).
    pub fn decode_replays(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.replays.load(Relaxed), self.recordings.load(Relaxed))
    }

    /// A decode step on a GPU through a recording ([`DecodeGraph`]): replayed when `cache`
    /// holds one for these rows and buffers, else recorded (after one ordinary run of the same
    /// launches, which sizes CubeCL's pools so the recording allocates nothing) and replayed.
    /// `None`: this step launches as usual (the CPU, f32 weights, burn's attention, several
    /// new positions or an empty row, replaying turned off, or a recording that failed).
    fn decode_recorded(&self, step: &Step, inputs: &[&[u32]], cache: &mut KvCache) -> Result<Option<Tensor<3>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let Weight::GpuQuant(embed) = &self.embed else { return Ok(None) };
        if self.device == Device::flex()
            || self.gpu_decode != crate::backend::GpuDecode::Replay
            || self.replay_failed.load(Relaxed)
            || !self.fused_decode_attention(step)
            || inputs.iter().any(|t| t.len() != 1)
        {
            return Ok(None);
        }
        let (n, d, kvh) = (inputs.len(), self.config.head_dim(), self.config.kv_heads());
        let ids: Vec<i32> = inputs.iter().map(|t| t[0] as i32).collect();
        let table = self.rope_table(step);
        let lens: Vec<i32> = step.past.iter().map(|&p| (p + 1) as i32).collect();
        let writes = self.cache_write_rows(step, kvh);
        let writes: Vec<i32> = writes.into_iter().map(|i| i32::try_from(i).expect("a KV cache of fewer than 2³¹ rows")).collect();
        let key = GraphKey { first: step.first, rows: n, capacity: step.capacity, buffers: cache.buffer_ids() };
        let finish = |cache: &mut KvCache| {
            for r in 0..n {
                cache.lens[step.first + r] += 1;
            }
        };
        if let Some(g) = cache.graph.0.as_ref().filter(|g| g.key == key) {
            replay::write_ints(&g.ids, &ids)?;
            replay::write_ints(&g.lens, &lens)?;
            replay::write_ints(&g.writes, &writes)?;
            replay::write_floats(&g.rope, &table)?;
            // SAFETY: the recording's buffers are alive and unshared: the inputs and logits are
            // held here, the weights by the model, the cache's buffers by `cache` (the key
            // checked they are the recorded ones), the rest pinned by the recording; one thread
            // decodes.
            unsafe { g.recording.replay() }?;
            self.replays.fetch_add(1, Relaxed);
            let logits = g.logits.clone();
            finish(cache);
            return Ok(Some(logits));
        }
        // A new recording: the old one (and the pool pages it pins) goes first.
        cache.graph.0 = None;
        let dev = &self.device;
        let ids_t = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), dev);
        let rope_t = Tensor::<2>::from_data(TensorData::new(table, [n, d]), dev);
        let lens_t = Tensor::<1, Int>::from_data(TensorData::new(lens, [n]), dev);
        let writes_t = Tensor::<1, Int>::from_data(TensorData::new(writes, [n * kvh]), dev);
        let give_up = || {
            self.replay_failed.store(true, Relaxed);
            Ok(None)
        };
        if !replay::prepare(&rope_t) {
            return give_up();
        }
        // The same launches, run once for real: they write this step's keys and values (which
        // the recording writes again, identically) and leave the pools as the recording needs.
        let warm = Step { first: step.first, past: step.past.clone(), seq: 1, capacity: step.capacity, shared: step.shared.clone(), gpu_lens: Some(lens_t.clone()) };
        drop(self.decode_launches(embed, &ids_t, &rope_t, &warm, &writes_t, cache));
        let before = cache.buffer_ids();
        let Some((recording, logits)) = replay::record(&rope_t, || self.decode_launches(embed, &ids_t, &rope_t, &warm, &writes_t, cache)) else {
            return give_up();
        };
        if cache.buffer_ids() != before {
            // The recording copied the cache instead of writing it in place: replays would write
            // a stale copy. Launch as usual from now on.
            return give_up();
        }
        // SAFETY: as for a replay above; nothing else holds these buffers yet.
        unsafe { recording.replay() }?;
        self.recordings.fetch_add(1, Relaxed);
        let key = GraphKey { first: step.first, rows: n, capacity: step.capacity, buffers: before };
        cache.graph.0 = Some(DecodeGraph { key, recording, ids: ids_t, rope: rope_t, lens: lens_t, writes: writes_t, logits: logits.clone() });
        finish(cache);
        Ok(Some(logits))
    }

    /// A decode step's launches from inputs on the device (one new position per row, fused
    /// attention, the embedding looked up from packed weights): the logits `[rows, 1, vocab]`.
    fn decode_launches(
        &self,
        embed: &crate::backend::gpu::quant::GpuQuant,
        ids: &Tensor<1, Int>,
        rope: &Tensor<2>,
        step: &Step,
        writes: &Tensor<1, Int>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        let n = step.past.len();
        let x = self.layers_forward(embed.gather_device(ids), step, &Rope::Packed(rope.clone()), None, writes, cache);
        self.head(x).reshape([n, 1, self.config.vocab_size])
    }

    /// The GPU kernel's rotary table of this pass's new positions ([`Rope::Packed`]): each
    /// position's `head_dim/2` cosines, then its sines, computed as [`Qwen2Model::rope`] does.
    fn rope_table(&self, step: &Step) -> Vec<f32> {
        self.rope_angles(step).flat_map(|a| a.iter().map(|v| v.cos()).chain(a.iter().map(|v| v.sin())).collect::<Vec<f32>>()).collect()
    }

    /// Each new position's `head_dim/2` rotary angles, row by row (position × inverse
    /// frequency, in f32 as transformers computes them).
    fn rope_angles<'s>(&self, step: &'s Step) -> impl Iterator<Item = Vec<f32>> + 's {
        let d = self.config.head_dim();
        let base = self.config.rope_theta as f32;
        let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32)).collect();
        step.past.iter().flat_map(|&past| past..past + step.seq).map(move |p| inv.iter().map(|f| p as f32 * f).collect())
    }

    /// Whether this pass attends with a fused decode kernel, without a mask: one new position
    /// per row, on the CPU ([`crate::backend::cpu::attention`]) or on a GPU unless the model was loaded
    /// with [`DecodeAttention::Ops`](crate::backend::DecodeAttention::Ops) ([`crate::backend::gpu::attention`]).
    fn fused_decode_attention(&self, step: &Step) -> bool {
        if step.seq != 1 {
            return false;
        }
        if self.device == Device::flex() {
            return true;
        }
        self.decode_attention == crate::backend::DecodeAttention::Fused
    }

    /// How decode attends on a GPU ([`LoadOptions::gpu_attention`]).
    pub fn decode_attention(&self) -> crate::backend::DecodeAttention {
        self.decode_attention
    }

    /// Additive mask `[rows, 1, 1, seq, capacity]`: new position `i` of a row sees the row's
    /// cached positions and its own new positions up to `i`; −∞ everywhere else (other rows'
    /// padding, unused capacity).
    fn attention_mask(&self, step: &Step) -> Tensor<5> {
        let (seq, cap) = (step.seq, step.capacity);
        let mut m = vec![f32::NEG_INFINITY; step.past.len() * seq * cap];
        for (r, &past) in step.past.iter().enumerate() {
            for i in 0..seq {
                let row = &mut m[(r * seq + i) * cap..][..cap];
                row[..=past + i].fill(0.0);
            }
        }
        Tensor::from_data(TensorData::new(m, [step.past.len(), 1, 1, seq, cap]), &self.device)
    }

    /// Cache rows the new keys and values go to, in the order of `[rows, kv_heads, seq, d]`
    /// (i64 for burn's `select_assign` on the CPU device, i32 for the GPU kernel).
    fn cache_writes(&self, step: &Step, heads: usize) -> Tensor<1, Int> {
        let idx = self.cache_write_rows(step, heads);
        let n = idx.len();
        if self.device == Device::flex() {
            return Tensor::from_data(TensorData::new(idx, [n]), &self.device);
        }
        // The GPU kernel that writes the cache reads 32-bit indices.
        let idx: Vec<i32> = idx.into_iter().map(|i| i32::try_from(i).expect("a KV cache of fewer than 2³¹ rows")).collect();
        Tensor::from_data(TensorData::new(idx, [n]), &self.device)
    }

    /// The cache rows of [`Qwen2Model::cache_writes`], on the host.
    fn cache_write_rows(&self, step: &Step, heads: usize) -> Vec<i64> {
        let mut idx = Vec::with_capacity(step.past.len() * heads * step.seq);
        for (r, &past) in step.past.iter().enumerate() {
            for h in 0..heads {
                let base = ((step.first + r) * heads + h) * step.capacity;
                idx.extend((0..step.seq).map(|i| (base + past + i) as i64));
            }
        }
        idx
    }

    /// Self-attention of one layer up to the output projection, from the q/k/v projection's
    /// output (`[rows · seq, (heads + 2 · kv_heads) · d]`): the new queries and keys rotated,
    /// the keys and values written to the cache, and each head's attention over its row's
    /// cache, `[rows · seq, heads · d]`.
    fn attention(
        &self,
        qkv: Tensor<2>,
        step: &Step,
        rope: &Rope,
        mask: Option<&Tensor<5>>,
        writes: &Tensor<1, Int>,
        slot: &mut Option<(Tensor<2>, Tensor<2>)>,
    ) -> Tensor<2> {
        let c = &self.config;
        let (nh, kvh, d) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let (n, seq, cap) = (step.past.len(), step.seq, step.capacity);
        let groups = nh / kvh;
        let (ck, cv) = slot.take().expect("the cache was reserved for every layer");
        // Rotate the new queries and keys, and write the new keys and values in place; then
        // attend over the rows' whole storage.
        let (q, ck, cv) = match rope {
            Rope::Tables(cos, sin) => {
                let (m, qd, kd) = (n * seq, nh * d, kvh * d);
                let q = qkv.clone().slice([0..m, 0..qd]);
                let k = qkv.clone().slice([0..m, qd..qd + kd]);
                let v = qkv.slice([0..m, qd + kd..qd + 2 * kd]);
                let heads = |t: Tensor<2>, h: usize| t.reshape([n, seq, h, d]).swap_dims(1, 2); // [n, h, seq, d]
                let q = rotate(heads(q, nh), cos, sin);
                let k = rotate(heads(k, kvh), cos, sin);
                let v = heads(v, kvh);
                // An f16 cache stores the new keys and values rounded to f16.
                let (k, v) = (k.reshape([n * kvh * seq, d]).cast(ck.dtype()), v.reshape([n * kvh * seq, d]).cast(cv.dtype()));
                let ck = ck.select_assign(0, writes.clone(), k, IndexingUpdateOp::Assign);
                let cv = cv.select_assign(0, writes.clone(), v, IndexingUpdateOp::Assign);
                (q, ck, cv)
            }
            Rope::Packed(table) => {
                // One launch; an f16 cache (f16 mode) is written in f16.
                let shape = crate::backend::gpu::layer::NewPositions { rows: n, seq, heads: nh, kv_heads: kvh, head_dim: d };
                let (q, ck, cv) = crate::backend::gpu::layer::rotary_and_cache_write(qkv, table.clone(), writes, (ck, cv), shape);
                (q.reshape([n, seq, nh, d]).swap_dims(1, 2), ck, cv)
            }
        };
        let Some(mask) = mask else {
            // A fused decode kernel (one new position per row).
            if self.device == Device::flex() {
                let lens: Vec<usize> = step.past.iter().map(|p| p + 1).collect();
                let (out, ck, cv) = crate::backend::cpu::attention::decode_attention(q, ck, cv, step.first, &lens, &step.shared, kvh, cap);
                *slot = Some((ck, cv));
                return out;
            }
            let lens = step.gpu_lens.as_ref().expect("a fused GPU decode pass has its row lengths on the device");
            let out = crate::backend::gpu::attention::decode_attention(q.reshape([n, nh, d]), &ck, &cv, step.first, lens, kvh, cap);
            *slot = Some((ck, cv));
            return out.reshape([n, nh * d]);
        };
        let span = step.first * kvh * cap..(step.first + n) * kvh * cap;
        let keys = ck.clone().slice([span.clone(), 0..d]).reshape([n, kvh, cap, d]);
        let values = cv.clone().slice([span, 0..d]).reshape([n, kvh, cap, d]);
        *slot = Some((ck, cv));

        if self.device == Device::flex() {
            // Prefill on the CPU: burn's fused attention (grouped heads read their shared
            // key/value head in place, the mask is broadcast over heads, keys are not transposed).
            // An f16 cache is read in f32.
            let (keys, values) = (keys.cast(DType::F32), values.cast(DType::F32));
            let bias = mask.clone().reshape([n, 1, seq, cap]);
            let options = AttentionModuleOptions { scale: Some(1.0 / (d as f64).sqrt()), softcap: None, is_causal: false };
            let out = burn::tensor::module::attention(q, keys, values, None, Some(bias), options); // [n, nh, seq, d]
            return out.swap_dims(1, 2).reshape([n * seq, nh * d]);
        }
        // Grouped-query attention without copying keys: the `groups` query heads that share a
        // key/value head are stacked along the query axis, rows ordered (group, position).
        // An f16 cache is read in f32.
        let (keys, values) = (keys.cast(DType::F32), values.cast(DType::F32));
        let q = q.reshape([n, kvh, groups * seq, d]);
        let scores = q.matmul(keys.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()); // [n, kvh, g*seq, cap]
        let scores = (scores.reshape([n, kvh, groups, seq, cap]) + mask.clone()).reshape([n, kvh, groups * seq, cap]);
        let out = softmax(scores, 3).matmul(values); // [n, kvh, g*seq, d]
        out.reshape([n, nh, seq, d]).swap_dims(1, 2).reshape([n * seq, nh * d])
    }
}

/// Applies rotary embeddings to `[batch, heads, seq, d]` with `[batch, 1, seq, d]` tables
/// (the "rotate half" convention of Qwen2).
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, n, s, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..n, 0..s, 0..half]);
    let x2 = x.clone().slice([0..b, 0..n, 0..s, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantFormat;

    #[test]
    fn cache_bytes_count_every_layer_row_and_position_allocated() {
        for (dtype, size) in [(DType::F32, 4), (DType::F16, 2)] {
            let mut c = KvCache::new();
            assert_eq!(c.bytes(), 0);
            // 3 layers, 4 rows of 2 heads of 8 dimensions; 16 positions take one step (256).
            c.reserve(3, 4, 16, 2, 8, dtype, &Device::flex()).unwrap();
            assert_eq!(c.bytes(), 3 * 2 * 4 * 2 * KV_CACHE_STEP * 8 * size);
            // One more row, and capacity for 300 positions (two steps).
            c.reserve(3, 5, 300, 2, 8, dtype, &Device::flex()).unwrap();
            assert_eq!(c.bytes(), 3 * 2 * 5 * 2 * 2 * KV_CACHE_STEP * 8 * size);
        }
    }

    #[test]
    fn copied_prefixes_are_tracked_until_either_row_is_rewritten() {
        let mut c = KvCache::new();
        c.reserve(1, 4, 16, 1, 2, DType::F32, &Device::flex()).unwrap();
        c.lens[0] = 10;
        c.copy_prefix(0, 1, 8).unwrap();
        assert_eq!(c.shared_prefix(1), Some((0, 8)));
        // A copy of a copy leads to the first row.
        c.copy_prefix(1, 2, 6).unwrap();
        assert_eq!(c.shared_prefix(2), Some((0, 6)));
        // The source written from position 4 on: both claims end there.
        c.written(0, 4);
        assert_eq!((c.shared_prefix(1), c.shared_prefix(2)), (Some((0, 4)), Some((0, 4))));
        // Never beyond a row's own length.
        c.truncate_row(2, 3);
        assert_eq!(c.shared_prefix(2), Some((0, 3)));
        // Row 0 overwritten by a copy from row 3: row 1 no longer equals it, row 2 still equals
        // row 1.
        c.lens[3] = 5;
        c.copy_prefix(3, 0, 5).unwrap();
        assert_eq!((c.shared_prefix(0), c.shared_prefix(1), c.shared_prefix(2)), (Some((3, 5)), None, Some((1, 3))));
        // A row's own writes end its claim too.
        c.written(0, 0);
        assert_eq!(c.shared_prefix(0), None);
    }
    use crate::load::safetensors::BytesCheckpoint;

    fn fixture(name: &str) -> (Qwen2Config, BytesCheckpoint) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name);
        let config = Qwen2Config::from_file(&dir.join("config.json")).unwrap();
        let mut source = BytesCheckpoint::new();
        source.add_file(dir.join("model.safetensors"), std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
        (config, source)
    }

    fn logits(m: &Qwen2Model) -> Vec<f32> {
        let ids: Vec<u32> = (0..7).map(|i| (i * 37 % m.vocab_size()) as u32).collect();
        let t = m.forward(&ids, 1, &mut KvCache::new(), LogitsFor::All).unwrap();
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// Large matrices read a block of rows at a time give the same model as whole reads, in f32
    /// and quantized (each row's groups are quantized alike whatever the block).
    #[test]
    fn loading_in_row_pieces_matches_whole_tensors() {
        let (config, source) = fixture("tiny-genprm");
        let device = Device::flex();
        for quant in [None, Some(QuantFormat::Q4)] {
            let options = LoadOptions { quant, ..Default::default() };
            let whole =
                crate::load::safetensors::ready(Qwen2Model::load_in_pieces(config.clone(), &source, &device, options, |_| {}, usize::MAX)).unwrap();
            // 256 bytes: every matrix is split into blocks of a row or two.
            let pieces = crate::load::safetensors::ready(Qwen2Model::load_in_pieces(config.clone(), &source, &device, options, |_| {}, 256)).unwrap();
            if quant.is_none() {
                assert!(matches!(&pieces.embed, Weight::Float(blocks) if blocks.len() > 1), "the embedding was not split");
            }
            let (a, b) = (logits(&whole), logits(&pieces));
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(max < 1e-5, "{quant:?}: max difference {max}");
        }
    }
}
