"""Network plane providers: how the operator's traffic reaches the resource."""
