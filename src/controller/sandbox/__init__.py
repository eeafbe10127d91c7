"""A local appliance for the demo and the tests: real processes and real protocols."""
