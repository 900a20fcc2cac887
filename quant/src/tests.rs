//! Every kernel against the plain reference, on the target it runs on.

use super::*;

fn sample(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|i| ((i as f32 * 0.7123).sin() * 1.3) + if i % 97 == 0 { 4.0 } else { 0.0 }).collect()
}

/// A WebAssembly build with relaxed SIMD runs it (the other tests then check it against
/// the plain reference with every other kernel).
#[cfg(all(target_arch = "wasm32", feature = "relaxed-simd"))]
#[test]
fn relaxed_simd_is_the_webassembly_kernel_where_built() {
    assert_eq!(Kernel::available_kernels(), [Kernel::Scalar, Kernel::Simd128, Kernel::RelaxedSimd]);
    if std::env::var_os("GENPRM_CPU_KERNEL").is_none() {
        assert_eq!(Kernel::best(), Kernel::RelaxedSimd);
    }
}

#[test]
fn round_trip_error_is_within_half_a_step() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (rows, cols) = (5, 96);
        let w = sample(rows, cols);
        let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
        let (d, scales) = (q.dequantize(), q.scales());
        for (g, (a, b)) in w.chunks(GROUP).zip(d.chunks(GROUP)).enumerate() {
            let step = scales[g];
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= step * 0.5 + 1e-6, "{format}: {x} vs {y} (step {step})");
            }
        }
    }
}

#[test]
fn q4_packs_two_levels_per_byte() {
    let mut w = vec![0f32; 32];
    w[0] = 7.0;
    w[1] = -7.0;
    w[9] = 3.0;
    let q = QuantMatrix::quantize(&w, 1, 32, QuantFormat::Q4, "w").unwrap();
    assert_eq!(q.scales(), vec![1.0]);
    let bytes = q.values_bytes();
    assert_eq!(bytes.len(), 16);
    assert_eq!(bytes[0], 15 | 1 << 4);
    assert_eq!(bytes[4], 8 | 11 << 4);
    assert_eq!(q.dequantize()[..2], [7.0, -7.0]);
}

#[test]
fn the_tiled_layout_round_trips_through_the_row_major_one() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        for rows in [1, 7, 8, 9, 21] {
            let cols = 96;
            let q = QuantMatrix::quantize(&noise(rows as u64, rows * cols), rows, cols, format, "w").unwrap();
            let again = QuantMatrix::from_parts(rows, cols, format, &q.values_bytes(), q.scales(), "w").unwrap();
            assert_eq!(again, q, "{format} rows {rows}");
            assert_eq!(q.bytes(), rows.div_ceil(TILE_ROWS) * TILE_ROWS * (cols * if format == QuantFormat::Q4 { 1 } else { 2 } / 2 + cols / GROUP * 4));
        }
    }
}

#[test]
fn appending_rows_equals_quantizing_the_whole() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (rows, cols) = (37, 64);
        let w = noise(9, rows * cols);
        let whole = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
        // Pieces ending inside a tile and on a tile's end.
        for cuts in [vec![13, 24], vec![16, 21], vec![3, 5, 8, 21]] {
            let mut start = 0;
            let mut built: Option<QuantMatrix> = None;
            for len in cuts {
                let piece = QuantMatrix::quantize(&w[start * cols..(start + len) * cols], len, cols, format, "w").unwrap();
                match built.as_mut() {
                    None => built = Some(piece),
                    Some(b) => b.append_rows(piece).unwrap(),
                }
                start += len;
            }
            assert_eq!(built.unwrap(), whole, "{format}");
        }
    }
}

#[test]
fn matmul_is_close_to_the_dequantized_f32_product() {
    // Against plain f32 arithmetic on the dequantized weights: the only difference is the
    // activations' rounding to 8 bits, at most half a step per value.
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (rows, cols, n) = (37, 64, 3);
        let q = QuantMatrix::quantize(&sample(rows, cols), rows, cols, format, "w").unwrap();
        let d = q.dequantize();
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.31).cos()).collect();
        let y = q.matmul(&x, n);
        for i in 0..n {
            for r in 0..rows {
                let expect: f32 = (0..cols).map(|k| x[i * cols + k] * d[r * cols + k]).sum();
                let bound: f32 = (0..cols)
                    .map(|k| {
                        let g = &x[i * cols + k / GROUP * GROUP..][..GROUP];
                        d[r * cols + k].abs() * g.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0 * 0.5
                    })
                    .sum();
                let got = y[i * rows + r];
                assert!((got - expect).abs() <= bound + 1e-4, "{format} [{i},{r}]: {got} vs {expect} (bound {bound})");
            }
        }
    }
}

#[test]
fn group_size_must_divide_the_input_dimension() {
    let e = QuantMatrix::quantize(&[0.0; 40], 1, 40, QuantFormat::Q8, "model.x").unwrap_err().to_string();
    assert!(e.contains("model.x") && e.contains("40"), "{e}");
}

#[test]
fn zero_groups_stay_zero() {
    let q = QuantMatrix::quantize(&[0.0; 64], 2, 32, QuantFormat::Q4, "w").unwrap();
    assert!(q.dequantize().iter().all(|&v| v == 0.0));
}

/// A deterministic pseudo-random stream in [-1, 1).
fn noise(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The plain reference for `matmul`: activations quantized per group as documented (natural
/// order), integer dot products, summed in f64. Returns (y, bound on the f32 rounding).
fn reference(q: &QuantMatrix, x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols, gpr) = (q.rows, q.cols, q.cols / GROUP);
    let mut w = vec![0i8; cols];
    let (mut y, mut mag) = (vec![0f64; n * rows], vec![0f64; n * rows]);
    for r in 0..rows {
        // The integer levels of row r (q4: −8..=7), unscaled.
        q.row_levels(r, &mut w);
        for i in 0..n {
            for g in 0..gpr {
                let xg = &x[i * cols + g * GROUP..i * cols + (g + 1) * GROUP];
                let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
                let xs = amax / 127.0;
                let dot: i64 = if xs > 0.0 {
                    xg.iter().zip(&w[g * GROUP..]).map(|(&v, &l)| (v / xs).round().clamp(-127.0, 127.0) as i64 * l as i64).sum()
                } else {
                    0
                };
                let s = f64::from(q.scale(r, g)) * f64::from(xs);
                y[i * rows + r] += s * dot as f64;
                let abs: i64 = xg.iter().zip(&w[g * GROUP..]).map(|(_, &l)| 127 * (l as i64).abs()).sum();
                mag[i * rows + r] += s.abs() * abs as f64;
            }
        }
    }
    (y, mag)
}

/// Runs every kernel this CPU has on `x` and checks each against the reference (and so
/// against each other): equal up to f32 rounding of the scaled sums.
fn check_all_kernels(q: &QuantMatrix, x: &[f32], n: usize, what: &str) {
    let (expect, mag) = reference(q, x, n);
    for kernel in Kernel::available_kernels() {
        let y = q.matmul_with(kernel, x, n);
        for (k, ((&got, &want), &m)) in y.iter().zip(&expect).zip(&mag).enumerate() {
            let tol = 1e-5 * m + 1e-30;
            assert!(
                (f64::from(got) - want).abs() <= tol,
                "{what}, {} n={n}, {kernel:?}: y[{}, {}] = {got} vs {want} (tolerance {tol})",
                q.format,
                k / q.rows,
                k % q.rows
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_integer_reference() {
    let kernels = Kernel::available_kernels();
    assert!(kernels.contains(&Kernel::Scalar));
    // Each target's own kernel is tested on it (scripts/test runs these tests on AArch64
    // under QEMU and on WebAssembly under Node).
    #[cfg(target_arch = "aarch64")]
    assert!(kernels.contains(&Kernel::Neon));
    #[cfg(target_arch = "wasm32")]
    assert!(kernels.contains(&Kernel::Simd128));
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        for (rows, cols) in [(1, 32), (37, 96), (64, 256), (33, 1536)] {
            let mut w = noise(rows as u64 * 7 + cols as u64, rows * cols);
            // An all-zero weight group and an outlier.
            w[..GROUP].fill(0.0);
            w[rows * cols / 2] = 9.0;
            let q = QuantMatrix::quantize(&w, rows, cols, format, "w").unwrap();
            for n in (1..=8).chain([13]) {
                let mut x = noise(n as u64 * 31 + cols as u64, n * cols);
                // An all-zero activation group and outliers.
                x[(n - 1) * cols..(n - 1) * cols + GROUP].fill(0.0);
                x[cols / 3] = -25.0;
                check_all_kernels(&q, &x, n, &format!("[{rows}, {cols}]"));
            }
        }
    }
}

#[test]
fn kernels_handle_extreme_levels_and_magnitudes() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (rows, cols) = (5, 64);
        // Levels at the ends of the range: q8 −128 (only possible in stored packs) and 127;
        // q4 nibbles 0 (−8) and 15 (+7); rows 2..5 mix them. Scales and activations as large
        // and as small as f32 holds their products.
        let (lo, hi) = match format {
            QuantFormat::Q8 => (0x80u8, 0x7Fu8),
            QuantFormat::Q4 => (0x00, 0xFF),
        };
        let per_row = if format == QuantFormat::Q4 { cols / 2 } else { cols };
        let mut bytes = Vec::new();
        for r in 0..rows {
            bytes.extend((0..per_row).map(|k| match r {
                0 => lo,
                1 => hi,
                2 => if k % 2 == 0 { lo } else { hi },
                _ => if format == QuantFormat::Q4 { 0xF0 } else if k % 3 == 0 { lo } else { hi },
            }));
        }
        let scales = vec![1.0f32, 1e4, 3e-20, 0.5, 2.0, 1e-3, 7.0, 1.0, 1.0, 1.0][..rows * cols / GROUP].to_vec();
        let q = QuantMatrix::from_parts(rows, cols, format, &bytes, scales, "w").unwrap();
        for n in [1, 2, 5] {
            let mut x = vec![0f32; n * cols];
            for (i, row) in x.chunks_exact_mut(cols).enumerate() {
                for (k, v) in row.iter_mut().enumerate() {
                    // Full-scale activations of both signs, huge and tiny magnitudes.
                    *v = match (i + k / GROUP) % 4 {
                        0 => -1.0,
                        1 => if k % 2 == 0 { 1e30 } else { -1e30 },
                        2 => 1e-30 * (k as f32 - 31.5),
                        _ => 1.0,
                    };
                }
            }
            check_all_kernels(&q, &x, n, "extremes");
        }
    }
}

#[test]
fn the_sign_trick_does_not_saturate() {
    // |−128| · 127, twice per 16-bit pair, is the largest pair sum `vpmaddubsw` sees.
    let q = QuantMatrix::from_parts(1, 32, QuantFormat::Q8, &[0x80; 32], vec![1.0], "w").unwrap();
    for kernel in Kernel::available_kernels() {
        for sign in [1.0f32, -1.0] {
            let y = q.matmul_with(kernel, &[sign; 32], 1);
            assert_eq!(y, vec![-sign * 128.0 * 32.0], "{kernel:?}");
        }
    }
}

#[test]
fn zero_and_non_finite_activations() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (rows, cols) = (9, 64);
        let q = QuantMatrix::quantize(&noise(3, rows * cols), rows, cols, format, "w").unwrap();
        for kernel in Kernel::available_kernels() {
            let mut x = vec![0f32; 3 * cols];
            x[cols + 5] = f32::NAN;
            x[2 * cols + 40] = f32::INFINITY;
            let y = q.matmul_with(kernel, &x, 3);
            assert!(y[..rows].iter().all(|&v| v == 0.0), "{format} {kernel:?}: zero row");
            assert!(y[rows..].iter().all(|v| v.is_nan()), "{format} {kernel:?}: non-finite rows give NaN");
        }
    }
}

#[test]
fn activation_levels_are_within_half_a_step() {
    for format in [QuantFormat::Q8, QuantFormat::Q4] {
        let (n, cols) = (2, 96);
        let mut x = noise(11, n * cols);
        // The last group of the second row is zero.
        x[n * cols - GROUP..].fill(0.0);
        let a = QuantActs::new(&x, n, cols, format);
        assert_eq!((a.levels.len(), a.scales.len(), a.corrections.len()), (192, 6, 6));
        for (g, (xg, lg)) in x.chunks_exact(GROUP).zip(a.levels.chunks_exact(GROUP)).enumerate() {
            let s = a.scales[g];
            for (&v, &l) in xg.iter().zip(lg) {
                assert!((-127..=127).contains(&l));
                assert!((v - f32::from(l) * s).abs() <= s * 0.5 * (1.0 + 1e-5), "{format} group {g}: {v} vs {l}·{s}");
            }
            assert_eq!(a.corrections[g], -format.bias() * lg.iter().map(|&l| i32::from(l)).sum::<i32>());
        }
        assert_eq!((a.scales[5], a.corrections[5]), (0.0, 0));
    }
}

/// Kernel speed at the 1.5B model's shapes (a measurement, not a test):
/// `cargo test -p genprm-quant kernel_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run it with --ignored --nocapture"]
fn kernel_speed() {
    for format in [QuantFormat::Q4, QuantFormat::Q8] {
        for (rows, cols) in [(8960, 1536), (1536, 8960), (1536, 1536)] {
            let q = QuantMatrix::quantize(&noise(3, rows * cols), rows, cols, format, "w").unwrap();
            for n in [1, 2, 4, 8] {
                let x = noise(5, n * cols);
                let mut best = f64::MAX;
                for _ in 0..25 {
                    let t = std::time::Instant::now();
                    std::hint::black_box(q.matmul(&x, n));
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let macs = (rows * cols * n) as f64;
                println!("{format} [{rows}x{cols}] n={n}: {:.3} ms, {:.1} GMAC/s, {:.2} ms/row", best * 1e3, macs / best / 1e9, best * 1e3 / n as f64);
            }
        }
    }
}
