//! A profiling harness: the array engine's throughput pass of `engine-bench` alone (no
//! B-tree baseline, no latency pass, no memory accounting), repeated on fresh prefilled
//! engines, each run checked against the generator's state hash. Small enough to run under
//! `perf record` or `valgrind --tool=callgrind`; it prints wall and thread-CPU ns per command
//! (docs/perf.md, issue 16 item 1, used it for the per-change figures).
//!
//! ```sh
//! cargo run --release -p perf --example engine_prof -- 1000 2000000 3          # Engine::step
//! cargo run --release -p perf --example engine_prof -- 1000000 2000000 3 many  # Engine::step_many
//! ```
//!
//! Arguments: book size, measured commands, runs, and `many` to step through `step_many`.

use engine::{Engine, Event};
use perf::latency::thread_cpu_ns;
use perf::workload::{Workload, WorkloadConfig};
use std::time::Instant;

fn main() {
    engine::cpu::exit_if_unsupported("engine_prof");
    let args: Vec<String> = std::env::args().collect();
    let number = |at: usize, default: usize| {
        args.get(at)
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let (size, ops, runs) = (number(1, 1000), number(2, 2_000_000), number(3, 3));
    let many = args.get(4).is_some_and(|s| s == "many");
    let workload = Workload::generate(&WorkloadConfig::new(size, ops, 42));
    let mut out: Vec<Event> = Vec::with_capacity(1 << 14);
    for _ in 0..runs {
        let mut engine: Engine = workload.prefilled_engine();
        let cpu_start = thread_cpu_ns();
        let started = Instant::now();
        if many {
            engine.step_many(&workload.stream, &mut out, |out| out.clear());
        } else {
            for command in &workload.stream {
                engine.step(command, &mut out);
                out.clear();
            }
        }
        let wall = started.elapsed().as_nanos() as f64 / ops as f64;
        let cpu = cpu_start
            .zip(thread_cpu_ns())
            .map_or("-".to_string(), |(start, end)| {
                format!("{:.1}", (end - start) as f64 / ops as f64)
            });
        assert_eq!(
            engine.state_hash(),
            workload.final_hash,
            "ended in the generator's state"
        );
        println!("book {size}, step_many {many}: wall {wall:.1} ns/op, cpu {cpu} ns/op");
    }
}
