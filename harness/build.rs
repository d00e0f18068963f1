//! Builds the lwIP agent's C shim (src/driver/agent/lwip/shim.c) against
//! Debian's liblwip-dev, on Linux: the only C of the project, for what only
//! lwIP's headers can say (the layout of its interface and control blocks).

fn main() {
    println!("cargo:rerun-if-changed=src/driver/agent/lwip/shim.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let lwip = match pkg_config::Config::new()
        .atleast_version("2.1")
        .cargo_metadata(false)
        .probe("lwip")
    {
        Ok(lib) => lib,
        Err(e) => {
            println!(
                "cargo:warning=lwIP (liblwip-dev) not found: {e}; install it with `apt-get install liblwip-dev` (`just deps` does)"
            );
            std::process::exit(1);
        }
    };
    cc::Build::new()
        .file("src/driver/agent/lwip/shim.c")
        .includes(&lwip.include_paths)
        .warnings(true)
        .compile("teardown_lwip_shim");
    println!("cargo:rustc-env=TEARDOWN_LWIP_VERSION={}", lwip.version);
    // After the shim, which needs it.
    for dir in &lwip.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &lwip.libs {
        println!("cargo:rustc-link-lib={lib}");
    }
}
