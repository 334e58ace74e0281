"""The FPGA path: an Amaranth mirror of the order state machine, generated from `order_kernel.spec`.

Entry points (the CLI calls these): `hdl.export.export_verilog`, `hdl.export.synthesize`,
`hdl.sim.run_equivalence`, `hdl.formal.run_bmc`. Importing `hdl` alone loads nothing heavy.
"""
