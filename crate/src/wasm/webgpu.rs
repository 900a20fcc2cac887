//! WebGPU, initialised once with the adapter's own limits, and `gpuInfo()`.

use super::*;

/// What `gpuInfo()` reports about the WebGPU adapter.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GpuInfo {
    pub(super) backend: String,
    pub(super) adapter: String,
    pub(super) features: Vec<String>,
    pub(super) max_buffer_size: u64,
    pub(super) max_storage_buffer_binding_size: u64,
    pub(super) shader_f16: bool,
}

thread_local! {
    static GPU: RefCell<Option<(Device, Rc<GpuInfo>)>> = const { RefCell::new(None) };
}

pub(super) fn has_webgpu() -> bool {
    let global = js_sys::global();
    let navigator = js_sys::Reflect::get(&global, &"navigator".into()).unwrap_or(JsValue::UNDEFINED);
    !navigator.is_undefined() && js_sys::Reflect::get(&navigator, &"gpu".into()).is_ok_and(|g| !g.is_undefined())
}

pub(super) async fn gpu() -> Result<(Device, Rc<GpuInfo>)> {
    if let Some(d) = GPU.with_borrow(|g| g.clone()) {
        return Ok(d);
    }
    if !has_webgpu() {
        return Err(Error::Device(
            "this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome or Edge, or Safari/Firefox with WebGPU enabled".into(),
        ));
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| Error::Device(format!("no usable WebGPU adapter: {e}")))?;
    let limits = setup.adapter.limits();
    let features = setup.adapter.features();
    let info = setup.adapter.get_info();
    let gpu_info = Rc::new(GpuInfo {
        backend: format!("{:?}", setup.backend),
        adapter: [info.vendor.to_string(), info.name.clone(), info.driver.clone()]
            .into_iter()
            .filter(|s| !s.is_empty() && s != "0")
            .collect::<Vec<_>>()
            .join(" "),
        features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: u64::from(limits.max_storage_buffer_binding_size),
        shader_f16: features.contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16),
    });
    if gpu_info.max_storage_buffer_binding_size < MAX_BINDING_BYTES as u64 || gpu_info.max_buffer_size < MAX_BINDING_BYTES as u64 {
        return Err(Error::Device(format!(
            "the WebGPU adapter's limits are too small: storage bindings of {} MiB and buffers of {} MiB, but the model needs {} MiB",
            gpu_info.max_storage_buffer_binding_size >> 20,
            gpu_info.max_buffer_size >> 20,
            MAX_BINDING_BYTES >> 20
        )));
    }
    GPU.with_borrow_mut(|g| *g = Some((device.clone(), gpu_info.clone())));
    Ok((device, gpu_info))
}

/// Initialises WebGPU (once) with the adapter's limits and reports the adapter.
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> std::result::Result<JsValue, JsValue> {
    let (_, info) = gpu().await.map_err(js_error)?;
    Ok(to_js(&*info))
}
