"""The attention functions variants share: masks, float64 references and FLOP counts."""
