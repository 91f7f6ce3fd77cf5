//! Build script: compiles `cuda/tonemap.cu` (1) to PTX with clang, without the CUDA SDK, for
//! embedding, and (2) as host C++ into a small static library so tests can run the kernel on the
//! CPU. PTX is optional: without a CUDA-capable clang the build warns and the cuda tonemapper
//! reports "built without PTX" at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda = manifest.join("../cuda");
    for f in ["tonemap.cu", "tonemap_compat.h", "tonemap_host.cpp"] {
        println!("cargo:rerun-if-changed={}", cuda.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLUSTERPLEX_CUDA_CLANG");
    println!("cargo:rerun-if-env-changed=CLUSTERPLEX_CUDA_ARCH");
    println!("cargo::rustc-check-cfg=cfg(clusterplex_tonemap_ptx)");

    cc::Build::new()
        .cpp(true)
        .file(cuda.join("tonemap_host.cpp"))
        .include(&cuda)
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-ffp-contract=off")
        .warnings(false)
        .compile("clusterplex_tonemap_host");

    let ptx_path = out.join("tonemap.ptx");
    match build_ptx(&cuda.join("tonemap.cu"), &ptx_path) {
        Ok(desc) => {
            println!("cargo:rustc-cfg=clusterplex_tonemap_ptx");
            println!("cargo:rustc-env=CLUSTERPLEX_TONEMAP_PTX_BUILD={desc}");
        }
        Err(why) => {
            println!(
                "cargo:warning=tonemap: CUDA PTX not built ({why}); impl=cuda will report \"built without PTX\""
            );
            std::fs::write(&ptx_path, "").expect("write empty PTX placeholder");
            println!("cargo:rustc-env=CLUSTERPLEX_TONEMAP_PTX_BUILD=none");
        }
    }
}

/// Tries clang-19 (sm_90), then clang-14 / clang (sm_86), or `CLUSTERPLEX_CUDA_CLANG` with
/// `CLUSTERPLEX_CUDA_ARCH`.
fn build_ptx(src: &Path, dst: &Path) -> Result<String, String> {
    let mut candidates: Vec<(String, String)> = Vec::new();
    if let Ok(c) = std::env::var("CLUSTERPLEX_CUDA_CLANG") {
        let arch = std::env::var("CLUSTERPLEX_CUDA_ARCH").unwrap_or_else(|_| "sm_86".into());
        candidates.push((c, arch));
    }
    candidates.push(("clang-19".into(), "sm_90".into()));
    candidates.push(("clang-14".into(), "sm_86".into()));
    candidates.push(("clang".into(), "sm_86".into()));
    let mut errors = Vec::new();
    for (clang, arch) in candidates {
        let res = Command::new(&clang)
            .args([
                "-x",
                "cuda",
                "--cuda-device-only",
                "-nocudainc",
                "-nocudalib",
            ])
            .arg(format!("--cuda-gpu-arch={arch}"))
            .args(["-O3", "-S"])
            .arg(src)
            .arg("-o")
            .arg(dst)
            .output();
        match res {
            Ok(o) if o.status.success() => return Ok(format!("{clang} {arch}")),
            Ok(o) => errors.push(format!(
                "{clang}: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            )),
            Err(e) => errors.push(format!("{clang}: {e}")),
        }
    }
    Err(errors.join("; "))
}
