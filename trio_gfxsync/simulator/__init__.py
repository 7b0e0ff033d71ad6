"""Virtual GFX PCs: PokerGFX exports made up in the real files' exact shape (exports, pure), and
PCs writing them into a NAS folder, as an archive or live (virtual_pc). `trio-gfxsync simulate`
and `demo` run them; the benchmarks and tests build their trees with them."""
