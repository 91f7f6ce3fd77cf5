//! CUDA tonemap correctness check against the reference implementation, runnable on a GPU
//! machine without cargo: `tonemap_cuda_check [--require-gpu] [WIDTHxHEIGHT]`.
//! Exits 0 when every case is within 1 code, 1 on a mismatch, and 0 with "SKIP" when no GPU is
//! usable (2 with `--require-gpu`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let require = args.iter().any(|a| a == "--require-gpu");
    let (w, h) = args
        .iter()
        .find_map(|a| {
            a.split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        })
        .unwrap_or((640usize, 360usize));
    println!(
        "PTX build: {}",
        clusterplex_ffmpeg::tonemap::cuda::PTX_BUILD
    );
    if let Err(e) = clusterplex_ffmpeg::tonemap::cuda::probe() {
        println!("SKIP: {e}");
        std::process::exit(if require { 2 } else { 0 });
    }
    match clusterplex_ffmpeg::tonemap::cuda::check_against_reference(w, h) {
        Ok(rows) => {
            let mut ok = true;
            for r in &rows {
                let pass = r.max_diff <= 1;
                ok &= pass;
                println!(
                    "{:40} Y PSNR {:6.1} dB  max |d| {:3}  {}",
                    r.case,
                    r.y_psnr,
                    r.max_diff,
                    if pass { "ok" } else { "FAIL" }
                );
            }
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => {
            println!("{}: {e}", if require { "ERROR" } else { "SKIP" });
            std::process::exit(if require { 2 } else { 0 });
        }
    }
}
