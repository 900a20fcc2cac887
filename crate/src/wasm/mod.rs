//! The browser API (wasm-bindgen). `pkg/src/contract.md` is its specification; the TypeScript
//! in `pkg/src` wraps it. WebGPU is initialised asynchronously with the adapter's own limits;
//! model files come from a JavaScript callback as `Blob`s (downloads kept in the Cache API, files
//! the user picked, the bundled demo model) and are read piece by piece, one tensor at a time, so
//! a checkpoint never sits whole in wasm memory. Verification streams the protocol's events to a
//! JavaScript callback and runs the model's Python through a JavaScript executor (Pyodide in a
//! Web Worker).
//!
//! Files: [`webgpu`] (the device), [`files`] (the model's files, read through
//! [`crate::load`]'s readers), [`load`] (`Model.load`, `Model.info`), [`verify`] (`Model.verify`),
//! [`bench`] (`benchRandom`), [`grading`] (grading files). May import anything in the crate; nothing
//! in the crate imports it.

use std::cell::RefCell;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Function, Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{AbortSignal, Blob};

use crate::load::config::Qwen2Config;
use crate::error::{Error, Result};
use crate::exec::{CodeExecutor, ExecOutcome};
use crate::generate::CancelFlag;
use crate::model::{LoadOptions, LoadProgress, MAX_BINDING_BYTES, Qwen2Model};
use crate::load::pack::{MANIFEST, Manifest, Pack, ShardInfo};
use crate::prm::grade::{self as grade_rows, GradeResult, GradeRow, InputFormat};
use crate::prm::{self, History, Mode, PromptStyle, RewardMode, Solution, VerifyOptions};
use crate::quant::{QuantFormat, QuantMatrix};
use crate::generate::sampling::Sampling;
use crate::tokenizer::{TemplateChoice, Tokenizer};
use crate::load::safetensors::{AsyncTensorSource, ByteSource, HostTensor, Safetensors};
use crate::engine::LocalEngine;

mod bench;
mod files;
mod grading;
mod load;
mod verify;
mod webgpu;

pub use bench::*;
use files::*;
pub use grading::*;
use load::*;
pub use load::Model;
pub use webgpu::*;

// The module's static constructors (the `inventory` registrations of CubeCL's IR crates), which
// wasm-ld gathers into `__wasm_call_ctors`. A module that never calls it is linked as a "command":
// wasm-ld wraps every export in a call to it (the exports' names end in `.command_export`), so
// every call from JavaScript (the glue's externref-table exports run for each GPU handle) re-ran
// all the registrations, which cost most of a decode step's host time. Calling it once here, at
// start, makes wasm-ld link a library (no wrapping); tests/dawn checks the built module for
// `command_export`. The same fix as dtolnay/inventory's wasm documentation and wit-bindgen's.
unsafe extern "C" {
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    static CTORS: std::sync::Once = std::sync::Once::new();
    // SAFETY: the linker-made constructor function, run once before anything else in the module
    // reads what the constructors register (wasm-bindgen's glue calls `start` at instantiation).
    CTORS.call_once(|| unsafe { __wasm_call_ctors() });
    console_error_panic_hook::set_once();
}

pub(super) fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// A load error for the page. A GPU kernel that failed the start-up self-check
/// ([`crate::backend::gpu::selfcheck`]) is an Error named `GpuKernelError` with the kernel's name in
/// `kernel`, so the page can offer the CPU device.
pub(super) fn load_error(e: Error) -> JsValue {
    let js = js_sys::Error::new(&e.to_string());
    if let Error::GpuKernel { kernel, .. } = &e {
        js.set_name("GpuKernelError");
        let js: &JsValue = &js;
        let _ = js_sys::Reflect::set(js, &JsValue::from_str("kernel"), &JsValue::from_str(kernel));
    }
    js.into()
}

pub(super) fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::NULL)
}

/// Splits a pasted solution into paragraphs on blank lines, as the CLI does.
#[wasm_bindgen(js_name = splitParagraphs)]
pub fn split_paragraphs(text: &str) -> Vec<String> {
    prm::split_paragraphs(text)
}
