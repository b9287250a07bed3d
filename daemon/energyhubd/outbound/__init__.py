"""outbound: diagnostics of the required flows, egress allowlist, support tunnel."""
