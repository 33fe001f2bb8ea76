//! `cargo run -p nunet-executor-wasm --example wat2wasm -- in.wat out.wasm`: compiles a WAT
//! text module to WASM bytes (used by `bench/deploy.sh` to make a WASI task).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        return Err("usage: wat2wasm <in.wat> <out.wasm>".into());
    };
    let bytes = wat::parse_file(input)?;
    std::fs::write(output, bytes)?;
    Ok(())
}
