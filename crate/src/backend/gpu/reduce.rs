//! Reductions across the units of one cube, in shared memory (no subgroup instructions), for the
//! CubeCL kernels. Every unit of the cube must call them (they hold barriers).

use cubecl::prelude::*;

/// Leaves the sum of `partial[0..units]` in `partial[0]` (`units` a power of two).
#[cube]
pub(crate) fn tree_sum(partial: &mut Shared<[f32]>, #[comptime] units: u32) {
    tree_reduce(partial, units, false);
}

/// Leaves the largest of `partial[0..units]` in `partial[0]` (`units` a power of two).
#[cube]
pub(crate) fn tree_max(partial: &mut Shared<[f32]>, #[comptime] units: u32) {
    tree_reduce(partial, units, true);
}

/// Halves the live part of `partial` each round, combining pairs by sum or by max.
#[cube]
fn tree_reduce(partial: &mut Shared<[f32]>, #[comptime] units: u32, #[comptime] max: bool) {
    sync_cube();
    #[unroll]
    for level_no in 0..comptime!(units.trailing_zeros()) {
        let stride = comptime!(units >> (level_no + 1));
        if UNIT_POS < stride {
            let other = partial[(UNIT_POS + stride) as usize];
            if comptime!(max) {
                if other > partial[UNIT_POS as usize] {
                    partial[UNIT_POS as usize] = other;
                }
            } else {
                partial[UNIT_POS as usize] += other;
            }
        }
        sync_cube();
    }
}
