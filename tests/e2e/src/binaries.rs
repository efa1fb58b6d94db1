//! Where the executables under test are: `MUSTER_BIN_DIR`, else the cargo target directory
//! this test binary runs from (`target/debug/deps/xxx` → `target/debug`).

use std::path::PathBuf;

/// The directory holding `control-plane` and `musterctl`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running test binary");
    let mut dir = exe.parent().expect("the test binary lives in a directory").to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    dir
}

/// The path of the executable `name`, panicking with build instructions when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: build the binaries first: cargo build --workspace --bins (tests/run.sh does this)",
        path.display()
    );
    path
}

/// The `control-plane` daemon.
pub fn control_plane() -> PathBuf {
    binary("control-plane")
}

/// The `musterctl` command line.
pub fn musterctl() -> PathBuf {
    binary("musterctl")
}
