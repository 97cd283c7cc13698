//! The `kernel-mcp` binary. Everything it does lives in the library's `app` module, so the code
//! the binary shares with the library (and its generic instantiations) is compiled once.

fn main() -> anyhow::Result<()> {
    kernel_mcp::app::main()
}
