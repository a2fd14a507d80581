//! Per-node tract profile of a driving graph: where does an inference spend its time?
//!
//!     cargo run --release --example tract_profile -- MANIFEST [ITERS]
use std::time::{Duration, Instant};

use rtvla::model::{student::build_plan, Manifest};
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let manifest = Manifest::load(std::path::Path::new(args.get(1).expect("usage: tract_profile MANIFEST [ITERS]")))?;
    let iters: usize = args.get(2).map_or(5, |s| s.parse().unwrap_or(5));
    let plan = build_plan(&manifest, &manifest.verify_file()?)?;
    let inputs: TVec<TValue> = manifest
        .inputs
        .iter()
        .map(|t| Tensor::zero::<f32>(&t.shape).map(|t| t.into_tvalue()))
        .collect::<TractResult<_>>()?;
    let mut per_node = vec![Duration::ZERO; plan.model().nodes().len()];
    for _ in 0..iters {
        let mut state = TypedSimpleState::new(&plan)?;
        state.run_plan_with_eval(inputs.clone(), |session, op_state, node, input| {
            let t0 = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(session, op_state, node, input);
            per_node[node.id] += t0.elapsed();
            r
        })?;
    }
    let mut rows: Vec<(usize, Duration)> = per_node.iter().copied().enumerate().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let total: Duration = per_node.iter().sum();
    println!("total {:.2} ms per run", total.as_secs_f64() * 1e3 / iters as f64);
    for (id, d) in rows.iter().take(15) {
        let n = plan.model().node(*id);
        println!(
            "{:>9.3} ms  {:<40} {} {}",
            d.as_secs_f64() * 1e3 / iters as f64,
            n.name,
            n.op.name(),
            n.op.info().unwrap_or_default().join("; ")
        );
    }
    Ok(())
}
