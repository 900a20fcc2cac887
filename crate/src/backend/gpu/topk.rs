//! The largest logits of each row, selected on the GPU, so that a decode step reads back a few
//! values and ids instead of the whole 151,936-entry row (600 KB per row and token).
//!
//! Three launches: 1024 lanes per row each keep the top `k` of a stripe of the vocabulary
//! (coalesced reads), then 32 lanes each merge 32 of those lists, then one lane merges the last
//! 32. Order is by value, then by lower id among equal values: the first entry is exactly what
//! [`crate::generate::sampling::argmax`] picks. Ids travel as f32 (exact below 2^24). A row holding NaN
//! reports id −1 first; an entry with an id past the vocabulary means the row had fewer than `k`
//! values above the kernel's floor. The host then reads the whole row ([`Candidates::parse`]).

use burn::backend::Cube;
use burn::tensor::{DType, Shape, Tensor};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::{CubeCount, CubeDim};

use crate::backend::gpu::layer::cube;

/// Lanes of the first pass per row.
const SCAN_LANES: u32 = 1024;
/// Lists merged by each lane of the merge passes (1024 → 32 → 1).
const GROUP: u32 = 32;
/// Units per cube of the first pass.
const SCAN_UNITS: u32 = 256;

/// The id marking a row that held NaN.
const NAN_ID: f32 = -1.0;

mod kernels {
    use cubecl::prelude::*;

    /// Below every logit a model computes: an empty slot's value.
    const FLOOR: f32 = -3.0e38;
    /// Past every vocabulary: an empty slot's id.
    const NO_ID: f32 = 1.0e30;

    /// Whether (value `a`, id `ai`) ranks before (value `b`, id `bi`).
    #[cube]
    fn before(a: f32, ai: f32, b: f32, bi: f32) -> bool {
        a > b || (a == b && ai < bi)
    }

    /// Inserts (`v`, `id`) into the sorted list (`vals`, `ids`) of `k` entries if it ranks
    /// before the last: it takes the last place and moves up by swaps.
    #[cube]
    fn insert(vals: &mut Array<f32>, ids: &mut Array<f32>, v: f32, id: f32, #[comptime] k: u32) {
        let last = comptime!(k - 1) as usize;
        if before(v, id, vals[last], ids[last]) {
            vals[last] = v;
            ids[last] = id;
            #[unroll]
            for t in 0..comptime!(k - 1) {
                let j = comptime!(k - 1 - t) as usize;
                let i = comptime!(k - 2 - t) as usize;
                if before(vals[j], ids[j], vals[i], ids[i]) {
                    let (tv, ti) = (vals[i], ids[i]);
                    vals[i] = vals[j];
                    ids[i] = ids[j];
                    vals[j] = tv;
                    ids[j] = ti;
                }
            }
        }
    }

    /// An empty list of `k` entries.
    #[cube]
    fn empty(vals: &mut Array<f32>, ids: &mut Array<f32>, #[comptime] k: u32) {
        #[unroll]
        for j in 0..k {
            vals[j as usize] = FLOOR;
            ids[j as usize] = NO_ID;
        }
    }

    /// Writes a list to `out` at list number `list` (`[lists, 2k]`: values, then ids), marking
    /// NaN by id −1 in the first place.
    #[cube]
    fn write(out: &mut Tensor<f32>, list: u32, vals: &Array<f32>, ids: &Array<f32>, nan: bool, #[comptime] k: u32) {
        let base = list * comptime!(2 * k);
        #[unroll]
        for j in 0..k {
            out[(base + j) as usize] = vals[j as usize];
            out[(base + k + j) as usize] = ids[j as usize];
        }
        if nan {
            out[(base + k) as usize] = -1.0f32;
        }
    }

    /// First pass: lane `l` of row `r` (cube `(x, r)`, unit `u`: `l = x · units + u`) keeps the
    /// top `k` of `logits[r, l], logits[r, l + lanes], …` (`[rows, vocab]`).
    #[cube(launch)]
    pub fn topk_scan_kernel(logits: &Tensor<f32>, out: &mut Tensor<f32>, vocab: u32, #[comptime] k: u32, #[comptime] lanes: u32) {
        let row = CUBE_POS_Y;
        let lane = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
        let mut vals = Array::<f32>::new(k as usize);
        let mut ids = Array::<f32>::new(k as usize);
        empty(&mut vals, &mut ids, k);
        let mut nan = false;
        let mut c = lane;
        while c < vocab {
            let v = logits[(row * vocab + c) as usize];
            if v.is_nan() {
                nan = true;
            } else {
                insert(&mut vals, &mut ids, v, f32::cast_from(c), k);
            }
            c += lanes;
        }
        write(out, row * lanes + lane, &vals, &ids, nan, k);
    }

    /// A merge pass: lane `l` of row `r` merges lists `l · group .. (l + 1) · group` of the
    /// row's `lists_in` lists in `input` into list `l` of its `lists_in / group` in `out`.
    #[cube(launch)]
    pub fn topk_merge_kernel(input: &Tensor<f32>, out: &mut Tensor<f32>, lists_in: u32, #[comptime] k: u32, #[comptime] group: u32) {
        let row = CUBE_POS_Y;
        let lane = UNIT_POS_X;
        let lanes = lists_in / group;
        let mut vals = Array::<f32>::new(k as usize);
        let mut ids = Array::<f32>::new(k as usize);
        empty(&mut vals, &mut ids, k);
        let mut nan = false;
        for g in 0..group {
            let base = (row * lists_in + lane * group + g) * comptime!(2 * k);
            if input[(base + k) as usize] < 0.0f32 {
                nan = true;
            }
            for j in 0..k {
                insert(&mut vals, &mut ids, input[(base + j) as usize], input[(base + k + j) as usize], k);
            }
        }
        write(out, row * lanes + lane, &vals, &ids, nan, k);
    }
}

use kernels::{topk_merge_kernel, topk_scan_kernel};

/// The top `k` entries of each row of `logits` (`[rows, vocab]`, on a GPU): `[rows, 2k]`, the
/// values in order (largest first, lower id first among equal values), then their ids as f32.
/// See the module's notes for rows with NaN or with fewer than `k` real values.
pub fn top_k(logits: Tensor<2>, k: usize) -> Tensor<2> {
    let [rows, vocab] = logits.dims();
    let k = k.max(1) as u32;
    let x = cube(logits);
    let (client, device) = (x.client.clone(), x.device.clone());
    let lists = |n: u32| {
        empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([rows * n as usize, 2 * k as usize]), DType::F32)
    };
    let rows_u = rows as u32;
    let scanned = lists(SCAN_LANES);
    topk_scan_kernel::launch(
        &client,
        CubeCount::Static(SCAN_LANES / SCAN_UNITS, rows_u, 1),
        CubeDim::new_1d(SCAN_UNITS),
        x.into_tensor_arg(),
        scanned.clone().into_tensor_arg(),
        vocab as u32,
        k,
        SCAN_LANES,
    );
    let merged = lists(SCAN_LANES / GROUP);
    topk_merge_kernel::launch(
        &client,
        CubeCount::Static(1, rows_u, 1),
        CubeDim::new_1d(SCAN_LANES / GROUP),
        scanned.into_tensor_arg(),
        merged.clone().into_tensor_arg(),
        SCAN_LANES,
        k,
        GROUP,
    );
    let top = lists(1);
    topk_merge_kernel::launch(
        &client,
        CubeCount::Static(1, rows_u, 1),
        CubeDim::new_1d(1),
        merged.into_tensor_arg(),
        top.clone().into_tensor_arg(),
        SCAN_LANES / GROUP,
        k,
        GROUP,
    );
    Tensor::from_primitive::<Cube>(top)
}

/// One row's top entries as read back: ids and values in increasing id order (the order in
/// which the full row holds them, so the host's sampler sums and breaks ties exactly as it does
/// over the full row).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Token ids, increasing.
    pub ids: Vec<u32>,
    /// Their logits.
    pub values: Vec<f32>,
}

impl Candidates {
    /// Parses one row of [`top_k`]'s output (`2k` numbers). `None` when the row must be read
    /// whole: it held NaN, or had fewer than `k` values above the kernel's floor.
    pub fn parse(row: &[f32], vocab: usize) -> Option<Self> {
        let k = row.len() / 2;
        let (vals, ids) = row.split_at(k);
        if ids.first() == Some(&NAN_ID) {
            return None;
        }
        let mut pairs = Vec::with_capacity(k);
        for (&v, &id) in vals.iter().zip(ids) {
            if !(id >= 0.0 && (id as usize) < vocab && id.fract() == 0.0) {
                return None;
            }
            pairs.push((id as u32, v));
        }
        // Largest first as selected; the sampler wants them in id order.
        pairs.sort_by_key(|&(id, _)| id);
        Some(Candidates { ids: pairs.iter().map(|p| p.0).collect(), values: pairs.iter().map(|p| p.1).collect() })
    }
}
