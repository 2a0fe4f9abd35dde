"""Pictures and tables of runs: `securefed report` (PNG + markdown + HTML) and TensorBoard events."""
