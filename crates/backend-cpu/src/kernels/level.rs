//! SIMD levels: what each needs, detecting the best one this CPU has (once), and the
//! `SWITCHYARD_SIMD` override that lowers it.

use std::sync::OnceLock;

/// A set of SIMD kernels. Ordered: within one architecture a higher level needs more CPU
/// features (the Arm levels sort below the x86-64 ones, so `level >= SimdLevel::Avx2` means an
/// x86-64 SIMD level); a level of another architecture is never supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Plain Rust, no explicit SIMD: the specification the other levels are tested against.
    Scalar,
    /// aarch64 NEON (every aarch64 CPU): 8-bit products by `smull` and pairwise adds.
    Neon,
    /// aarch64 NEON with the dot-product extension (`sdot`, ARMv8.2 dotprod): the same
    /// integers as [`SimdLevel::Neon`] (Q4_K / Q6_K the same bits; Q4_0 / Q5_0 / Q8_0 possibly
    /// different f32 rounding).
    NeonDot,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI: for Q4_0 / Q5_0 / Q8_0 the AVX2
    /// kernels with VNNI integer dot products and, for long rows, groups of 16 blocks (possibly
    /// different rounding from [`SimdLevel::Avx2`]); the K-quants and float weights use the
    /// AVX2 kernels (the same bits).
    Avx512Vnni,
}

impl SimdLevel {
    /// Every level of every architecture, lowest first.
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::NeonDot,
        SimdLevel::Avx2,
        SimdLevel::Avx512Vnni,
    ];

    /// Lower-case name, as `SWITCHYARD_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::NeonDot => "neondot",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a name as `SWITCHYARD_SIMD` spells it (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the level belongs to the architecture this was compiled for.
    pub fn is_native(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Neon | SimdLevel::NeonDot => cfg!(target_arch = "aarch64"),
            SimdLevel::Avx2 | SimdLevel::Avx512Vnni => cfg!(target_arch = "x86_64"),
        }
    }

    /// Whether this CPU can run this level.
    pub fn is_supported(self) -> bool {
        self.is_native() && self <= detected_level()
    }

    /// The highest level this CPU supports that is at most `self` (a level of another
    /// architecture lowers to the best level below it here, at least scalar).
    pub fn lowered(self) -> SimdLevel {
        Self::ALL
            .into_iter()
            .rev()
            .find(|&l| l <= self && l.is_supported())
            .unwrap_or(SimdLevel::Scalar)
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest level this CPU supports (detected once).
pub fn detected_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    return SimdLevel::Avx512Vnni;
                }
                return SimdLevel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return SimdLevel::NeonDot;
            }
            return SimdLevel::Neon;
        }
        #[allow(unreachable_code, reason = "reachable only where no SIMD level was detected (aarch64 always returns above)")]
        SimdLevel::Scalar
    })
}

/// The level [`matmul`] and [`dot_f32`] use: [`detected_level`], lowered to `SWITCHYARD_SIMD`
/// when that names a lower level (read once; an unknown name is ignored with a warning).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detected_level();
        match std::env::var("SWITCHYARD_SIMD") {
            Ok(v) if !v.trim().is_empty() => match SimdLevel::parse(&v) {
                Some(l) if l.is_native() => l.lowered(),
                _ => {
                    let names: Vec<&str> = SimdLevel::ALL
                        .into_iter()
                        .filter(|l| l.is_native())
                        .map(SimdLevel::name)
                        .collect();
                    eprintln!(
                        "warning: SWITCHYARD_SIMD={v:?} is not one of {}; ignored",
                        names.join(", ")
                    );
                    best
                }
            },
            _ => best,
        }
    })
}

/// Every level this CPU supports, lowest first.
pub fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

/// The CPU features the kernels use that this CPU has, e.g. `["avx2", "fma", "f16c"]`.
pub fn detected_features() -> Vec<&'static str> {
    #[allow(unused_mut, reason = "pushed to only on x86-64 and aarch64")]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            v.push("fma");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            v.push("f16c");
        }
        for (name, on) in [
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if on {
                v.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push("neon");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            v.push("dotprod");
        }
    }
    v
}
