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

/// The CPUID words the checks read (zero where a leaf is absent, and off x86-64).
struct Cpuid {
    leaf1_ecx: u32,
    leaf7_ebx: u32,
    extended1_ecx: u32,
}

impl Cpuid {
    /// Asks this CPU.
    fn read() -> Cpuid {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            Cpuid {
                leaf1_ecx: __cpuid(1).ecx,
                leaf7_ebx: match __cpuid(0).eax >= 7 {
                    true => __cpuid_count(7, 0).ebx,
                    false => 0,
                },
                extended1_ecx: match __cpuid(0x8000_0000).eax >= 0x8000_0001 {
                    true => __cpuid(0x8000_0001).ecx,
                    false => 0,
                },
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpuid {
            leaf1_ecx: 0,
            leaf7_ebx: 0,
            extended1_ecx: 0,
        }
    }

    /// AVX, with the OS saving its registers (OSXSAVE) as the CPUID rule asks; AVX2, FMA and
    /// F16C need it too.
    fn avx(&self) -> bool {
        self.leaf1_ecx & (1 << 28) != 0 && self.leaf1_ecx & (1 << 27) != 0
    }
}

/// The mask of `flags`, which are in `NAMES` order.
fn mask(flags: &[bool]) -> u32 {
    let mut mask = 0;
    for &flag in flags.iter().rev() {
        mask = mask << 1 | u32::from(flag);
    }
    mask
}

/// Declares each feature once, as `name => whether the CPU has it` (an expression of `$cpu`,
/// the [`Cpuid`] read), and from that list `NAMES`, [`used_by_build`] and [`present_on_cpu`].
macro_rules! features {
    ($cpu:ident; $($name:tt => $present:expr),* $(,)?) => {
        /// What x86-64-v3 adds to the x86-64 baseline; bit `i` of a feature mask is
        /// `NAMES[i]`.
        const NAMES: &[&str] = &[$($name),*];

        /// The features this build was compiled to use.
        fn used_by_build() -> u32 {
            mask(&[$(cfg!(target_feature = $name)),*])
        }

        /// The features this CPU has, from CPUID itself: `is_x86_feature_detected!` answers
        /// `true` without asking the CPU for any feature the build was compiled to use.
        fn present_on_cpu() -> u32 {
            let $cpu = Cpuid::read();
            mask(&[$($present),*])
        }
    };
}

features! {cpu;
    "sse3" => cpu.leaf1_ecx & 1 != 0,
    "ssse3" => cpu.leaf1_ecx & (1 << 9) != 0,
    "sse4.1" => cpu.leaf1_ecx & (1 << 19) != 0,
    "sse4.2" => cpu.leaf1_ecx & (1 << 20) != 0,
    "popcnt" => cpu.leaf1_ecx & (1 << 23) != 0,
    "avx" => cpu.avx(),
    "avx2" => cpu.avx() && cpu.leaf7_ebx & (1 << 5) != 0,
    "bmi1" => cpu.leaf7_ebx & (1 << 3) != 0,
    "bmi2" => cpu.leaf7_ebx & (1 << 8) != 0,
    "fma" => cpu.avx() && cpu.leaf1_ecx & (1 << 12) != 0,
    "f16c" => cpu.avx() && cpu.leaf1_ecx & (1 << 29) != 0,
    "lzcnt" => cpu.extended1_ecx & (1 << 5) != 0,
    "movbe" => cpu.leaf1_ecx & (1 << 22) != 0,
}

/// The features this build was compiled to use that this CPU lacks.
fn missing() -> u32 {
    used_by_build() & !present_on_cpu()
}

/// Writes what `program` says when the CPU lacks the features of `missing` (non-empty) to
/// `out`, piece by piece (see the note above [`Cpuid`]).
fn write_refusal(out: &mut dyn std::io::Write, program: &str, missing: u32) {
    let _ = out.write_all(program.as_bytes());
    let _ = out.write_all(b": this CPU lacks");
    let mut rest = missing;
    for name in NAMES {
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
    let missing = missing();
    if missing != 0 {
        write_refusal(&mut std::io::stderr().lock(), program, missing);
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal of a CPU lacking `missing`, as text.
    fn refusal(missing: u32) -> String {
        let mut message = Vec::new();
        write_refusal(&mut message, "nexus", missing);
        String::from_utf8(message).unwrap()
    }

    #[test]
    fn the_refusal_names_what_the_build_uses_and_the_cpu_lacks() {
        let built = mask(&[true; 13]);
        assert_eq!(built, (1 << 13) - 1);
        assert_eq!(mask(&[false, true, true]), 0b110);
        let present = built & !(1 << 8) & !(1 << 12);
        let message = refusal(built & !present);
        assert!(message.starts_with("nexus: this CPU lacks bmi2 movbe, which "));
        assert!(message.ends_with("(README, \"CPU\").\n"), "{message}");
        assert!(refusal(1).starts_with("nexus: this CPU lacks sse3, which "));
    }

    /// The machine that runs the tests runs this build, so it lacks nothing the build uses;
    /// and where the workspace's config applies, the build uses all of x86-64-v3's features.
    #[test]
    fn the_build_machine_has_what_the_build_uses() {
        assert_eq!(missing(), 0, "{}", refusal(missing()));
        assert_eq!(NAMES.len(), 13);
        if cfg!(target_feature = "avx2") {
            assert_eq!(used_by_build(), (1 << 13) - 1);
        }
    }

    /// CPUID read here agrees with the standard library's detection where the standard
    /// library asks the CPU (features this build was not compiled to use): AVX-512F
    /// implies AVX2 and BMI2 on every CPU that has it.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn cpuid_agrees_with_the_standard_library() {
        if !cfg!(target_feature = "avx512f") && std::arch::is_x86_feature_detected!("avx512f") {
            let present = present_on_cpu();
            assert_eq!(present & (1 << 6), 1 << 6, "avx2");
            assert_eq!(present & (1 << 8), 1 << 8, "bmi2");
        }
    }
}
