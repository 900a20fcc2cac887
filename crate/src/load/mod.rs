//! Reading a checkpoint: the Qwen2 `config.json` ([`config`]), safetensors files and their
//! shard index ([`safetensors`]), and the pre-quantized pack ([`pack`]). Every size, offset and
//! file name is checked here, at the boundary, before anything is read or allocated; tensors are
//! handed on one at a time through the [`safetensors::TensorSource`] traits, whatever the bytes
//! come from (files, memory maps, a browser's blobs).
//!
//! May import: the error type and the quantized format. Not the model or anything above it.

pub mod config;
pub mod pack;
pub mod safetensors;
