//! Every kernel module compiles with the real NVRTC for Ampere and Hopper, through the
//! binary's own `ferrite compile-kernels` (no GPU needed: NVRTC is a plain library).
//! NVRTC comes from PyPI (`nvidia-cuda-nvrtc`, the CUDA 13.0 release the GPU machines'
//! driver matches), fetched once into `target/`. Built without `--features cuda`, the
//! command must refuse clearly instead.

mod common;

use std::process::Command;

#[cfg(feature = "cuda")]
const NVRTC: &str = "nvidia-cuda-nvrtc==13.0.88";

/// The folder holding libnvrtc.so.13, fetched and unpacked on first use.
#[cfg(feature = "cuda")]
fn nvrtc_lib_dir() -> std::path::PathBuf {
    let dir = common::repo_root().join("target").join("nvrtc-13.0.88");
    let lib = dir.join("nvidia/cu13/lib");
    if lib.join("libnvrtc.so.13").exists() {
        return lib;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
        ])
        .args(["--disable-pip-version-check", "-d"])
        .arg(&dir)
        .arg(NVRTC)
        .output()
        .expect("running pip");
    assert!(
        out.status.success(),
        "pip download {NVRTC} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("the wheel");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        ])
        .arg(&wheel)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        status.success() && lib.join("libnvrtc.so.13").exists(),
        "unpacking {wheel:?}"
    );
    lib
}

#[cfg(feature = "cuda")]
#[test]
fn every_kernel_module_compiles_for_ampere_and_hopper_and_is_cached() {
    use ferrite::device::kernels::sources::MODULES;
    let lib = nvrtc_lib_dir();
    let cache = std::env::temp_dir().join(format!("ferrite-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let run = || {
        let out = Command::new(common::binary())
            .args(["compile-kernels", "--arch", "sm_80", "--arch", "sm_90"])
            .env("LD_LIBRARY_PATH", &lib)
            .env("FERRITE_KERNEL_CACHE", &cache)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "compile-kernels failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let text = run();
    assert!(text.starts_with("NVRTC 13.0"), "{text}");
    for arch in ["sm_80", "sm_90"] {
        for m in MODULES {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{arch} {} ", m.name)))
                .unwrap_or_else(|| panic!("no line for {arch} {}:\n{text}", m.name));
            assert!(line.contains(" ok ("), "{line}");
        }
    }
    let cached = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(
        cached,
        2 * MODULES.len(),
        "one cached PTX per module and arch"
    );
    // A second run reads the cache and reports the same modules.
    assert_eq!(run(), text);
    let _ = std::fs::remove_dir_all(&cache);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn compile_kernels_needs_the_cuda_build() {
    let out = Command::new(common::binary())
        .arg("compile-kernels")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without the CUDA backend"), "{err}");
}
