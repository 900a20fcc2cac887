//! Recording a decode step's launches once and replaying them: CubeCL's software graph capture
//! resolves every launch's pipeline, bindings and bind group at recording; a replay only
//! re-encodes the dispatches. The model decides what a step launches; this holds the CubeCL
//! side: preparing a device, capturing, writing new inputs into recorded buffers, replaying.

use burn::backend::Cube;
use burn::tensor::{Int, Tensor};
use burn_cubecl::tensor::CubeTensor;

use crate::backend::gpu::layer::cube;
use crate::error::{Error, Result};

/// A recorded sequence of launches.
pub struct Recording(cubecl::client::Graph);

impl Recording {
    /// Runs the recorded launches again.
    ///
    /// # Safety
    /// Every buffer the recording uses must still be alive and hold what the launches expect
    /// (CubeCL does not track them across a replay).
    pub unsafe fn replay(&self) -> Result<()> {
        // SAFETY: the caller keeps the recording's buffers alive and unshared.
        unsafe { self.0.replay() }.map_err(|e| Error::Device(format!("replaying the recorded decode step: {e:?}")))
    }
}

/// Readies `on`'s device for recording; `false` where it cannot record.
pub fn prepare(on: &Tensor<2>) -> bool {
    cube(on.clone()).client.graph_prepare().is_ok()
}

/// Records the launches `launch` makes on `on`'s device (without running them); `None` where
/// the device cannot record.
pub fn record<T>(on: &Tensor<2>, launch: impl FnOnce() -> T) -> Option<(Recording, T)> {
    let client = cube(on.clone()).client;
    if client.start_capture().is_err() {
        let _ = client.stop_capture();
        return None;
    }
    let out = launch();
    client.stop_capture().ok().map(|g| (Recording(g), out))
}

/// Writes `values` into an i32 tensor's buffer in place (a recorded input).
pub fn write_ints(t: &Tensor<1, Int>, values: &[i32]) -> Result<()> {
    write(t.clone().try_into_primitive::<Cube>(), bytemuck::cast_slice(values))
}

/// Writes `values` into an f32 tensor's buffer in place (a recorded input).
pub fn write_floats(t: &Tensor<2>, values: &[f32]) -> Result<()> {
    write(t.clone().try_into_primitive::<Cube>(), bytemuck::cast_slice(values))
}

/// Writes `bytes` into a GPU tensor's buffer in place.
fn write<E>(t: std::result::Result<CubeTensor, E>, bytes: &[u8]) -> Result<()> {
    let t = t.map_err(|_| Error::Device("a recorded step's input is not a GPU tensor".into()))?;
    t.client.write(&t.handle, burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()));
    Ok(())
}

/// The identity of a tensor's buffer (CubeCL's memory id; empty off the GPU): a recording is
/// valid while the buffers it wrote stay the same.
pub fn buffer_id(t: &Tensor<2>) -> String {
    match t.clone().try_into_primitive::<Cube>() {
        Ok(c) => format!("{:?}", c.handle.memory.descriptor().id),
        Err(_) => String::new(),
    }
}
