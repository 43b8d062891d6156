//! The CUDA sources, embedded at build time, grouped in modules as NVRTC compiles them:
//! each module's text is `kernels/common.cuh` followed by its `.cu` file. The kernel
//! names listed per module are the ones the wrappers launch (the emulator registers
//! exactly these, so a listed name without a kernel fails to build there).

/// Helpers prepended to every module.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One compilation unit of kernels.
#[derive(Debug)]
pub struct KernelModule {
    /// File stem under `kernels/`.
    pub name: &'static str,
    /// The `.cu` text (without [`COMMON`]).
    pub source: &'static str,
    /// `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

impl KernelModule {
    /// The text to compile: [`COMMON`], then the module.
    pub fn full_source(&self) -> String {
        format!(
            "{COMMON}\n// ---- kernels/{}.cu ----\n{}",
            self.name, self.source
        )
    }
}

/// Every kernel module.
pub const MODULES: &[KernelModule] = &[
    KernelModule {
        name: "quant",
        source: include_str!("../../../kernels/quant.cu"),
        kernels: &[
            "qmatvec_q4_0",
            "qmatvec_q4_1",
            "qmatvec_q5_0",
            "qmatvec_q5_1",
            "qmatvec_q8_0",
            "qmatvec_q2_k",
            "qmatvec_q3_k",
            "qmatvec_q4_k",
            "qmatvec_q5_k",
            "qmatvec_q6_k",
            "qmatvec_f16",
            "qmatvec_bf16",
            "qmatmul_q4_0",
            "qmatmul_q4_1",
            "qmatmul_q5_0",
            "qmatmul_q5_1",
            "qmatmul_q8_0",
            "qmatmul_q2_k",
            "qmatmul_q3_k",
            "qmatmul_q4_k",
            "qmatmul_q5_k",
            "qmatmul_q6_k",
            "qmatmul_f16",
            "qmatmul_bf16",
            "dequant_rows_q4_0",
            "dequant_rows_q4_1",
            "dequant_rows_q5_0",
            "dequant_rows_q5_1",
            "dequant_rows_q8_0",
            "dequant_rows_q2_k",
            "dequant_rows_q3_k",
            "dequant_rows_q4_k",
            "dequant_rows_q5_k",
            "dequant_rows_q6_k",
            "dequant_rows_f16",
            "dequant_rows_bf16",
        ],
    },
    KernelModule {
        name: "norm",
        source: include_str!("../../../kernels/norm.cu"),
        kernels: &["rms_norm_residual", "rms_norm_heads"],
    },
    KernelModule {
        name: "rotary",
        source: include_str!("../../../kernels/rotary.cu"),
        kernels: &["rotary"],
    },
    KernelModule {
        name: "activation",
        source: include_str!("../../../kernels/activation.cu"),
        kernels: &["silu_gate_up", "gelu_gate_up"],
    },
    KernelModule {
        name: "elementwise",
        source: include_str!("../../../kernels/elementwise.cu"),
        kernels: &["add_bias", "scale_values", "softcap_values"],
    },
    KernelModule {
        name: "kv_cache",
        source: include_str!("../../../kernels/kv_cache.cu"),
        kernels: &["kv_write"],
    },
    KernelModule {
        name: "attention",
        source: include_str!("../../../kernels/attention.cu"),
        kernels: &[
            "paged_attention",
            "paged_attention_partial",
            "paged_attention_combine",
        ],
    },
    KernelModule {
        name: "gather",
        source: include_str!("../../../kernels/gather.cu"),
        kernels: &["gather_rows"],
    },
    KernelModule {
        name: "encoder",
        source: include_str!("../../../kernels/encoder.cu"),
        kernels: &[
            "gemm_f16w",
            "embed_layer_norm",
            "layer_norm_residual",
            "encoder_attention",
            "pool_rows",
        ],
    },
    KernelModule {
        name: "sampling",
        source: include_str!("../../../kernels/sampling.cu"),
        kernels: &["argmax_rows"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_unique_and_mentioned_in_their_module() {
        let mut seen = std::collections::HashSet::new();
        for m in MODULES {
            for k in m.kernels {
                assert!(seen.insert(*k), "{k} listed twice");
                // Quantized kernels are stamped out by QUANT_KERNELS(format, ...).
                let stem = ["qmatvec_", "qmatmul_", "dequant_rows_"]
                    .iter()
                    .find_map(|p| k.strip_prefix(p))
                    .map(|f| format!("QUANT_KERNELS({f},"));
                assert!(
                    m.source.contains(&format!("void {k}("))
                        || stem.is_some_and(|s| m.source.contains(&s)),
                    "{k} not defined in kernels/{}.cu",
                    m.name
                );
            }
        }
    }
}
