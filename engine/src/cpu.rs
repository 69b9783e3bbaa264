//! The CPU this build needs, checked when a program starts.
//!
//! On x86-64 the workspace is compiled for x86-64-v3 (`.cargo/config.toml`: AVX2, BMI1/2,
//! FMA, LZCNT, MOVBE and what they imply), so the compiler may use those instructions
//! anywhere in our code: BMI's shifts make the engine's matching ~3% faster and AVX2 its
//! state root ~6% (docs/perf.md, "Built for x86-64-v3"). A CPU without one of them would stop
//! on an illegal instruction. Each binary calls [`exit_if_unsupported`] first, so it stops
//! with a message naming what is missing instead. A build with other flags (a `RUSTFLAGS`
//! variable replaces the config's) checks only what that build was compiled to use.

// The check runs before anything else in `main`, on a CPU that may lack what the rest of the
// build uses, so it moves no value wider than 8 bytes (a `Vec` or `String` moved with a VEX
// `vmovups` stopped it under `qemu-x86_64 -cpu Nehalem`) and shifts only by constants
// (a variable shift is BMI2's `shlx`): the features are bits of a `u32`, in `NAMES` order.

/// What x86-64-v3 adds to the x86-64 baseline; bit `i` of a feature mask is `NAMES[i]`.
const NAMES: [&str; 13] = [
    "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "fma", "f16c",
    "lzcnt", "movbe",
];

/// The mask of `flags`, which are in `NAMES` order.
fn mask(flags: [bool; 13]) -> u32 {
    let mut mask = 0;
    for &flag in flags.iter().rev() {
        mask = mask << 1 | u32::from(flag);
    }
    mask
}

/// The features this build was compiled to use.
fn used_by_build() -> u32 {
    mask([
        cfg!(target_feature = "sse3"),
        cfg!(target_feature = "ssse3"),
        cfg!(target_feature = "sse4.1"),
        cfg!(target_feature = "sse4.2"),
        cfg!(target_feature = "popcnt"),
        cfg!(target_feature = "avx"),
        cfg!(target_feature = "avx2"),
        cfg!(target_feature = "bmi1"),
        cfg!(target_feature = "bmi2"),
        cfg!(target_feature = "fma"),
        cfg!(target_feature = "f16c"),
        cfg!(target_feature = "lzcnt"),
        cfg!(target_feature = "movbe"),
    ])
}

/// The features this CPU has, read from CPUID itself (none off x86-64):
/// `is_x86_feature_detected!` answers `true` without asking the CPU for any feature the
/// build was compiled to use.
fn present_on_cpu() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        let leaf1_ecx = __cpuid(1).ecx;
        let leaf7_ebx = match __cpuid(0).eax >= 7 {
            true => __cpuid_count(7, 0).ebx,
            false => 0,
        };
        let extended1_ecx = match __cpuid(0x8000_0000).eax >= 0x8000_0001 {
            true => __cpuid(0x8000_0001).ecx,
            false => 0,
        };
        let has = |register: u32, bit: u32| register & bit != 0;
        // AVX also needs the OS to save its registers (OSXSAVE), as the CPUID rule says.
        let avx = has(leaf1_ecx, 1 << 28) && has(leaf1_ecx, 1 << 27);
        mask([
            has(leaf1_ecx, 1),
            has(leaf1_ecx, 1 << 9),
            has(leaf1_ecx, 1 << 19),
            has(leaf1_ecx, 1 << 20),
            has(leaf1_ecx, 1 << 23),
            avx,
            avx && has(leaf7_ebx, 1 << 5),
            has(leaf7_ebx, 1 << 3),
            has(leaf7_ebx, 1 << 8),
            avx && has(leaf1_ecx, 1 << 12),
            avx && has(leaf1_ecx, 1 << 29),
            has(extended1_ecx, 1 << 5),
            has(leaf1_ecx, 1 << 22),
        ])
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The features this build was compiled to use that this CPU lacks (none on a CPU that
/// runs it).
pub fn missing_features() -> Vec<&'static str> {
    names(used_by_build() & !present_on_cpu())
}

/// The names of the features in `mask`.
fn names(mask: u32) -> Vec<&'static str> {
    (0..NAMES.len())
        .filter(|&i| mask & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect()
}

/// Writes what `program` says when the CPU lacks the features of `missing` (non-empty) to
/// `out`, piece by piece (see the note above [`NAMES`]).
fn write_refusal(out: &mut dyn std::io::Write, program: &str, missing: u32) {
    let _ = out.write_all(program.as_bytes());
    let _ = out.write_all(b": this CPU lacks");
    let mut rest = missing;
    for name in &NAMES {
        if rest & 1 != 0 {
            let _ = out.write_all(b" ");
            let _ = out.write_all(name.as_bytes());
        }
        rest >>= 1;
    }
    let _ = out.write_all(
        b", which this build was compiled to use (x86-64-v3, .cargo/config.toml). Rebuild \
          with RUSTFLAGS='--cfg curve25519_dalek_backend=\"avx512\"' (README, \"CPU\").\n",
    );
}

/// Stops the process (exit code 1) with a message on stderr if this CPU lacks a feature the
/// build was compiled to use. `program` names the binary in the message. Call it first in
/// `main`, before code the compiler may have built with those instructions.
pub fn exit_if_unsupported(program: &str) {
    let missing = used_by_build() & !present_on_cpu();
    if missing != 0 {
        write_refusal(&mut std::io::stderr().lock(), program, missing);
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_what_the_build_uses_and_the_cpu_lacks() {
        let built = mask([true; 13]);
        let present = built & !(1 << 8) & !(1 << 12);
        assert_eq!(names(built & !present), ["bmi2", "movbe"]);
        let mut message = Vec::new();
        write_refusal(&mut message, "nexus", built & !present);
        let message = String::from_utf8(message).unwrap();
        assert!(message.starts_with("nexus: this CPU lacks bmi2 movbe, which "));
        assert!(message.ends_with("(README, \"CPU\").\n"), "{message}");
        assert_eq!(mask([false; 13]), 0);
        assert_eq!(mask([true; 13]), (1 << 13) - 1);
    }

    /// The machine that runs the tests runs this build, so it lacks nothing the build uses;
    /// where the workspace's config applies, the build uses all of x86-64-v3's features;
    /// and CPUID agrees with the standard library's detection where that asks the CPU.
    #[test]
    fn the_build_machine_has_what_the_build_uses() {
        assert_eq!(missing_features(), Vec::<&str>::new());
        if cfg!(target_feature = "avx2") {
            assert_eq!(used_by_build(), (1 << 13) - 1);
        }
        #[cfg(target_arch = "x86_64")]
        if !cfg!(target_feature = "avx512f") {
            let detected = std::arch::is_x86_feature_detected!("avx512f");
            assert!(present_on_cpu() & (1 << 6) != 0 || !detected);
        }
    }
}
